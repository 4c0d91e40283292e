// Runs the Token2Wav flow for one session: speech tokens -> 50 Hz log-mel (spec §5.2.2-5.2.4).
// Whole-utterance mode (CausalMaskedDiffWithXvec.inference: prompt + tokens through the encoder,
// CFM over prompt + new frames, prompt frames dropped) and the streaming mode of Token2wav
// (set_stream_cache, then windows of chunk + look-ahead tokens through the encoder's and the
// estimator's caches, trimmed to prompt + tail frames exactly as the reference does).
//
// Layout: every mel / velocity / encoder array is frame-major (one row of n_mel or D values per
// frame). Randomness: the CFM noise buffer is drawn once from a seeded generator or injected.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "core/compute_backend.h"
#include "token2wav/flow_model.h"
#include "token2wav/voice_bank.h"

struct ggml_context;
struct ggml_tensor;
struct ggml_backend_buffer;

namespace minicpmo {

// A voice prompt owned by the caller for the duration of a call.
struct FlowPrompt {
    const int32_t * tokens = nullptr;  // n_tokens speech tokens
    int n_tokens = 0;
    const float * mel = nullptr;       // (token_mel_ratio * n_tokens) frames x n_mel, frame-major
    const float * xvec = nullptr;      // spk_dim values (CAM++ x-vector, not normalized)
};

// A stored voice as a prompt; throws bad_model when its widths do not fit the flow.
FlowPrompt flow_prompt(const VoicePrompt & voice, const FlowHparams & hp);

// A copy of the streaming state right after stream_start (the primed prompt caches): restoring it
// starts a new stream of the same voice without re-running the prompt through the encoder and the
// CFM (the official duplex code keeps such a base copy per voice and restores it at each turn end).
// Only the live estimator cache rows are copied, so its size is ~ the prompt's caches.
struct FlowStreamSnapshot {
    const FlowModel * model = nullptr;  // the snapshot only fits the decoder of this model
    uint64_t noise_version = 0;         // the prompt pass used this noise buffer (see noise_version())
    int n_steps = 0, prompt_frames = 0, capacity = 0;
    std::vector<float> spk;
    std::vector<std::vector<float>> enc_k, enc_v;
    int enc_tok_len = 0, enc_mel_len = 0;
    std::vector<float> enc_conv;
    std::vector<std::vector<float>> est_conv;
    std::vector<int32_t> est_order, free_slots;
    // per (step, layer) the live key / value rows: for each branch, the rows of est_order's slots
    // in ascending slot order (runs of consecutive slots copied at once)
    std::vector<std::vector<uint8_t>> cache_k, cache_v;
};

struct FlowEncoding {
    int n_frames = 0;          // mel frames (token_mel_ratio x tokens)
    std::vector<float> h;      // n_frames x enc_dim, after the encoder's final LayerNorm
    std::vector<float> mu;     // n_frames x n_mel, encoder_proj(h)
};

class FlowDecoder {
public:
    // Where this component's graphs ran so far (device vs CPU nodes, scheduler splits).
    const GraphPlacement & placement() const { return runner_.placement(); }
    FlowDecoder(std::shared_ptr<const FlowModel> model, ComputeDevice device, int n_threads, uint64_t seed = 0,
                ComputeType compute = ComputeType::f32);
    ~FlowDecoder();
    FlowDecoder(const FlowDecoder &) = delete;
    FlowDecoder & operator=(const FlowDecoder &) = delete;

    const FlowModel & model() const { return *model_; }
    void set_n_threads(int n_threads) { backend_.set_n_threads(n_threads); }

    // Replaces the CFM noise buffer (n_frames x n_mel, frame-major); the reference's is
    // randn(1, n_mel, noise_frames) drawn at construction.
    void set_noise(const float * noise, int n_frames);
    // Redraws the noise buffer (noise_frames frames) from a std::mt19937_64 seeded with `seed`.
    void reseed_noise(uint64_t seed);
    int noise_frames() const { return noise_frames_; }
    // Changes whenever the noise buffer is replaced: primed stream caches depend on its first frames.
    uint64_t noise_version() const { return noise_version_; }

