#include "token2wav/flow_graph.h"

#include <cfloat>
#include <cmath>

#include "core/error.h"
#include "core/graph_ops.h"
#include "core/onednn_matmul.h"

namespace minicpmo {

// ------------------------------------------------------------------------------------------------
// host tables: float32 arithmetic in the reference's order; transcendental functions evaluated in
// double and rounded once (within an ulp of torch's float32 kernels)
// ------------------------------------------------------------------------------------------------

std::vector<float> espnet_rel_pos_table(int size, int d) {
    const int n_rows = 2 * size - 1;
    std::vector<float> pe(static_cast<size_t>(n_rows) * d);
    const float c = static_cast<float>(-(std::log(10000.0) / d));
    std::vector<float> div(d / 2);
    for (int i = 0; i < d / 2; ++i) div[i] = static_cast<float>(std::exp(static_cast<double>(static_cast<float>(2 * i) * c)));
    for (int r = 0; r < n_rows; ++r) {
        // rows size-1 .. 0 hold positive offsets (pos_pe reversed), rows size .. hold -1, -2, ...
        const int rel = size - 1 - r;
        float * row = pe.data() + static_cast<size_t>(r) * d;
        const float pos = static_cast<float>(rel >= 0 ? rel : -rel);
        for (int i = 0; i < d / 2; ++i) {
            const float a = pos * div[i];
            const double arg = rel >= 0 ? static_cast<double>(a) : -static_cast<double>(a);
            row[2 * i] = static_cast<float>(std::sin(arg));
            row[2 * i + 1] = static_cast<float>(std::cos(arg));
        }
    }
    return pe;
}

std::vector<float> dit_timestep_features(float t, const FlowHparams & hp) {
    const int half = hp.t_freq_dim / 2;
    const float neg_log = static_cast<float>(-std::log(static_cast<double>(hp.t_max_period)));
    const float scaled_t = t * hp.t_scale;
    std::vector<float> f(hp.t_freq_dim);
    for (int i = 0; i < half; ++i) {
        const float e = (neg_log * static_cast<float>(i)) / static_cast<float>(half);
        const float freq = static_cast<float>(std::exp(static_cast<double>(e)));
        const double arg = static_cast<double>(scaled_t * freq);
        f[i] = static_cast<float>(std::cos(arg));
        f[half + i] = static_cast<float>(std::sin(arg));
    }
    return f;
}

std::vector<float> cosine_t_span(int n_timesteps) {
    const int n = n_timesteps + 1;
    std::vector<float> t(n, 0.0f);
    if (n == 1) return t;
    const float step = 1.0f / static_cast<float>(n - 1);
    const float half_pi = 0.5f * static_cast<float>(M_PI);
    for (int i = 0; i < n; ++i) {
        // torch.linspace: the first half counts up from 0, the second half down from 1
        const float lin = i < n / 2 ? static_cast<float>(i) * step : 1.0f - static_cast<float>(n - 1 - i) * step;
        const float arg = lin * half_pi;
        t[i] = 1.0f - static_cast<float>(std::cos(static_cast<double>(arg)));
    }
    return t;
}

// ------------------------------------------------------------------------------------------------
// graph helpers
// ------------------------------------------------------------------------------------------------

namespace {

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in F32 (ggml_gelu uses an F16 table on CPUs).
// Computed as x sigmoid(2u) = silu(x g) / g with 2u = x g, g = 2 sqrt(2/pi) (1 + 0.044715 x^2) > 0:
// ggml's silu is vectorized, its tanh is one scalar libm call per element (~10% of the DiT's time).
ggml_tensor * gelu_tanh(ggml_context * ctx, ggml_tensor * x) {
    const float c2 = 2.0f * std::sqrt(2.0f / static_cast<float>(M_PI));
    ggml_tensor * g = ggml_scale_bias(ctx, ggml_sqr(ctx, x), 0.044715f * c2, c2);
    return ggml_div(ctx, ggml_silu(ctx, ggml_mul(ctx, x, g)), g);
}

// Mish: x tanh(softplus(x)), as the ops the oneDNN backend of BF16 and int8 sessions computes in vectors
ggml_tensor * mish_ops(ggml_context * ctx, ggml_tensor * x) {
    return ggml_mul(ctx, x, ggml_tanh(ctx, ggml_softplus(ctx, x)));
}

// Mish as x n (n + 2) / (n (n + 2) + 2), n = e^x: one expf per element where ggml's CPU softplus
// and tanh take a logf, an expf and a tanhf (~4% of a streamed flow window). Above x = 20 the
// fraction rounds to 1 in F32 (the reference's softplus threshold is 20 too); the clamp keeps
// n (n + 2) finite.
ggml_tensor * mish_exp(ggml_context * ctx, ggml_tensor * x) {
    ggml_tensor * n = ggml_exp(ctx, ggml_clamp(ctx, x, -FLT_MAX, 20.0f));
    ggml_tensor * u = ggml_mul(ctx, n, ggml_scale_bias(ctx, n, 1.0f, 2.0f));
    return ggml_mul(ctx, x, ggml_div(ctx, u, ggml_scale_bias(ctx, u, 1.0f, 2.0f)));
}

// Conv1d without padding over time-major x [C_in, T, B] with a tap-major kernel ne (C_in * K, C_out)
// (FlowModel): the K frames of every output step gathered (conv_taps), then one matrix product;
// returns [C_out, T-K+1, B].
ggml_tensor * conv1d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    const int64_t C_in = x->ne[0], K = w->ne[0] / C_in, C_out = w->ne[1];
    const int64_t T = x->ne[1], B = x->ne[2];
    if (K * C_in != w->ne[0]) fail(Status::internal, "flow conv: the kernel does not fit the input's channels");
    if (T < K) fail(Status::invalid_argument, "flow conv: input shorter than its kernel");
    const int64_t T_out = T - K + 1;
    ggml_tensor * cols = ggml_cont(ctx, conv_taps(ctx, x, static_cast<int>(K), 1, 1, T_out));  // [C_in, K, T_out, B]
    // the bias added to the product itself (not to a reshaped view of it): the oneDNN backend fuses
    // the two (core/onednn_matmul)
    ggml_tensor * y = ggml_add(ctx, ggml_mul_mat(ctx, w, ggml_reshape_2d(ctx, cols, C_in * K, T_out * B)), b);
    return ggml_reshape_3d(ctx, y, C_out, T_out, B);
}

// Frames [first, first + n) of a time-major [C, T, B] tensor (a view).
ggml_tensor * frames(ggml_context * ctx, ggml_tensor * x, int64_t first, int64_t n) {
    return ggml_view_3d(ctx, x, x->ne[0], n, x->ne[2], x->nb[1], x->nb[2], static_cast<size_t>(first) * x->nb[1]);
}

// ESPnet relative-position multi-head attention (spec §5.2.2, A.1). x [D, T] (normalized input);
// pe [D, 2*Tk-1]; k_prev / v_prev [D, C] cached frames (or null), Tk = C + T. The new keys /
// values [D, T] are returned through k_new / v_new.
ggml_tensor * rel_pos_attention(ggml_context * ctx, const FlowConformerLayer & L, int n_head, ggml_tensor * x,
                                ggml_tensor * pe, ggml_tensor * k_prev, ggml_tensor * v_prev, ggml_tensor ** k_new,
                                ggml_tensor ** v_new) {
    const int64_t D = x->ne[0], T = x->ne[1], dk = D / n_head;
    ggml_tensor * q = linear(ctx, x, L.q_w, L.q_b);
    ggml_tensor * k = linear(ctx, x, L.k_w, L.k_b);
    ggml_tensor * v = linear(ctx, x, L.v_w, L.v_b);
    *k_new = k;
    *v_new = v;
    if (k_prev) {
        k = ggml_concat(ctx, k_prev, k, 1);
        v = ggml_concat(ctx, v_prev, v, 1);
    }
    const int64_t Tk = k->ne[1], P = pe->ne[1];
    if (P != 2 * Tk - 1) fail(Status::internal, "flow encoder: relative-position table does not match the keys");
    ggml_tensor * p = ggml_mul_mat(ctx, L.pos_w, pe);                                           // [D, P]
    ggml_tensor * q3 = ggml_reshape_3d(ctx, q, dk, n_head, T);
    // contiguous (as in build_dit): the score products then run on ggml's CPU GEMM
    ggml_tensor * qu = ggml_cont(ctx, ggml_permute(ctx, ggml_add(ctx, q3, L.pos_bias_u), 0, 2, 1, 3));  // [dk, T, H]
    ggml_tensor * qv = ggml_cont(ctx, ggml_permute(ctx, ggml_add(ctx, q3, L.pos_bias_v), 0, 2, 1, 3));
    ggml_tensor * kp = ggml_permute(ctx, ggml_reshape_3d(ctx, k, dk, n_head, Tk), 0, 2, 1, 3);  // [dk, Tk, H]
    ggml_tensor * pp = ggml_permute(ctx, ggml_reshape_3d(ctx, p, dk, n_head, P), 0, 2, 1, 3);   // [dk, P, H]
    ggml_tensor * ac = ggml_mul_mat(ctx, kp, qu);                                                // [Tk, T, H]
    ggml_tensor * bd = ggml_mul_mat(ctx, pp, qv);                                                // [P, T, H]
    if (P != Tk) {
        // rel_shift (pad a zero column, fold, drop a row, unfold, keep Tk columns) amounts to
        // out[i][j] = bd[i][T-1-i+j] for T <= Tk: a view whose row stride is one element short
        const size_t es = ggml_element_size(bd);
        bd = ggml_cont(ctx, ggml_view_3d(ctx, bd, Tk, T, n_head, (P - 1) * es, bd->nb[2], static_cast<size_t>(T - 1) * es));
    }
    ggml_tensor * scores = ggml_soft_max_ext(ctx, ggml_add(ctx, ac, bd), nullptr, 1.0f / std::sqrt(static_cast<float>(dk)), 0.0f);
    ggml_tensor * vp = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, v, dk, n_head, Tk), 1, 2, 0, 3));  // [Tk, dk, H]
    ggml_tensor * o = ggml_mul_mat(ctx, vp, scores);                                             // [dk, T, H]
    o = ggml_reshape_2d(ctx, ggml_cont(ctx, ggml_permute(ctx, o, 0, 2, 1, 3)), D, T);
    return linear(ctx, o, L.o_w, L.o_b);
}

