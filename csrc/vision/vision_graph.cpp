#include "vision/vision_graph.h"

#include <cmath>

#include "core/graph_ops.h"

namespace minicpmo {

namespace {

// How an attention runs:
// * f32_products: scores and weighted sum as two matrix products and a softmax in F32 (F32 models,
//   compared with the float reference at 1e-4);
// * flash_f16: ggml's fused flash attention with F16 keys/values, as upstream's clip runs it (about
//   1e-3 relative, below the rounding of F16 or quantized weights, and faster on ggml's CPU kernels);
// * flash_f32_operands: the fused op on the F32 operands, for BF16 and int8 sessions: the oneDNN backend
//   claims it (core/onednn_attention: BF16 or F32 products, the scores never leave the cache).
enum class AttentionPath { f32_products, flash_f16, flash_f32_operands };

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), every step in F32.
ggml_tensor * gelu_tanh_exact(ggml_context * ctx, ggml_tensor * x) {
    const float c = std::sqrt(2.0f / static_cast<float>(M_PI));
    ggml_tensor * inner = ggml_mul(ctx, x, ggml_scale_bias(ctx, ggml_sqr(ctx, x), 0.044715f * c, c));
    return ggml_mul(ctx, x, ggml_scale_bias(ctx, ggml_tanh(ctx, inner), 0.5f, 0.5f));
}

// Multi-head attention of q [hd*H, Lq, B] over k, v [hd*H, Lk, B]; returns [hd*H, Lq, B].
ggml_tensor * attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, int n_head,
                        AttentionPath path) {
    const int64_t width = q->ne[0], hd = width / n_head, Lq = q->ne[1], Lk = k->ne[1], B = k->ne[2];
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    q = ggml_permute(ctx, ggml_reshape_4d(ctx, q, hd, n_head, Lq, q->ne[2]), 0, 2, 1, 3);  // [hd, Lq, H, B]
    k = ggml_permute(ctx, ggml_reshape_4d(ctx, k, hd, n_head, Lk, B), 0, 2, 1, 3);         // [hd, Lk, H, B]
    if (path != AttentionPath::f32_products) {
        v = ggml_permute(ctx, ggml_reshape_4d(ctx, v, hd, n_head, Lk, B), 0, 2, 1, 3);
        if (path == AttentionPath::flash_f16) {
            k = ggml_cast(ctx, k, GGML_TYPE_F16);
            v = ggml_cast(ctx, v, GGML_TYPE_F16);
        }
        ggml_tensor * o = ggml_flash_attn_ext(ctx, q, k, v, nullptr, scale, 0.0f, 0.0f);
        return ggml_reshape_3d(ctx, o, width, Lq, B);  // o: [hd, H, Lq, B]
    }
    v = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, v, hd, n_head, Lk, B), 1, 2, 0, 3));  // [Lk, hd, H, B]
    ggml_tensor * kq = ggml_mul_mat(ctx, k, q);  // [Lk, Lq, H, B]
    kq = ggml_soft_max_ext(ctx, kq, nullptr, scale, 0.0f);
    ggml_tensor * o = ggml_mul_mat(ctx, v, kq);  // [hd, Lq, H, B]
    o = ggml_cont(ctx, ggml_permute(ctx, o, 0, 2, 1, 3));  // [hd, H, Lq, B]
    return ggml_reshape_3d(ctx, o, width, Lq, B);
}

}  // namespace

ggml_tensor * build_siglip(ggml_context * ctx, const VisionModel & m, ggml_tensor * patches, ggml_tensor * pos_ids,
                           bool exact, bool onednn_attention) {
    const VisionHparams & hp = m.hparams();
    ggml_tensor * x = linear(ctx, patches, m.patch_w(), m.patch_b());  // [D, L, B]
    x = ggml_add(ctx, x, ggml_get_rows(ctx, m.pos_embd(), pos_ids));   // position rows broadcast over B
    const AttendFn attend = [&](ggml_tensor * q, ggml_tensor * k, ggml_tensor * v) {
        const AttentionPath path = onednn_attention ? AttentionPath::flash_f32_operands
                                   : exact       ? AttentionPath::f32_products
                                                 : AttentionPath::flash_f16;
        return attention(ctx, q, k, v, hp.n_head, path);
    };
    const ActivationFn gelu = [&](ggml_tensor * h) { return exact ? gelu_tanh_exact(ctx, h) : ggml_gelu(ctx, h); };
    for (const PreLnLayer & L : m.layers()) x = pre_ln_block(ctx, x, L, hp.eps, attend, gelu);
    return layer_norm(ctx, x, m.post_ln_w(), m.post_ln_b(), hp.eps);
}

ggml_tensor * build_resampler(ggml_context * ctx, const VisionModel & m, ggml_tensor * x, ggml_tensor * key_pos) {
    const VisionHparams & hp = m.hparams();
    const ResamplerWeights & r = m.resampler();
    const int64_t B = x->ne[2];
    ggml_tensor * kv = layer_norm(ctx, ggml_mul_mat(ctx, r.kv_proj, x), r.ln_kv_w, r.ln_kv_b, hp.eps_resampler);
    ggml_tensor * query = r.query->type == GGML_TYPE_F32 ? r.query : ggml_cast(ctx, r.query, GGML_TYPE_F32);
    ggml_tensor * q = linear(ctx, layer_norm(ctx, query, r.ln_q_w, r.ln_q_b, hp.eps_resampler), r.q_w, r.q_b);
    // the queries are the same for every slice; mul_mat broadcasts only its second operand
    q = ggml_repeat_4d(ctx, q, q->ne[0], q->ne[1], B, 1);                                // [E, Q, B]
    ggml_tensor * k = linear(ctx, ggml_add(ctx, kv, key_pos), r.k_w, r.k_b);            // [E, L, B]
    ggml_tensor * v = linear(ctx, kv, r.v_w, r.v_b);
    const AttentionPath path = m.weights_f32() ? AttentionPath::f32_products : AttentionPath::flash_f16;
    ggml_tensor * o = linear(ctx, attention(ctx, q, k, v, hp.n_head_resampler, path), r.o_w, r.o_b);
    o = layer_norm(ctx, o, r.ln_post_w, r.ln_post_b, hp.eps_resampler);
    return ggml_mul_mat(ctx, r.proj, o);  // [E, Q, B]
}

}  // namespace minicpmo
