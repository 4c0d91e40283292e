#include "audio/audio_graph.h"

#include <cmath>

#include "core/error.h"
#include "core/graph_ops.h"
#include "core/onednn_matmul.h"

namespace minicpmo {

namespace {

// Conv1d (kernel 3, padding 1) as im2col + one matrix product. x: [L, C_in] (time fastest);
// w: the (C_in*3 -> C_out) matrix whose columns are ordered (channel, tap) like im2col's rows.
// Returns [C_out, L_out].
ggml_tensor * conv3(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, int stride) {
    // im2col reads only the kernel's shape (taps, input channels) from its first operand
    ggml_tensor * kernel_shape = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 3, x->ne[1]);
    ggml_tensor * cols = ggml_im2col(ctx, kernel_shape, x, stride, 0, 1, 0, 1, 0, false, GGML_TYPE_F32);  // [C_in*3, L_out, 1]
    cols = ggml_reshape_2d(ctx, cols, cols->ne[0], cols->ne[1]);
    return linear(ctx, cols, w, b);
}

// q: [hd*H, Lq]; k: [hd*H, Lk]; v: the values, [hd*H, Lk], or (`v_transposed`) transposed, [Lk, hd*H]
// (k and v possibly cache views with their own row strides). Each query group reads only its first
// n_keys keys. Returns [hd*H, Lq].
// Per group, two batched matrix products around a softmax, both in ggml's tiled GEMM kernels:
// these take a contiguous right operand and a summed length that is a multiple of 16 (hence the
// contiguous queries, the key padding and the transposed values). ggml's fused CPU flash attention
// takes one query row at a time and was 2-4x slower here (issue 4 profile).
// `fused` (BF16 and int8 sessions): per group one FLASH_ATTN_EXT on views of the operands (values
// transposed in a cache are read through a permuted view), which the oneDNN backend computes (BF16 or
// F32) with the scores kept in cache (core/onednn_attention); the groups' masks are then F16, as that
// op takes them. The unfused products take the values transposed only.
ggml_tensor * attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, bool v_transposed,
                        const std::vector<AudioQueryGroup> & groups, int n_head, bool fused) {
    const int64_t width = q->ne[0], hd = width / n_head;
    const size_t es_k = ggml_element_size(k);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    if (!fused && !v_transposed) fail(Status::internal, "audio attention: the unfused products want transposed values");
    ggml_tensor * out = nullptr;
    for (const AudioQueryGroup & g : groups) {
        ggml_tensor * qg = ggml_view_2d(ctx, q, width, g.n_queries, q->nb[1], static_cast<size_t>(g.q_begin) * q->nb[1]);
        qg = ggml_permute(ctx, ggml_reshape_3d(ctx, qg, hd, n_head, g.n_queries), 0, 2, 1, 3);  // [hd, n_queries, H]
        ggml_tensor * kg = ggml_permute(ctx, ggml_view_3d(ctx, k, hd, n_head, g.n_keys, hd * es_k, k->nb[1], 0), 0, 2, 1, 3);
        ggml_tensor * vg = nullptr;  // [n_keys, hd, H] when transposed, else [hd, n_keys, H]
        if (v_transposed) {
            vg = ggml_view_3d(ctx, v, g.n_keys, hd, n_head, v->nb[1], hd * v->nb[1], 0);
        } else {
            vg = ggml_permute(ctx, ggml_view_3d(ctx, v, hd, n_head, g.n_keys, hd * ggml_element_size(v), v->nb[1], 0), 0, 2, 1, 3);
        }
        ggml_tensor * o = nullptr;
        if (fused) {
            o = ggml_flash_attn_ext(ctx, qg, kg, v_transposed ? ggml_permute(ctx, vg, 1, 0, 2, 3) : vg, g.mask, scale,
                                    0.0f, 0.0f);
            // ggml's own kernels read values with contiguous rows, which this view has not
            if (!onednn_takes_attention(o)) {
                fail(Status::internal, "audio attention: the oneDNN backend refuses the fused op");
            }
            o = ggml_reshape_3d(ctx, o, hd, n_head, g.n_queries);  // [hd, H, n_queries]
        } else {
            ggml_tensor * kq = ggml_mul_mat(ctx, kg, ggml_cont(ctx, qg));  // [n_keys, n_queries, H]
            kq = ggml_soft_max_ext_inplace(ctx, kq, g.mask, scale, 0.0f);
            o = ggml_mul_mat(ctx, vg, kq);                         // [hd, n_queries, H]
            o = ggml_cont(ctx, ggml_permute(ctx, o, 0, 2, 1, 3));  // [hd, H, n_queries]
        }
        out = out ? ggml_concat(ctx, out, o, 2) : o;
    }
    return ggml_reshape_2d(ctx, out, width, out->ne[2]);
}

}  // namespace