ggml_tensor * conformer_layer(ggml_context * ctx, const FlowConformerLayer & L, const FlowHparams & hp, ggml_tensor * x,
                              ggml_tensor * pe, ggml_tensor * k_prev, ggml_tensor * v_prev, ggml_tensor ** k_new,
                              ggml_tensor ** v_new) {
    ggml_tensor * h = layer_norm(ctx, x, L.attn_norm_w, L.attn_norm_b, hp.block_norm_eps);
    x = ggml_add(ctx, x, rel_pos_attention(ctx, L, hp.enc_head, h, pe, k_prev, v_prev, k_new, v_new));
    h = layer_norm(ctx, x, L.ffn_norm_w, L.ffn_norm_b, hp.block_norm_eps);
    h = ggml_silu(ctx, linear(ctx, h, L.up_w, L.up_b));
    return ggml_add(ctx, x, linear(ctx, h, L.down_w, L.down_b));
}

// Linear + LayerNorm, times sqrt(D) (the positional encoding's x-scale)
ggml_tensor * embed(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, ggml_tensor * nw,
                    ggml_tensor * nb, float eps) {
    ggml_tensor * y = layer_norm(ctx, linear(ctx, x, w, b), nw, nb, eps);
    return ggml_scale(ctx, y, std::sqrt(static_cast<float>(y->ne[0])));
}

}  // namespace

