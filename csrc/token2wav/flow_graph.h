// ggml graph builders of the Token2Wav flow (spec §5.2.2-5.2.4): the speaker affine, the upsampling
// Conformer encoder with ESPnet relative-position attention (one chunk, optionally continuing
// cached keys/values and convolution contexts) and one DiT velocity evaluation of both CFG
// branches as a batch of 2. Pure functions of (weights, inputs); the caller owns graph and buffers.
// Layout: time-major, a frame is a row ([channels, frames, batch] in ggml order).
#pragma once

#include <vector>

#include "ggml.h"
#include "token2wav/flow_model.h"

namespace minicpmo {

// ---- host-side tables (float32, as the reference builds them) ----

// ESPnet relative-position table for `size` keys (spec A.1): 2*size-1 rows of `d` values for the
// relative positions size-1 ... 0 ... -(size-1), row-major.
std::vector<float> espnet_rel_pos_table(int size, int d);

// TimestepEmbedder input [cos(s t f_i) | sin(s t f_i)], f_i = exp(-ln(max_period) i / half).
std::vector<float> dit_timestep_features(float t, const FlowHparams & hp);

// t_k = 1 - cos(linspace(0, 1, n+1) * pi/2) in float32 (torch's linspace rule).
std::vector<float> cosine_t_span(int n_timesteps);

// ---- graphs ----

// xvec [spk_dim] -> Linear(x / max(||x||, eps)) [n_mel].
ggml_tensor * build_flow_speaker(ggml_context * ctx, const FlowModel & m, ggml_tensor * xvec);

struct FlowEncoderIn {
    ggml_tensor * ids = nullptr;       // I32 [T_in]: the chunk's tokens including the look-ahead ones
    bool pad_lookahead = false;        // last chunk / whole utterance: look-ahead zero frames appended
    ggml_tensor * conv_prev = nullptr; // [D, 2 + 2*up_stride]: last 2 pre-lookahead conv1 outputs | last up-sampled frames
    ggml_tensor * pe_tok = nullptr;    // [D, 2*(C_tok + T) - 1] relative-position table of the token-rate stack
    ggml_tensor * pe_mel = nullptr;    // [D, 2*(C_mel + s*T) - 1] of the mel-rate stack
    // cached keys / values per layer (token-rate blocks first, then the up blocks): [D, C] or null
    std::vector<ggml_tensor *> k_prev, v_prev;
};

struct FlowEncoderOut {
    ggml_tensor * h = nullptr;          // [D, T_mel] after the final LayerNorm
    ggml_tensor * mu = nullptr;         // [n_mel, T_mel] encoder_proj(h)
    ggml_tensor * conv_next = nullptr;  // [D, 2 + 2*up_stride] contexts for the next chunk
    std::vector<ggml_tensor *> k_new, v_new;  // [D, T] this chunk's keys / values per layer
};

// T = T_in - look-ahead (+ look-ahead when padded) token frames in, up_stride*T mel frames out.
FlowEncoderOut build_flow_encoder(ggml_context * ctx, const FlowModel & m, const FlowEncoderIn & in);

// The adaLN modulations of one timestep t: they depend on t only (not on the frames), so a stream
// computes them once per Euler step and feeds them to every window's DiT.
// t_feat [t_freq_dim] = dit_timestep_features(t) -> n_layer outputs [9H] (shift / scale / gate of
// attention, MLP, conv) followed by the final layer's [2H] (shift, scale).
std::vector<ggml_tensor *> build_dit_modulation(ggml_context * ctx, const FlowModel & m, ggml_tensor * t_feat);

// Width of the concatenated modulations of one timestep: 9H per layer + 2H.
int64_t dit_modulation_width(const FlowHparams & hp);

// Turns each scale of the concatenated modulations into 1 + scale, the factor build_dit multiplies
// by (once per timestep on the host, not three nodes a layer in every DiT pass; the same float sum).
void add_one_to_dit_scales(float * modulation, const FlowHparams & hp);

// Key slots of a DiT attention over n keys: n rounded up to a multiple of 8. ggml's CPU GEMM
// (tinyBLAS) takes an F32 product only when its summed length is a multiple of 8, else one dot
// product per output (about 4x slower); the probabilities x values product sums over the keys, so
// streaming caches get this many slots and uncached calls pad their keys (empty slots are masked).
int64_t dit_key_slots(int64_t n_keys);

struct DitIn {
    ggml_tensor * x_in = nullptr;       // [4*n_mel, T, B] per branch [x_t | mu | spk | cond]
    ggml_tensor * modulation = nullptr; // [dit_modulation_width]: build_dit_modulation's outputs, concatenated,
                                        // after add_one_to_dit_scales
    ggml_tensor * conv_prev = nullptr;  // [H, K-1, B, 2*n_layer] causal-conv left contexts (conv1 of layer l
                                        // at 2l, conv2 at 2l+1)
    // streaming attention cache (all null: keys = this call's frames only)
    std::vector<ggml_tensor *> k_cache, v_cache;  // per layer [inner, S, B]
    ggml_tensor * slots = nullptr;      // I32 [T]: cache slots that receive this call's keys / values
    // [S, T] 0 = attend, -inf = empty slot: F32, F16 with onednn_ops. Without a cache it may be null
    // (the T keys of this call), or wider than T: the keys are then padded with zero rows to S.
    ggml_tensor * mask = nullptr;
    // the graph as the oneDNN backend of BF16 and int8 sessions takes it: the attention as ggml's
    // FLASH_ATTN_EXT (its BF16 or F32 products around a vectorised softmax, core/onednn_attention) and the
    // MLP's GELU as ggml's GELU op (computed in F32 vectors) and Mish from ggml's tanh and softplus,
    // instead of two products and a softmax and compositions from vectorised F32 ops (ggml's own GELU
    // reads an F16 table; its CPU tanh and softplus are scalar libm calls)
    bool onednn_ops = false;
};

struct DitOut {
    ggml_tensor * velocity = nullptr;          // [n_mel, T, B]
    std::vector<ggml_tensor *> conv_next;      // 2*n_layer x [H, K-1, B]: last K-1 frames of each conv input
};

// Adds the cache writes (ggml_set_rows) to `graph` before the attention that reads them.
DitOut build_dit(ggml_context * ctx, ggml_cgraph * graph, const FlowModel & m, const DitIn & in);

}  // namespace minicpmo
