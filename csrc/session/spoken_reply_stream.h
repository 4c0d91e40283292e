// A spoken reply streamed as it is generated (spec §6.1 pipeline, simplex): the LLM reply is
// decoded step by step; every 10 spoken tokens (with their final-norm hidden states) go to the
// speech-token decoder's streaming layout (§5.1), whose 25-token blocks go to streaming Token2Wav
// (§5.2.4); each 1-s waveform is handed out as soon as it exists, next to the text pieces.
//
// The spoken text is the reply after the prompt's <|tts_bos|>, up to <|tts_eos|> (which ends the
// reply, as in the official streaming_generate), <|im_end|>, <unk> or the token limit.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sampling/tts_sampler.h"
#include "session/session.h"

namespace minicpmo {

class OmniSession;
class TtsSimplexStream;

struct SpokenPiece {
    std::string text;          // reply text decoded by this step (may be empty)
    // 24 kHz waveform chunks finished by this step, in order: 1 s each (25 speech tokens), the
    // last one of the reply holding the rest
    std::vector<std::vector<float>> audio;
};

class SpokenReplyStream {
public:
    // The LLM text chunk the official pipeline hands to the speech decoder.
    static constexpr int kTextChunkTokens = 10;

    // Call after the session prefilled a prompt ending with <|tts_bos|>; starts the LLM generation
    // (hidden states captured) and the speech streams. `draw` empty = greedy speech tokens.
    // `max_speech_tokens_per_chunk` 0 = the model's streaming limit.
    SpokenReplyStream(OmniSession & session, const GenerateParams & params, const std::string & voice,
                      const UniformDraw & draw, int max_speech_tokens_per_chunk = 0);
    ~SpokenReplyStream();
    SpokenReplyStream(const SpokenReplyStream &) = delete;
    SpokenReplyStream & operator=(const SpokenReplyStream &) = delete;

    // One LLM step and whatever speech it completes. Returns false once the reply and its audio are
    // complete (`out` then holds the last text and samples, possibly empty).
    bool next(SpokenPiece & out);
    // Stops the reply and its speech at once (an interrupt): next() returns false from now on.
    void cancel();

    const std::vector<int32_t> & speech_tokens() const { return speech_tokens_; }
    int sample_rate() const;

private:
    void feed_chunk(bool text_finished, SpokenPiece & out);
    void push_speech(const std::vector<int32_t> & tokens, SpokenPiece & out);
    void finish(SpokenPiece & out);

    OmniSession & session_;
    UniformDraw draw_;
    std::unique_ptr<TtsSimplexStream> tts_;
    std::vector<int32_t> chunk_ids_;   // spoken tokens not yet given to the speech decoder
    std::vector<float> chunk_hidden_;  // their hidden rows
    std::vector<int32_t> speech_tokens_;
    size_t n_seen_ = 0;                // reply tokens already looked at
    bool text_done_ = false;           // no more spoken text (terminator, limit or cancel)
    bool done_ = false;
    int tts_eos_ = -1, unk_ = -1;
};

}  // namespace minicpmo