ggml_tensor * build_flow_speaker(ggml_context * ctx, const FlowModel & m, ggml_tensor * xvec) {
    return linear(ctx, ggml_l2_norm(ctx, xvec, m.hparams().spk_norm_eps), m.spk_proj_w(), m.spk_proj_b());
}

FlowEncoderOut build_flow_encoder(ggml_context * ctx, const FlowModel & m, const FlowEncoderIn & in) {
    const FlowHparams & hp = m.hparams();
    const FlowEncoderWeights & E = m.encoder();
    const int L = hp.lookahead, s = hp.up_stride;
    FlowEncoderOut out;
    ggml_tensor * y = embed(ctx, ggml_get_rows(ctx, m.tok_embd(), in.ids), E.embed_w, E.embed_b, E.embed_norm_w,
                            E.embed_norm_b, hp.embed_norm_eps);  // [D, T_in]
    if (in.pad_lookahead) y = ggml_pad_ext(ctx, y, 0, 0, 0, L, 0, 0, 0, 0);
    const int64_t D = y->ne[0], T = y->ne[1] - L;
    if (T < 1) fail(Status::invalid_argument, "flow encoder: no frame is left after the look-ahead tokens");
    // pre-lookahead layer: conv1 over the next L frames, leaky ReLU, causal conv2 (k 3), residual
    ggml_tensor * z = ggml_leaky_relu(ctx, conv1d(ctx, y, E.la_conv1_w, E.la_conv1_b), hp.lookahead_slope, false);  // [D, T]
    ggml_tensor * prev1 = ggml_view_2d(ctx, in.conv_prev, D, 2, in.conv_prev->nb[1], 0);
    ggml_tensor * prev2 = ggml_view_2d(ctx, in.conv_prev, D, 2 * s, in.conv_prev->nb[1], 2 * in.conv_prev->nb[1]);
    ggml_tensor * zin = ggml_concat(ctx, prev1, z, 1);                                                   // [D, T+2]
    ggml_tensor * next1 = frames(ctx, zin, T, 2);
    y = ggml_add(ctx, frames(ctx, y, 0, T), conv1d(ctx, zin, E.la_conv2_w, E.la_conv2_b));

    const size_t n_layers = E.blocks.size() + E.up_blocks.size();
    out.k_new.resize(n_layers);
    out.v_new.resize(n_layers);
    auto cache = [&](const std::vector<ggml_tensor *> & c, size_t i) { return i < c.size() ? c[i] : nullptr; };
    for (size_t i = 0; i < E.blocks.size(); ++i) {
        y = conformer_layer(ctx, E.blocks[i], hp, y, in.pe_tok, cache(in.k_prev, i), cache(in.v_prev, i), &out.k_new[i],
                            &out.v_new[i]);
    }
    // nearest up-sampling (each frame repeated s times), causal conv (k 2s+1) continuing the context
    ggml_tensor * u = ggml_reshape_2d(ctx, ggml_repeat_4d(ctx, ggml_reshape_3d(ctx, y, D, 1, T), D, s, T, 1), D, s * T);
    ggml_tensor * uin = ggml_concat(ctx, prev2, u, 1);                                                  // [D, 2s + sT]
    ggml_tensor * next2 = frames(ctx, uin, s * T, 2 * s);
    out.conv_next = ggml_concat(ctx, ggml_cont(ctx, next1), ggml_cont(ctx, next2), 1);
    y = conv1d(ctx, uin, E.up_conv_w, E.up_conv_b);
    y = embed(ctx, ggml_reshape_2d(ctx, y, D, s * T), E.up_embed_w, E.up_embed_b, E.up_embed_norm_w, E.up_embed_norm_b,
              hp.embed_norm_eps);
    for (size_t i = 0; i < E.up_blocks.size(); ++i) {
        const size_t j = E.blocks.size() + i;
        y = conformer_layer(ctx, E.up_blocks[i], hp, y, in.pe_mel, cache(in.k_prev, j), cache(in.v_prev, j), &out.k_new[j],
                            &out.v_new[j]);
    }
    out.h = layer_norm(ctx, y, E.out_norm_w, E.out_norm_b, hp.after_norm_eps);
    out.mu = linear(ctx, out.h, m.enc_proj_w(), m.enc_proj_b());
    return out;
}