    // spk = Linear(xvec / max(||xvec||, eps)): n_mel values.
    std::vector<float> speaker(const float * xvec);
    // Whole-utterance encoder (look-ahead zero-padded at the end) over n tokens.
    FlowEncoding encode(const int32_t * tokens, int n);
    // One DiT evaluation of both CFG branches (x, mu, cond: n_frames x n_mel; spk: n_mel), the
    // unconditional one with mu, spk and cond zeroed: 2 x n_frames x n_mel (conditional first).
    std::vector<float> velocity(const float * x, const float * mu, const float * spk, const float * cond, int n_frames,
                                float t);
    // Euler CFM with classifier-free guidance from noise frames [noise_offset, noise_offset + n);
    // no caches. n_timesteps 0 = the model's.
    std::vector<float> cfm(const float * mu, const float * spk, const float * cond, int n_frames, int noise_offset = 0,
                           int n_timesteps = 0);
    // flow.inference: mel of the n new tokens (token_mel_ratio * n frames), conditioned on the prompt.
    std::vector<float> inference(const int32_t * tokens, int n, const FlowPrompt & prompt, int n_timesteps = 0);

    // Token2wav.set_stream_cache: primes the caches with prompt ‖ silence look-ahead tokens.
    void stream_start(const FlowPrompt & prompt, int n_timesteps = 0);
    // One streaming window (chunk + look-ahead tokens; the final one may be shorter): mel of its
    // fresh tokens (token_mel_ratio * (n - look-ahead) frames; the final window: all n tokens).
    std::vector<float> stream_chunk(const int32_t * tokens, int n, bool last_chunk);
    bool stream_ready() const { return stream_ready_; }
    // Copies the streaming state (requires a started stream) / puts a copy back: the next
    // stream_chunk then continues exactly as it would have from the copied state.
    FlowStreamSnapshot stream_snapshot() const;
    void stream_restore(const FlowStreamSnapshot & snap);
    void stream_reset() { stream_ready_ = false; }
    // Current estimator cache length (= the next window's noise offset) and conformer cache lengths.
    int stream_estimator_frames() const { return static_cast<int>(est_order_.size()); }
    int stream_encoder_token_frames() const { return enc_tok_len_; }

private:
    struct EncoderRun;
    EncoderRun run_encoder(const int32_t * ids, int n, bool pad_lookahead, bool use_cache);
    // One Euler step's DiT: x_in 2 x T x 4*n_mel (both branches), returns 2 x T x n_mel. With
    // `step` >= 0 the step's estimator caches are read and written and conv contexts kept.
    std::vector<float> run_dit(const std::vector<float> & x_in, int n_frames, float t, int step,
                               const std::vector<int32_t> & slots);
    std::vector<float> run_cfm(const float * mu, const float * spk, const float * cond, int n_frames, int noise_offset,
                               int n_timesteps, bool streaming, const std::vector<int32_t> & slots);
    std::vector<float> run_speaker(const float * xvec);
    // The DiT's adaLN modulations at timestep t (build_dit_modulation), computed once per t value
    // and kept: every window of a stream runs the same n_timesteps values of t.
    const std::vector<float> & dit_modulation(float t);
    void check_tokens(const int32_t * tokens, int n, const char * what) const;
    void check_prompt(const FlowPrompt & prompt) const;
    void ensure_noise();
    void alloc_estimator_cache(int n_steps, int capacity);
    void free_estimator_cache();
    void trim_caches();
    // runs of consecutive slots among `slots` (sorted copy): (first slot, count)
    static std::vector<std::pair<int, int>> slot_runs(std::vector<int32_t> slots);

    std::shared_ptr<const FlowModel> model_;
    ComputeBackend backend_;
    GraphRunner runner_;
    uint64_t seed_;
    std::vector<float> noise_;  // noise_frames_ x n_mel
    std::map<uint32_t, std::vector<float>> modulations_;  // by the bits of t
    int noise_frames_ = 0;
    uint64_t noise_version_ = 0;

    // ---- streaming state ----
    bool stream_ready_ = false;
    int n_steps_ = 0;
    int prompt_frames_ = 0;
    std::vector<float> spk_;                     // n_mel
    // conformer: per layer cached keys / values (frame-major, token-rate layers first)
    std::vector<std::vector<float>> enc_k_, enc_v_;
    int enc_tok_len_ = 0, enc_mel_len_ = 0;
    std::vector<float> enc_conv_;                // (2 + 2*up_stride) x D conv contexts
    // estimator: per Euler step causal-conv contexts, and key / value caches in slots of a
    // backend buffer. est_order_ lists the live slots in the reference's cache order (newest
    // block first); attention does not depend on that order, only trimming does.
    std::vector<std::vector<float>> est_conv_;   // per step: [2*n_layer][2][K-1][H]
    ggml_context * cache_ctx_ = nullptr;
    ggml_backend_buffer * cache_buf_ = nullptr;
    std::vector<std::vector<ggml_tensor *>> cache_k_, cache_v_;  // [step][layer] -> [inner, S, 2]
    int cache_capacity_ = 0;
    std::vector<int32_t> est_order_;
    std::vector<int32_t> free_slots_;
};

}  // namespace minicpmo