ggml_tensor * build_audio_stem(ggml_context * ctx, const AudioModel & m, ggml_tensor * mel, int drop_front,
                               int drop_back) {
    ggml_tensor * h = ggml_gelu_erf(ctx, conv3(ctx, mel, m.conv1_w(), m.conv1_b(), 1));      // [D, T]
    h = ggml_cont(ctx, ggml_transpose(ctx, h));                                                // [T, D]
    h = ggml_gelu_erf(ctx, conv3(ctx, h, m.conv2_w(), m.conv2_b(), 2));                      // [D, T']
    if (drop_front == 0 && drop_back == 0) return h;
    const int64_t keep = h->ne[1] - drop_front - drop_back;
    if (keep <= 0) fail(Status::invalid_argument, "audio chunk is shorter than its conv context frames");
    return ggml_view_2d(ctx, h, h->ne[0], keep, h->nb[1], static_cast<size_t>(drop_front) * h->nb[1]);
}

ggml_tensor * build_audio_encoder(ggml_context * ctx, ggml_cgraph * graph, const AudioModel & m, ggml_tensor * x,
                                  ggml_tensor * pos_ids, const std::vector<AudioQueryGroup> & groups,
                                  const std::vector<AudioLayerCache> & caches, bool fused_attention) {
    const AudioHparams & hp = m.hparams();
    x = ggml_add(ctx, x, ggml_get_rows(ctx, m.pos_embd(), pos_ids));
    const ActivationFn gelu = [ctx](ggml_tensor * h) { return ggml_gelu_erf(ctx, h); };
    for (size_t il = 0; il < m.layers().size(); ++il) {
        const AttendFn attend = [&](ggml_tensor * q, ggml_tensor * k, ggml_tensor * v) {
            if (caches.empty() && fused_attention) {
                return attention(ctx, q, k, v, false, groups, hp.n_head, true);  // keys and values as projected
            }
            ggml_tensor * vt = nullptr;
            if (caches.empty()) {
                // zero keys/values up to the aligned key count (masked: zero weight times zero value);
                // the values are transposed by the same copy
                const int pad = static_cast<int>(audio_padded_keys(k->ne[1]) - k->ne[1]);
                if (pad > 0) k = ggml_pad(ctx, k, 0, pad, 0, 0);
                vt = ggml_pad(ctx, ggml_transpose(ctx, v), pad, 0, 0, 0);
            } else {
                const AudioLayerCache & c = caches[il];
                // the copies run before the attention below: nodes execute in the order they were added
                ggml_build_forward_expand(graph, ggml_cpy(ctx, k, c.store_k));
                ggml_build_forward_expand(graph, ggml_cpy(ctx, ggml_transpose(ctx, v), c.store_vt));
                k = c.all_k;
                vt = c.all_vt;
            }
            return attention(ctx, q, k, vt, true, groups, hp.n_head, fused_attention);
        };
        x = pre_ln_block(ctx, x, m.layers()[il], hp.eps, attend, gelu);
    }
    return layer_norm(ctx, x, m.post_ln_w(), m.post_ln_b(), hp.eps);
}

ggml_tensor * build_audio_projector(ggml_context * ctx, const AudioModel & m, ggml_tensor * h) {
    const int64_t step = m.hparams().pool_step, n_tokens = h->ne[1] / step;
    if (n_tokens == 0) fail(Status::invalid_argument, "audio is too short for one audio token");
    ggml_tensor * e = linear(ctx, ggml_relu(ctx, linear(ctx, h, m.proj1_w(), m.proj1_b())), m.proj2_w(), m.proj2_b());
    const int64_t E = e->ne[0];
    // AvgPool1d(step, stride step) over time: [E, step, n] -> [step, E, n] -> sum over step -> / step
    e = ggml_view_3d(ctx, e, E, step, n_tokens, e->nb[1], e->nb[1] * step, 0);
    e = ggml_cont(ctx, ggml_permute(ctx, e, 1, 0, 2, 3));
    e = ggml_sum_rows(ctx, e);  // [1, E, n]
    return ggml_scale(ctx, ggml_reshape_2d(ctx, e, E, n_tokens), 1.0f / static_cast<float>(step));
}

}  // namespace minicpmo
