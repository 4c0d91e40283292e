#include "tts/tts_graph.h"

#include <cmath>

#include "core/q8_packed.h"
#include "tts/tts_attention.h"

namespace minicpmo {

namespace {

ggml_tensor * rms_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, float eps) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, eps), w);
}

}  // namespace

ggml_tensor * build_tts_conditions(ggml_context * ctx, const TtsModel & m, ggml_tensor * hidden, ggml_tensor * ids,
                                   bool normalize) {
    const TtsHparams & hp = m.hparams();
    ggml_tensor * p = ggml_add(ctx, ggml_mul_mat(ctx, m.proj1_w(), hidden), m.proj1_b());
    p = ggml_add(ctx, ggml_mul_mat(ctx, m.proj2_w(), ggml_relu(ctx, p)), m.proj2_b());
    if (normalize) p = ggml_l2_norm(ctx, p, hp.normalize_eps);  // x / max(||x||, eps)
    return ggml_add(ctx, ggml_get_rows(ctx, m.emb_text(), ids), p);
}

ggml_tensor * build_tts_forward(ggml_context * ctx, ggml_cgraph * graph, const TtsModel & m, ggml_tensor * x,
                                ggml_tensor * pos, ggml_tensor * mask, const std::vector<TtsAttentionCache> & caches) {
    const TtsHparams & hp = m.hparams();
    const int64_t n = x->ne[1], hd = hp.head_dim, H = hp.n_head, Hkv = hp.n_head_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (size_t il = 0; il < m.layers().size(); ++il) {
        const TtsLayer & L = m.layers()[il];
        const TtsAttentionCache & c = caches[il];
        const TtsPackedLayer * P = m.packed_layer(il);
        ggml_tensor *q, *k, *v;
        if (P) {  // one product for q, k and v over the normed rows, read through views
            ggml_tensor * qkv = q8_packed_normed_product_node(ctx, *P->qkv, x, L.attn_norm);
            const size_t es = sizeof(float);
            q = ggml_view_3d(ctx, qkv, hd, H, n, hd * es, qkv->nb[1], 0);
            k = ggml_view_3d(ctx, qkv, hd, Hkv, n, hd * es, qkv->nb[1], H * hd * es);
            v = ggml_view_2d(ctx, qkv, Hkv * hd, n, qkv->nb[1], (H + Hkv) * hd * es);
        } else {
            ggml_tensor * h = rms_norm(ctx, x, L.attn_norm, hp.rms_eps);
            q = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, L.q, h), hd, H, n);
            k = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, L.k, h), hd, Hkv, n);
            v = ggml_mul_mat(ctx, L.v, h);
        }
        ggml_tensor * o;
        if (m.cpu_attention()) {
            o = tts_cached_attention(ctx, q, k, v, pos, mask, c, hp.rope_theta);
        } else {
            // rotate-half RoPE over the whole head = ggml's NEOX mode
            q = ggml_rope_ext(ctx, q, pos, nullptr, static_cast<int>(hd), GGML_ROPE_TYPE_NEOX, 0, hp.rope_theta, 1.0f,
                              0.0f, 1.0f, 0.0f, 0.0f);
            k = ggml_rope_ext(ctx, k, pos, nullptr, static_cast<int>(hd), GGML_ROPE_TYPE_NEOX, 0, hp.rope_theta, 1.0f,
                              0.0f, 1.0f, 0.0f, 0.0f);
            // the new rows' slots of the cache (values transposed); the copies run before the attention
            // below: nodes execute in the order they were added
            const size_t first = static_cast<size_t>(c.n_cached);
            ggml_tensor * store_k = ggml_view_2d(ctx, c.k, c.k->ne[0], n, c.k->nb[1], first * c.k->nb[1]);
            ggml_tensor * store_v = ggml_view_2d(ctx, c.v, n, c.v->ne[1], c.v->nb[1], first * c.v->nb[0]);
            ggml_build_forward_expand(graph, ggml_cpy(ctx, ggml_reshape_2d(ctx, k, hd * Hkv, n), store_k));
            ggml_build_forward_expand(graph, ggml_cpy(ctx, ggml_transpose(ctx, v), store_v));
            // every filled slot: keys a row per slot, values [S, hd, Hkv]
            const int64_t S = c.n_cached + n;
            const size_t es = ggml_element_size(c.k);
            ggml_tensor * K = ggml_permute(ctx, ggml_view_3d(ctx, c.k, hd, Hkv, S, hd * es, c.k->nb[1], 0), 0, 2, 1, 3);
            ggml_tensor * V = ggml_view_3d(ctx, c.v, S, hd, Hkv, c.v->nb[1], hd * c.v->nb[1], 0);
            ggml_tensor * Q = ggml_permute(ctx, q, 0, 2, 1, 3);                                  // [hd, n, H]
            ggml_tensor * kq = ggml_mul_mat(ctx, K, Q);                                          // [S, n, H] (GQA broadcast)
            kq = ggml_soft_max_ext(ctx, kq, mask, scale, 0.0f);
            o = ggml_mul_mat(ctx, V, kq);                                                        // [hd, n, H]
            o = ggml_reshape_2d(ctx, ggml_cont(ctx, ggml_permute(ctx, o, 0, 2, 1, 3)), hd * H, n);
        }
        if (P) {  // the skip connections added by the products' nodes
            x = q8_packed_product_node(ctx, *P->o, o, x);
            x = q8_packed_product_node(ctx, *P->down, q8_packed_gated_node(ctx, *P->gate_up, x, L.ffn_norm), x);
        } else {
            x = ggml_add(ctx, x, ggml_mul_mat(ctx, L.o, o));
            ggml_tensor * h = rms_norm(ctx, x, L.ffn_norm, hp.rms_eps);
            ggml_tensor * g = ggml_silu(ctx, ggml_mul_mat(ctx, L.gate, h));
            x = ggml_add(ctx, x, ggml_mul_mat(ctx, L.down, ggml_mul(ctx, g, ggml_mul_mat(ctx, L.up, h))));
        }
    }
    ggml_tensor * last = ggml_view_2d(ctx, x, x->ne[0], 1, x->nb[1], static_cast<size_t>(n - 1) * x->nb[1]);
    if (m.packed_head()) return q8_packed_normed_product_node(ctx, *m.packed_head(), last, m.output_norm());
    return ggml_mul_mat(ctx, m.head_code(), rms_norm(ctx, last, m.output_norm(), hp.rms_eps));
}

}  // namespace minicpmo
