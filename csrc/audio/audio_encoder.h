// Runs the audio graphs for one session: log-mel frames in, LLM embeddings out (spec §3.2-3.4).
// Batch mode encodes a piece of up to 30 s with block-causal (chat) or full attention; streaming
// mode keeps the encoder's per-layer keys/values across chunks and continues the positions.
#pragma once

#include <memory>
#include <vector>

#include "core/compute_backend.h"
#include "audio/audio_model.h"

namespace minicpmo {

enum class AudioAttention {
    block_causal,  // chat and reference audio: frame i sees frames of its own and earlier 1-s blocks
    full,          // system audio of simplex streaming: every frame sees every frame
};

// Mel frames of one piece: n_mel rows of n_frames values (time fastest), as the front end emits.
struct MelFrames {
    const float * data = nullptr;
    int n_frames = 0;
};

// What one encoder call produced: LLM embedding rows and, when asked, the encoder output.
struct AudioEncoding {
    std::vector<float> tokens;   // n_tokens x n_embd_out
    int n_tokens = 0;
    std::vector<float> hidden;   // T' x n_embd (post-LayerNorm encoder output), only when asked
    int n_hidden = 0;
};

class AudioEncoder {
public:
    // Where this component's graphs ran so far (device vs CPU nodes, scheduler splits).
    const GraphPlacement & placement() const { return runner_.placement(); }
    AudioEncoder(std::shared_ptr<const AudioModel> model, ComputeDevice device, int n_threads,
                 ComputeType compute = ComputeType::f32);
    ~AudioEncoder();

    const AudioModel & model() const { return *model_; }
    void set_n_threads(int n_threads) { backend_.set_n_threads(n_threads); }

    // One piece (at most n_positions encoder frames) with positions from 0. `key_limit` > 0 also
    // masks keys j >= key_limit (the official batch compares encoder-frame keys with the item's
    // mel-frame count there, see audio_features.h). Tokens: every full pool window.
    AudioEncoding encode(const MelFrames & mel, AudioAttention attention, bool want_hidden = false,
                         int key_limit = 0);

    // One streaming chunk: frames attend to the cached frames and themselves; positions continue
    // after the cache, which is cleared first when it would overflow the position table.
    // `context_front/back` mel frames on each side are conv context only (duplex: 2).
    AudioEncoding encode_streaming(const MelFrames & mel, int context_front, int context_back,
                                   bool want_hidden = false);
    void reset_streaming() { cache_len_ = 0; }
    int streaming_cache_len() const { return cache_len_; }

private:
    AudioEncoding run(const MelFrames & mel, AudioAttention attention, int context_front, int context_back,
                      bool streaming, bool want_hidden, int key_limit);
    void ensure_cache();

    std::shared_ptr<const AudioModel> model_;
    ComputeBackend backend_;
    GraphRunner runner_;
    // streaming key/value cache: one K and one V tensor [n_embd, n_positions] per layer
    ggml_context * cache_ctx_ = nullptr;
    ggml_backend_buffer_t cache_buf_ = nullptr;
    std::vector<ggml_tensor *> cache_k_, cache_v_;
    int cache_len_ = 0;
};

// Encoder frames after the stride-2 conv for `mel_frames` input frames.
inline int audio_encoder_frames(int mel_frames) { return mel_frames <= 0 ? 0 : (mel_frames - 1) / 2 + 1; }

}  // namespace minicpmo
