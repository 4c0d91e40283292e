#include "core/pre_ln_block.h"

#include "core/graph_ops.h"

namespace minicpmo {

PreLnLayer load_pre_ln_layer(const GgufWeights & w, const std::string & p, int64_t D, int64_t F, bool key_bias) {
    using Use = GgufWeights::Use;
    PreLnLayer L{};
    L.ln1_w = w.get(p + "ln1.weight", {D}, Use::vector);
    L.ln1_b = w.get(p + "ln1.bias", {D}, Use::vector);
    L.ln2_w = w.get(p + "ln2.weight", {D}, Use::vector);
    L.ln2_b = w.get(p + "ln2.bias", {D}, Use::vector);
    L.q_w = w.get(p + "attn_q.weight", {D, D}, Use::matrix);
    L.q_b = w.get(p + "attn_q.bias", {D}, Use::vector);
    L.k_w = w.get(p + "attn_k.weight", {D, D}, Use::matrix);
    L.k_b = key_bias ? w.get(p + "attn_k.bias", {D}, Use::vector) : nullptr;
    L.v_w = w.get(p + "attn_v.weight", {D, D}, Use::matrix);
    L.v_b = w.get(p + "attn_v.bias", {D}, Use::vector);
    L.o_w = w.get(p + "attn_out.weight", {D, D}, Use::matrix);
    L.o_b = w.get(p + "attn_out.bias", {D}, Use::vector);
    L.up_w = w.get(p + "ffn_up.weight", {D, F}, Use::matrix);
    L.up_b = w.get(p + "ffn_up.bias", {F}, Use::vector);
    L.down_w = w.get(p + "ffn_down.weight", {F, D}, Use::matrix);
    L.down_b = w.get(p + "ffn_down.bias", {D}, Use::vector);
    return L;
}

ggml_tensor * pre_ln_block(ggml_context * ctx, ggml_tensor * x, const PreLnLayer & L, float eps,
                           const AttendFn & attend, const ActivationFn & activation) {
    ggml_tensor * h = layer_norm(ctx, x, L.ln1_w, L.ln1_b, eps);
    ggml_tensor * q = linear(ctx, h, L.q_w, L.q_b);
    ggml_tensor * k = linear(ctx, h, L.k_w, L.k_b);
    ggml_tensor * v = linear(ctx, h, L.v_w, L.v_b);
    x = ggml_add(ctx, x, linear(ctx, attend(q, k, v), L.o_w, L.o_b));
    h = layer_norm(ctx, x, L.ln2_w, L.ln2_b, eps);
    h = activation(linear(ctx, h, L.up_w, L.up_b));
    return ggml_add(ctx, x, linear(ctx, h, L.down_w, L.down_b));
}

}  // namespace minicpmo
