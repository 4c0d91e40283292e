// The two incremental layouts of the speech-token decoder (spec §5.1):
//
// Streaming simplex (one object per assistant turn): each LLM text chunk appends
// [c_1..c_n, (text_eos on the final chunk), audio_bos] right after the previous chunk's rows and
// samples speech tokens until EOS (never fed, never kept) or the per-chunk limit. Kept tokens are
// released in blocks of 25; the rest goes out when the final chunk ends with EOS, else via flush().
// The repetition penalty sees every token of the turn; only the stream's very first sample skips it
// and the warpers. The next chunk starts at start + L + kept, which counts a sample taken at the
// per-chunk limit that was never fed (a one-position gap, as the official code).
//
// Duplex (one object per session, per 1-s unit): [c..., audio_bos] (just [audio_bos] when the unit
// has no speakable tokens) then up to tokens_per_unit + 1 samples; the last of those is discarded.
// EOS is masked on every step except on a turn's first unit and on the unit that ends the turn.
// Penalty over this unit's samples only, no top-p/top-k, step 0 plain. Cache and positions persist
// within a turn and are cleared when the turn ends.
#pragma once

#include <cstdint>
#include <vector>

#include "sampling/tts_sampler.h"
#include "tts/tts_decoder.h"

namespace minicpmo {

// A released block of `block` speech tokens, or the final rest (last = true, possibly empty).
struct TtsReleased {
    std::vector<int32_t> tokens;
    bool last = false;
};

// What the decoder saw at each sampling step of the latest call, for tests (off unless asked for).
struct TtsStepLog {
    std::vector<std::vector<float>> logits;  // raw head logits, one vector per step
    std::vector<int32_t> sampled;            // every sample, EOS and discarded ones included
};

class TtsSimplexStream {
public:
    // Starts from an empty decoder cache (resets `decoder`, which must outlive the stream).
    // max_new_per_chunk 0 = sampling.max_new_tokens.
    TtsSimplexStream(TtsDecoder & decoder, const TtsSampling & sampling, int block = 25, int max_new_per_chunk = 0);

    // One LLM text chunk: n >= 1 token ids with their LLM final-norm hidden rows (n x n_embd_llm).
    // Returns the blocks released while this chunk's tokens were sampled (and the final rest when
    // `text_finished` and EOS ended the chunk). `draw` empty = greedy.
    std::vector<TtsReleased> feed_text(const int32_t * ids, const float * hidden, int n, bool text_finished,
                                       const UniformDraw & draw);
    // The LLM ended without a final chunk (or the final chunk hit the limit): the unreleased rest.
    std::vector<int32_t> flush();

    bool text_finished() const { return text_finished_; }
    const std::vector<int32_t> & generated() const { return generated_; }  // all kept tokens of the turn
    int next_position() const { return start_; }                           // where the next chunk starts

    void keep_steps(bool on) { keep_steps_ = on; }
    const TtsStepLog & last_steps() const { return steps_; }

private:
    TtsDecoder & decoder_;
    TtsSampling sampling_;
    int block_;
    int max_new_;
    int start_ = 0;
    std::vector<int32_t> generated_;
    std::vector<int32_t> buffer_;
    bool text_finished_ = false;
    bool broken_ = false;  // an error left the decoder cache out of step with the stream
    int cached_ = 0;       // decoder rows after our last call: anything else means someone else used it
    bool keep_steps_ = false;
    TtsStepLog steps_;
};

class TtsDuplexStream {
public:
    // Resets `decoder` (which must outlive the stream); a turn starts empty.
    TtsDuplexStream(TtsDecoder & decoder, const TtsSampling & sampling, int tokens_per_unit = 25);

    // One speaking unit: the n >= 0 tokens after its first (decision) token with their hidden rows
    // (ids/hidden may be null when n == 0). Returns up to tokens_per_unit speech tokens (fewer only
    // where EOS may be and was sampled; then *finished = true). `end_of_turn` (the unit holds
    // <|turn_eos|>) allows EOS and clears the cache afterwards.
    std::vector<int32_t> unit(const int32_t * ids, const float * hidden, int n, bool end_of_turn,
                              const UniformDraw & draw, bool * finished = nullptr);
    void reset_turn();

    int next_position() const { return start_; }
    void keep_steps(bool on) { keep_steps_ = on; }
    const TtsStepLog & last_steps() const { return steps_; }

private:
    TtsDecoder & decoder_;
    TtsSampling sampling_;
    int per_unit_;
    int start_ = 0;
    bool broken_ = false;
    int cached_ = 0;
    bool keep_steps_ = false;
    TtsStepLog steps_;
};

}  // namespace minicpmo
