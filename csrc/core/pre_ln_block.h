// The pre-LayerNorm transformer encoder layer that SigLIP (vision) and Whisper (audio) share: its
// weights as the converter names them (`<prefix>ln1.weight`, `attn_q`, ..., `ffn_down`) and its
// graph, x + out(attend(ln1 x)) then x + down(act(up(ln2 x))). Each encoder brings its own attention
// (vision: batched slices; audio: block-causal groups over a streaming cache) and activation.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/gguf_weights.h"
#include "ggml.h"

namespace minicpmo {

struct PreLnLayer {
    ggml_tensor *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    ggml_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;  // k_b null where the model has none
    ggml_tensor *up_w, *up_b, *down_w, *down_b;
};

// Reads one layer of width `n_embd` and feed-forward width `n_ff`; `key_bias` false for Whisper,
// whose key projection has no bias. Shapes and storage types are checked by GgufWeights::get.
PreLnLayer load_pre_ln_layer(const GgufWeights & w, const std::string & prefix, int64_t n_embd, int64_t n_ff,
                             bool key_bias);

// q, k, v -> the attention output before the out projection.
using AttendFn = std::function<ggml_tensor *(ggml_tensor * q, ggml_tensor * k, ggml_tensor * v)>;
using ActivationFn = std::function<ggml_tensor *(ggml_tensor * x)>;

ggml_tensor * pre_ln_block(ggml_context * ctx, ggml_tensor * x, const PreLnLayer & L, float eps,
                           const AttendFn & attend, const ActivationFn & activation);

}  // namespace minicpmo