namespace {

// LN(x) (1 + scale) + shift, with non-affine LayerNorm; `scale1` holds 1 + scale (add_one_to_dit_scales)
ggml_tensor * modulate(ggml_context * ctx, ggml_tensor * x, ggml_tensor * shift, ggml_tensor * scale1, float eps) {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, eps), scale1), shift);
}

ggml_tensor * chunk(ggml_context * ctx, ggml_tensor * mod, int64_t width, int i) {
    return ggml_view_1d(ctx, mod, width, static_cast<size_t>(i) * width * ggml_element_size(mod));
}

// Causal conv (left context = prev [H, K-1, B]) over x [H, T, B]; *next = the last K-1 input frames.
ggml_tensor * causal_conv(ggml_context * ctx, ggml_tensor * x, ggml_tensor * prev, ggml_tensor * w, ggml_tensor * b,
                          ggml_tensor ** next) {
    ggml_tensor * xin = ggml_concat(ctx, prev, x, 1);
    *next = ggml_cont(ctx, frames(ctx, xin, x->ne[1], prev->ne[1]));
    return conv1d(ctx, xin, w, b);
}

}  // namespace

int64_t dit_key_slots(int64_t n_keys) { return (n_keys + 7) / 8 * 8; }

int64_t dit_modulation_width(const FlowHparams & hp) {
    return (9 * static_cast<int64_t>(hp.dit_layer) + 2) * hp.dit_dim;
}

