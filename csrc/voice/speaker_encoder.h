// The CAM++ speaker encoder (3D-Speaker / FunASR CAMPPlus, the release's campplus.onnx; spec §5.2.1):
// a 16 kHz reference recording -> Kaldi fbank minus its per-utterance mean -> 2-D convolutional head
// -> TDNN -> densely connected TDNN blocks with context-aware masking -> statistics pooling -> the
// speaker x-vector (192 values) Token2Wav's flow is conditioned on.
//
// Every hyper-parameter comes from `minicpmo.speaker_encoder.*` keys and every tensor `spk_enc.*` is
// shape-checked (written by convert/speaker_encoder_gguf.py with the BatchNorms that follow a conv
// folded into it). The weights are shared read-only by every caller; embed() builds its own compute
// backend per call, so several threads may embed at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/compute_backend.h"
#include "core/gguf_weights.h"
#include "voice/kaldi_fbank.h"

namespace minicpmo {

struct SpeakerEncoderHparams {
    KaldiFbankConfig fbank;
    int head_channels = 0;            // m (32)
    int head_kernel = 0;              // square 2-D kernels (3)
    std::vector<int> res_strides;     // frequency stride of each residual block of the head
    std::vector<int> res_shortcuts;   // 1 where the block has a 1x1 shortcut conv
    int head_out_stride = 0;          // frequency stride of the head's last conv
    int freq_bins = 0;                // frequency bins after the head (n_mel / 8)
    int tdnn_channels = 0, tdnn_kernel = 0, tdnn_stride = 0;
    std::vector<int> n_layers, kernels, dilations, transit_channels;  // one entry per dense block
    int growth = 0;                   // channels each dense layer adds (32)
    int bottleneck = 0;               // dense layer width (128)
    int mask_channels = 0;            // hidden width of the masking MLP (64)
    int seg_len = 0;                  // frames per pooling segment of the masking context (100)
    int embedding_length = 0;         // 192
    int n_blocks() const { return static_cast<int>(n_layers.size()); }
};

// A conv as ggml tensors: the kernel tap-major, ne (C_in, C_out, taps) (tap kh * KW + kw of a 2-D
// kernel, whose kh runs along frequency), so each tap is one contiguous matrix; bias (C_out).
struct SpkConv {
    ggml_tensor * w = nullptr;
    ggml_tensor * b = nullptr;
    int c_in = 0, c_out = 0, kernel = 1, stride = 1, dilation = 1;
};

// A BatchNorm in inference form: y = x * scale + shift per channel, both (C) F32.
struct SpkAffine {
    ggml_tensor * scale = nullptr;
    ggml_tensor * shift = nullptr;
};

struct SpkResBlock {
    SpkConv conv1, conv2, shortcut;  // shortcut.w null: identity
};

struct SpkDenseLayer {
    SpkAffine bn_in;
    SpkConv fc_in;  // 1x1, C -> bottleneck
    SpkConv local;  // dilated, bottleneck -> growth
    SpkConv ctx1;   // masking MLP, bottleneck -> mask_channels
    SpkConv ctx2;   // mask_channels -> growth
};

struct SpkBlock {
    std::vector<SpkDenseLayer> layers;
    SpkAffine transit_bn;
    SpkConv transit;
};

class SpeakerEncoder {
public:
    // Throws naming the file when the speaker_encoder component is absent or inconsistent.
    SpeakerEncoder(const std::string & omni_path, ComputeDevice device = nullptr, bool map_file = true);
    ~SpeakerEncoder();
    SpeakerEncoder(const SpeakerEncoder &) = delete;
    SpeakerEncoder & operator=(const SpeakerEncoder &) = delete;

    const SpeakerEncoderHparams & hparams() const { return hp_; }
    const std::string & path() const { return weights_->path(); }
    const KaldiFbank & fbank() const { return fbank_; }
    // Shortest and longest audio embed() takes, in samples at fbank().config().sample_rate: statistics
    // pooling needs two frames after the TDNN's stride; one pass holds every activation of the audio.
    size_t min_samples() const;
    size_t max_samples() const;
    // The fbank minus its per-utterance mean (the network's input): (n_frames, n_mel) row-major.
    std::vector<float> features(const float * pcm, size_t n) const;
    // The speaker x-vector (embedding_length values) of `n` samples of mono audio at the fbank's
    // sample rate (16 kHz). Throws invalid_argument for empty, too short, too long or non-finite audio.
    std::vector<float> embed(const float * pcm, size_t n, int n_threads) const;
    // The same from ready features (n_frames, n_mel) row-major, e.g. features()' output.
    std::vector<float> embed_features(const float * feats, int64_t n_frames, int n_threads) const;

    // the graph's view of the weights (speaker_encoder_graph.cpp)
    const SpkConv & head_in() const { return head_in_; }
    const std::vector<SpkResBlock> & head_blocks() const { return head_blocks_; }
    const SpkConv & head_out() const { return head_out_; }
    const SpkConv & tdnn() const { return tdnn_; }
    const std::vector<SpkBlock> & blocks() const { return blocks_; }
    const SpkAffine & out_bn() const { return out_bn_; }
    const SpkConv & dense() const { return dense_; }
    // frames after the TDNN for n_frames fbank frames
    int64_t tdnn_frames(int64_t n_frames) const;

private:
    ComputeDevice device_ = nullptr;
    std::unique_ptr<GgufWeights> weights_;
    SpeakerEncoderHparams hp_;
    KaldiFbank fbank_;
    SpkConv head_in_, head_out_, tdnn_, dense_;
    std::vector<SpkResBlock> head_blocks_;
    std::vector<SpkBlock> blocks_;
    SpkAffine out_bn_;
};

}  // namespace minicpmo
