// The audio component of the omni file: Whisper-medium encoder, audio projector and the log-mel
// filterbank, with every hyper-parameter (spec §3). Shared read-only by all sessions of a model.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "audio/log_mel.h"
#include "core/compute_backend.h"
#include "core/gguf_weights.h"
#include "core/pre_ln_block.h"

namespace minicpmo {

struct AudioHparams {
    int n_embd = 0;          // Whisper width (1024)
    int n_layer = 0;         // encoder layers (24)
    int n_head = 0;          // (16)
    int n_ff = 0;            // (4096)
    int n_mel = 0;           // mel bins (80)
    int n_positions = 0;     // learned position rows = encoder frames per 30 s (1500)
    float eps = 1e-5f;
    int sample_rate = 0;     // 16000
    int n_fft = 0;           // 400
    int hop_length = 0;      // 160
    int chunk_seconds = 0;   // batch feature extraction piece (30 s)
    float dynamic_range_db = 8.0f;
    float block_seconds = 1.0f;  // block-causal attention block of chat-mode audio
    int pool_step = 0;       // encoder frames averaged into one LLM token (5)
    int n_embd_out = 0;      // LLM width the projector maps to (4096)

    int n_freq() const { return n_fft / 2 + 1; }
    // encoder frames (after the stride-2 conv) per attention block: 1 s -> 50
    int block_frames() const;
};

class AudioModel {
public:
    // Throws naming the file when the audio component is absent or inconsistent.
    // map_file: CPU weights are the file's mapped pages (false: read into memory; GgufWeights)
    AudioModel(const std::string & omni_path, ComputeDevice device, bool map_file = true);

    const AudioHparams & hparams() const { return hp_; }
    // the stored tensors (the BF16 products pack their matrices once, for every session)
    const GgufWeights & weights() const { return *w_; }
    const std::vector<PreLnLayer> & layers() const { return layers_; }
    // (n_mel, n_freq) row-major, host memory: the front end runs on the CPU
    const std::vector<float> & mel_filters() const { return mel_filters_; }
    // The log-mel front end built from those filters and the model's settings (immutable).
    const MelFrameAnalyzer & mel_analyzer() const { return *mel_; }
    ggml_tensor * conv1_w() const { return conv1_w_; }  // (n_mel*3 -> n_embd) matrix, column = in*3 + tap
    ggml_tensor * conv1_b() const { return conv1_b_; }
    ggml_tensor * conv2_w() const { return conv2_w_; }
    ggml_tensor * conv2_b() const { return conv2_b_; }
    ggml_tensor * pos_embd() const { return pos_embd_; }
    ggml_tensor * post_ln_w() const { return post_ln_w_; }
    ggml_tensor * post_ln_b() const { return post_ln_b_; }
    ggml_tensor * proj1_w() const { return proj1_w_; }
    ggml_tensor * proj1_b() const { return proj1_b_; }
    ggml_tensor * proj2_w() const { return proj2_w_; }
    ggml_tensor * proj2_b() const { return proj2_b_; }
    bool weights_f32() const { return weights_f32_; }

private:
    std::unique_ptr<GgufWeights> w_;
    AudioHparams hp_;
    std::vector<PreLnLayer> layers_;
    std::vector<float> mel_filters_;
    std::unique_ptr<MelFrameAnalyzer> mel_;
    ggml_tensor *conv1_w_, *conv1_b_, *conv2_w_, *conv2_b_, *pos_embd_, *post_ln_w_, *post_ln_b_;
    ggml_tensor *proj1_w_, *proj1_b_, *proj2_w_, *proj2_b_;
    bool weights_f32_ = false;
};

}  // namespace minicpmo