std::vector<ggml_tensor *> build_dit_modulation(ggml_context * ctx, const FlowModel & m, ggml_tensor * t_feat) {
    const FlowDitWeights & W = m.dit();
    // timestep embedding and its SiLU, shared by every adaLN modulation
    ggml_tensor * temb = linear(ctx, ggml_silu(ctx, linear(ctx, t_feat, W.t_mlp1_w, W.t_mlp1_b)), W.t_mlp2_w, W.t_mlp2_b);
    ggml_tensor * c = ggml_silu(ctx, temb);
    std::vector<ggml_tensor *> mods;
    for (const FlowDitBlock & L : W.blocks) mods.push_back(linear(ctx, c, L.ada_w, L.ada_b));  // [9H]
    mods.push_back(linear(ctx, c, W.final_ada_w, W.final_ada_b));                             // [2H]
    return mods;
}

void add_one_to_dit_scales(float * modulation, const FlowHparams & hp) {
    const int64_t H = hp.dit_dim;
    const auto add_one = [&](float * scale) {
        for (int64_t i = 0; i < H; ++i) scale[i] += 1.0f;
    };
    // per layer: shift, scale, gate of the attention (chunks 0-2), the MLP (3-5), the conv block (6-8)
    for (int64_t il = 0; il < hp.dit_layer; ++il) {
        for (int chunk : {1, 4, 7}) add_one(modulation + (il * 9 + chunk) * H);
    }
    add_one(modulation + (static_cast<int64_t>(hp.dit_layer) * 9 + 1) * H);  // the final layer's: shift, scale
}

