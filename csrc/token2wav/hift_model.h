// The HiFT vocoder of the omni file's token2wav component (CosyVoice2 HiFTGenerator, spec §5.2.5):
// F0 predictor, NSF source merge, iSTFTNet decoder, with every hyper-parameter read from
// `minicpmo.token2wav.*` keys and every tensor `t2w.hift.*` shape-checked. The weights are held as
// float32 on the compute device whatever the file stores (see the constructor), together with a few
// constants derived once at load: Conv1d and ConvTranspose1d kernels re-laid as matrices, Snake 1/(alpha + eps),
// the DFT bases of the 16-point STFT / iSTFT. Shared read-only by all sessions of a model.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/compute_backend.h"
#include "core/conv1d_node.h"
#include "core/gguf_weights.h"

namespace minicpmo {

struct HiftHparams {
    int sample_rate = 0;           // 24000
    int n_mel = 0;                 // in_channels (80)
    int base_channels = 0;         // 512 (conv_pre output; halved by every upsampling stage)
    int nb_harmonics = 0;          // 8 (the source has nb_harmonics + 1 sines)
    float nsf_alpha = 0.1f;        // sine amplitude
    float nsf_sigma = 0.003f;      // noise amplitude of voiced samples
    float voiced_threshold = 10.0f;  // F0 (Hz) above which a sample is voiced
    std::vector<int> up_rates;     // [8, 5, 3]
    std::vector<int> up_kernels;   // [16, 11, 7]
    int n_fft = 0;                 // 16
    int hop = 0;                   // 4
    std::vector<int> res_kernels;                 // [3, 7, 11]
    std::vector<std::vector<int>> res_dilations;  // one row per kernel
    std::vector<int> src_kernels;                 // one per upsampling stage
    std::vector<std::vector<int>> src_dilations;
    float lrelu_slope = 0.1f;
    float post_lrelu_slope = 0.01f;
    float audio_limit = 0.99f;
    float magnitude_max = 100.0f;
    float snake_eps = 1e-9f;
    int f0_channels = 0;
    int f0_n_conv = 0;
    int stream_mel_cache_frames = 0;      // 8
    int stream_source_cache_samples = 0;  // 3840 (= mel cache frames x hop_samples)

    int n_stages() const { return static_cast<int>(up_rates.size()); }
    int n_harmonic_sines() const { return nb_harmonics + 1; }
    int n_bins() const { return n_fft / 2 + 1; }
    int n_spec() const { return n_fft + 2; }  // STFT channels: real parts then imaginary parts
    int channels(int stage) const { return base_channels >> (stage + 1); }  // after upsampling stage i
    int hop_samples() const;                 // output samples per mel frame (480)
    int src_down_rate(int stage) const;      // source_downs stride: product of the later stages' rates
};

// One weight-normed-then-folded Conv1d (or Linear, K = 1): the kernel as the matrix ne (C_in * K, C_out),
// column k * C_in + ci for input channel ci at tap k, + bias (C_out).
struct HiftConv {
    ggml_tensor * w = nullptr;
    ggml_tensor * b = nullptr;
    Conv1dShape taps;  // kernel size, dilation, stride
    int padding = 0, c_in = 0;
};

// Snake(x) = x + inv * sin(alpha x)^2 with inv = 1 / (alpha + eps); both (C, 1) F32.
struct HiftSnake {
    ggml_tensor * alpha = nullptr;
    ggml_tensor * inv = nullptr;
};

// One `Snake -> dilated conv -> Snake -> conv -> + residual` unit of a ResBlock.
struct HiftResUnit {
    HiftSnake a1, a2;
    HiftConv c1, c2;
};
using HiftResBlock = std::vector<HiftResUnit>;

struct HiftUpStage {
    ggml_tensor * wt = nullptr;  // ConvTranspose1d kernel as the matrix ne (C_in, K * C_out), row (oc, k)
    ggml_tensor * b = nullptr;   // (C_out)
    int rate = 1, kernel = 1, padding = 0, c_in = 0, c_out = 0;
    HiftConv src_down;
    HiftResBlock src_res;
    std::vector<HiftResBlock> res;  // one per resblock kernel, averaged
};

class HiftModel {
public:
    // Throws naming the file when the token2wav component is absent or inconsistent.
    // map_file: CPU weights are the file's mapped pages (false: read into memory; GgufWeights)
    HiftModel(const std::string & omni_path, ComputeDevice device, bool map_file = true);
    ~HiftModel();
    HiftModel(const HiftModel &) = delete;
    HiftModel & operator=(const HiftModel &) = delete;

    const HiftHparams & hparams() const { return hp_; }
    const std::string & path() const { return path_; }
    const std::vector<HiftConv> & f0_convs() const { return f0_convs_; }
    ggml_tensor * f0_proj_w() const { return f0_proj_w_; }  // ne (f0_channels, 1)
    ggml_tensor * f0_proj_b() const { return f0_proj_b_; }  // (1)
    ggml_tensor * source_w() const { return source_w_; }    // ne (nb_harmonics + 1, 1)
    ggml_tensor * source_b() const { return source_b_; }    // (1)
    const HiftConv & conv_pre() const { return conv_pre_; }
    const std::vector<HiftUpStage> & stages() const { return stages_; }
    const HiftConv & conv_post() const { return conv_post_; }
    // STFT basis ne (n_fft, n_fft + 2): column c < n_bins = w[n] cos(2 pi c n / N), else -w[n] sin(...)
    ggml_tensor * stft_basis() const { return stft_basis_; }
    // inverse real DFT x window / N, ne (n_fft + 2, n_fft): frame sample n from [re | im]
    ggml_tensor * istft_basis() const { return istft_basis_; }
    // squared window ne (n_fft, 1): overlap-added to the iSTFT normalisation envelope
    ggml_tensor * window_sq() const { return window_sq_; }
    // whether the file stores its kernels in F32 (the graph computes in F32 either way)
    bool weights_f32() const { return weights_f32_; }

private:
    class Builder;
    size_t n_taken_tensors() const;

    std::string path_;
    HiftHparams hp_;
    std::vector<HiftConv> f0_convs_;
    ggml_tensor *f0_proj_w_ = nullptr, *f0_proj_b_ = nullptr, *source_w_ = nullptr, *source_b_ = nullptr;
    HiftConv conv_pre_, conv_post_;
    std::vector<HiftUpStage> stages_;
    ggml_tensor *stft_basis_ = nullptr, *istft_basis_ = nullptr, *window_sq_ = nullptr;
    bool weights_f32_ = false;
    // every tensor above and its device memory
    ggml_context * const_ctx_ = nullptr;
    ggml_backend_buffer_t const_buf_ = nullptr;
};

}  // namespace minicpmo
