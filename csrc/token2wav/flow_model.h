// The flow of Token2Wav (spec §5.2.2-5.2.4; speech contract §2) in the omni file: speech-token
// embedding, speaker affine, the upsampling Conformer encoder (25 Hz tokens -> 50 Hz frames) and the
// DiT velocity estimator of the conditional flow matching decoder. Keys `minicpmo.token2wav.*`,
// tensors `t2w.flow.*`. Shared read-only by all sessions of a model.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/compute_backend.h"
#include "core/gguf_weights.h"

namespace minicpmo {

struct FlowHparams {
    // interface
    int n_mel = 0;             // mel bins (80)
    int token_mel_ratio = 0;   // mel frames per speech token (= enc.up_stride)
    int vocab = 0;             // speech tokens (6561)
    int silence_token = 0;     // look-ahead filler of the voice prompt (4218)
    int chunk_tokens = 0;      // fresh tokens per streaming window (25)
    int lookahead = 0;         // look-ahead tokens per window (3)
    int n_timesteps = 0;       // Euler steps (10)
    int cache_tail_frames = 0; // streaming caches keep prompt + this many frames (100)
    // front
    int input_size = 0;        // token embedding width
    int spk_dim = 0;           // x-vector width (192)
    float spk_norm_eps = 1e-12f;
    // encoder
    int enc_dim = 0, enc_head = 0, enc_ff = 0, enc_block = 0, enc_up_block = 0;
    int up_stride = 0;
    bool key_bias = true;
    float embed_norm_eps = 1e-5f, block_norm_eps = 1e-12f, after_norm_eps = 1e-5f;
    int pos_max_len = 0;       // rows of the relative-position table per sign (5000)
    float lookahead_slope = 0.01f;
    // CFM
    float cfg_rate = 0.7f;
    float temperature = 1.0f;
    int noise_frames = 0;      // length of the fixed noise buffer (30000)
    // DiT
    int dit_dim = 0, dit_layer = 0, dit_head = 0, dit_head_dim = 0, dit_ff = 0;
    int t_freq_dim = 0;
    float t_scale = 1000.0f, t_max_period = 10000.0f;
    float dit_norm_eps = 1e-6f, qk_norm_eps = 1e-5f, conv_norm_eps = 1e-5f;
    int conv_kernel = 3;

    int dit_inner() const { return dit_head * dit_head_dim; }
};

struct FlowConformerLayer {
    ggml_tensor *attn_norm_w, *attn_norm_b;
    ggml_tensor *q_w, *q_b, *k_w, *k_b /* null without key_bias */, *v_w, *v_b, *o_w, *o_b;
    ggml_tensor *pos_w;                  // linear_pos (no bias)
    ggml_tensor *pos_bias_u, *pos_bias_v;  // ne (d_k, n_head)
    ggml_tensor *ffn_norm_w, *ffn_norm_b, *up_w, *up_b, *down_w, *down_b;
};

struct FlowDitBlock {
    ggml_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b;
    ggml_tensor *q_norm_w, *q_norm_b, *k_norm_w, *k_norm_b;
    ggml_tensor *o_w, *o_b;
    ggml_tensor *conv1_w, *conv1_b, *conv_norm_w, *conv_norm_b, *conv2_w, *conv2_b;  // kernels: tap_major_kernel
    ggml_tensor *up_w, *up_b, *down_w, *down_b;
    ggml_tensor *ada_w, *ada_b;          // 9 chunks: shift/scale/gate of attention, MLP, conv
};

struct FlowEncoderWeights {
    ggml_tensor *embed_w, *embed_b, *embed_norm_w, *embed_norm_b;
    ggml_tensor *la_conv1_w, *la_conv1_b, *la_conv2_w, *la_conv2_b;  // kernels: tap_major_kernel
    std::vector<FlowConformerLayer> blocks;      // token rate
    ggml_tensor *up_conv_w, *up_conv_b;                               // kernel: tap_major_kernel
    ggml_tensor *up_embed_w, *up_embed_b, *up_embed_norm_w, *up_embed_norm_b;
    std::vector<FlowConformerLayer> up_blocks;   // mel rate
    ggml_tensor *out_norm_w, *out_norm_b;
};

struct FlowDitWeights {
    ggml_tensor *t_mlp1_w, *t_mlp1_b, *t_mlp2_w, *t_mlp2_b;
    ggml_tensor *in_proj_w, *in_proj_b;
    std::vector<FlowDitBlock> blocks;
    ggml_tensor *final_ada_w, *final_ada_b, *final_proj_w, *final_proj_b;
};

// The flow's convolution kernels are matrices ne (C_in * K, C_out) whose column k * C_in + ci multiplies
// input channel ci at tap k (the file stores ne (K, C_in, C_out)): the order in which conv_taps
// (core/graph_ops) gathers K whole frames of a time-major input, a copy of runs of C_in values; the
// file's order would need im2col's element-by-element gather and a transposed input (8 % of a
// streamed flow window on AMD Zen 3).
class FlowModel {
public:
    // Throws naming the file when the token2wav component is absent or inconsistent.
    // map_file: CPU weights are the file's mapped pages (false: read into memory; GgufWeights)
    FlowModel(const std::string & omni_path, ComputeDevice device, bool map_file = true);

    const std::string & path() const { return w_->path(); }
    const FlowHparams & hparams() const { return hp_; }
    // the stored tensors (the BF16 products pack their matrices once, for every session)
    const GgufWeights & weights() const { return *w_; }
    ggml_tensor * tok_embd() const { return tok_embd_; }
    ggml_tensor * spk_proj_w() const { return spk_w_; }
    ggml_tensor * spk_proj_b() const { return spk_b_; }
    const FlowEncoderWeights & encoder() const { return enc_; }
    ggml_tensor * enc_proj_w() const { return proj_w_; }
    ggml_tensor * enc_proj_b() const { return proj_b_; }
    const FlowDitWeights & dit() const { return dit_; }
    // F32 weights: caches are kept in F32 too (an F32 model is compared with the reference at 1e-4)
    bool weights_f32() const { return weights_f32_; }

private:
    std::unique_ptr<GgufWeights> w_;
    FlowHparams hp_;
    ggml_tensor *tok_embd_, *spk_w_, *spk_b_, *proj_w_, *proj_b_;
    FlowEncoderWeights enc_;
    FlowDitWeights dit_;
    bool weights_f32_ = false;
    // the tap-major convolution kernels, in a weights buffer of the same kind as the file's tensors
    struct ContextFree {
        void operator()(ggml_context * c) const { ggml_free(c); }
    };
    struct BufferFree {
        void operator()(ggml_backend_buffer_t b) const { ggml_backend_buffer_free(b); }
    };
    std::unique_ptr<ggml_context, ContextFree> kernel_ctx_;
    std::unique_ptr<ggml_backend_buffer, BufferFree> kernel_buf_;

    void make_tap_major_kernels(ComputeDevice device);
};

}  // namespace minicpmo