DitOut build_dit(ggml_context * ctx, ggml_cgraph * graph, const FlowModel & m, const DitIn & in) {
    const FlowHparams & hp = m.hparams();
    const FlowDitWeights & W = m.dit();
    const int64_t H = hp.dit_dim, hd = hp.dit_head_dim, nh = hp.dit_head, inner = hp.dit_inner();
    const int64_t T = in.x_in->ne[1], B = in.x_in->ne[2], ctx_frames = hp.conv_kernel - 1;
    const bool cached = !in.k_cache.empty();
    if (in.modulation->ne[0] != dit_modulation_width(hp)) fail(Status::internal, "DiT: wrong modulation width");
    DitOut out;
    ggml_tensor * h = linear(ctx, in.x_in, W.in_proj_w, W.in_proj_b);  // [H, T, B]
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (size_t il = 0; il < W.blocks.size(); ++il) {
        const FlowDitBlock & L = W.blocks[il];
        ggml_tensor * mod = ggml_view_1d(ctx, in.modulation, 9 * H, il * 9 * H * sizeof(float));  // [9H]
        // attention: per-head LayerNorm on q and k, no positions
        ggml_tensor * a = modulate(ctx, h, chunk(ctx, mod, H, 0), chunk(ctx, mod, H, 1), hp.dit_norm_eps);
        ggml_tensor * q = linear(ctx, a, L.q_w, L.q_b);
        ggml_tensor * k = linear(ctx, a, L.k_w, L.k_b);
        ggml_tensor * v = linear(ctx, a, L.v_w, L.v_b);
        q = layer_norm(ctx, ggml_reshape_4d(ctx, q, hd, nh, T, B), L.q_norm_w, L.q_norm_b, hp.qk_norm_eps);
        k = layer_norm(ctx, ggml_reshape_4d(ctx, k, hd, nh, T, B), L.k_norm_w, L.k_norm_b, hp.qk_norm_eps);
        k = ggml_reshape_3d(ctx, k, inner, T, B);
        ggml_tensor * mask = in.mask;
        if (!cached && mask && mask->ne[0] > T) {
            // this call's keys, zero rows appended up to the mask's width (dit_key_slots); it hides them
            k = ggml_pad(ctx, k, 0, static_cast<int>(mask->ne[0] - T), 0, 0);
            v = ggml_pad(ctx, v, 0, static_cast<int>(mask->ne[0] - T), 0, 0);
        }
        if (cached) {
            // the write is the keys' source, so every read of the cache follows it
            k = ggml_set_rows(ctx, in.k_cache[il], k, in.slots);
            v = ggml_set_rows(ctx, in.v_cache[il], v, in.slots);
            ggml_build_forward_expand(graph, k);
            ggml_build_forward_expand(graph, v);
        }
        if ((mask ? mask->ne[0] : T) != k->ne[1]) fail(Status::internal, "DiT: the attention mask does not fit the keys");
        const int64_t S = k->ne[1];
        ggml_tensor * kp = ggml_permute(ctx, ggml_reshape_4d(ctx, k, hd, nh, S, B), 0, 2, 1, 3);       // [hd, S, nh, B]
        ggml_tensor * o = nullptr;
        if (in.onednn_ops) {  // one op, which the oneDNN backend computes block by block
            ggml_tensor * vp = ggml_permute(ctx, ggml_reshape_4d(ctx, v, hd, nh, S, B), 0, 2, 1, 3);   // [hd, S, nh, B]
            o = ggml_flash_attn_ext(ctx, ggml_permute(ctx, q, 0, 2, 1, 3), kp, vp, mask, scale, 0.0f, 0.0f);
            if (!onednn_takes_attention(o)) fail(Status::internal, "flow attention: the oneDNN backend refuses the fused op");
            o = ggml_reshape_3d(ctx, o, inner, T, B);  // [hd, nh, T, B] -> [inner, T, B]
        } else {
            // contiguous queries: ggml's CPU GEMM (tinyBLAS) takes only a contiguous right operand; a
            // permuted view falls back to one dot product per score (~10% of the flow's time)
            ggml_tensor * qp = ggml_cont(ctx, ggml_permute(ctx, q, 0, 2, 1, 3));                       // [hd, T, nh, B]
            ggml_tensor * kq = ggml_soft_max_ext(ctx, ggml_mul_mat(ctx, kp, qp), mask, scale, 0.0f);   // [S, T, nh, B]
            ggml_tensor * vp = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, v, hd, nh, S, B), 1, 2, 0, 3));  // [S, hd, nh, B]
            o = ggml_mul_mat(ctx, vp, kq);                                                               // [hd, T, nh, B]
            o = ggml_reshape_3d(ctx, ggml_cont(ctx, ggml_permute(ctx, o, 0, 2, 1, 3)), inner, T, B);
        }
        h = ggml_add(ctx, h, ggml_mul(ctx, linear(ctx, o, L.o_w, L.o_b), chunk(ctx, mod, H, 2)));
        // causal conv block: conv, LayerNorm, Mish, conv
        auto prev = [&](int i) {
            return ggml_view_3d(ctx, in.conv_prev, H, ctx_frames, B, in.conv_prev->nb[1], in.conv_prev->nb[2],
                                static_cast<size_t>(2 * il + i) * in.conv_prev->nb[3]);
        };
        ggml_tensor *next1, *next2;
        ggml_tensor * y = modulate(ctx, h, chunk(ctx, mod, H, 6), chunk(ctx, mod, H, 7), hp.dit_norm_eps);
        y = causal_conv(ctx, y, prev(0), L.conv1_w, L.conv1_b, &next1);
        y = layer_norm(ctx, y, L.conv_norm_w, L.conv_norm_b, hp.conv_norm_eps);
        y = in.onednn_ops ? mish_ops(ctx, y) : mish_exp(ctx, y);
        y = causal_conv(ctx, y, prev(1), L.conv2_w, L.conv2_b, &next2);
        out.conv_next.push_back(next1);
        out.conv_next.push_back(next2);
        h = ggml_add(ctx, h, ggml_mul(ctx, y, chunk(ctx, mod, H, 8)));
        // MLP
        y = modulate(ctx, h, chunk(ctx, mod, H, 3), chunk(ctx, mod, H, 4), hp.dit_norm_eps);
        y = linear(ctx, y, L.up_w, L.up_b);
        y = linear(ctx, in.onednn_ops ? ggml_gelu(ctx, y) : gelu_tanh(ctx, y), L.down_w, L.down_b);
        h = ggml_add(ctx, h, ggml_mul(ctx, y, chunk(ctx, mod, H, 5)));
    }
    ggml_tensor * fmod = ggml_view_1d(ctx, in.modulation, 2 * H, W.blocks.size() * 9 * H * sizeof(float));  // shift, scale
    h = modulate(ctx, h, chunk(ctx, fmod, H, 0), chunk(ctx, fmod, H, 1), hp.dit_norm_eps);
    out.velocity = linear(ctx, h, W.final_proj_w, W.final_proj_b);
    return out;
}

}  // namespace minicpmo
