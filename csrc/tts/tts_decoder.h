// Runs the speech-token decoder for one session (spec §5.1 step semantics): condition rows in,
// logits of the last fed row out, with the backbone's key/value cache kept between calls. Rows
// are stored in cache slots in feed order; their RoPE positions are given explicitly, because
// the streaming layout can leave a gap in positions (a sample that was never fed).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/compute_backend.h"
#include "tts/tts_model.h"

namespace minicpmo {

class TtsDecoder {
public:
    // Where this component's graphs ran so far (device vs CPU nodes, scheduler splits).
    const GraphPlacement & placement() const { return runner_.placement(); }
    TtsDecoder(std::shared_ptr<const TtsModel> model, ComputeDevice device, int n_threads);
    ~TtsDecoder();

    const TtsModel & model() const { return *model_; }
    void set_n_threads(int n_threads) { backend_.set_n_threads(n_threads); }

    // Condition rows of n text tokens: emb_text[id] + L2normalize(projector(hidden)), n x n_embd.
    std::vector<float> condition_rows(const int32_t * text_ids, const float * llm_hidden, int n);
    // The same with the L2 normalisation forced on or off (duplex always normalises, spec §5.1).
    std::vector<float> condition_rows(const int32_t * text_ids, const float * llm_hidden, int n, bool normalize);
    // emb_text rows (for audio_bos / text_eos), n x n_embd.
    std::vector<float> text_rows(const int32_t * ids, int n);

    // Feeds n rows (n x n_embd floats) at RoPE positions `pos` after the cached rows; returns the
    // logits of the last one (n_vocab_audio floats).
    std::vector<float> forward_rows(const float * rows, const int32_t * pos, int n);
    // Feeds one speech token (its emb_code row) at RoPE position `pos`.
    std::vector<float> forward_code(int32_t code, int32_t pos);

    int n_cached() const { return n_cached_; }
    int capacity() const { return capacity_; }
    void reset() { n_cached_ = 0; }

private:
    std::vector<float> run_forward(const float * rows, const int32_t * code, const int32_t * pos, int n);
    std::vector<float> run_rows(const int32_t * ids, const float * hidden, int n, bool normalize);

    std::shared_ptr<const TtsModel> model_;
    ComputeBackend backend_;
    GraphRunner runner_;
    ggml_context * cache_ctx_ = nullptr;
    ggml_backend_buffer_t cache_buf_ = nullptr;
    std::vector<ggml_tensor *> cache_k_, cache_v_;
    int capacity_ = 0;
    int n_cached_ = 0;
};

}  // namespace minicpmo
