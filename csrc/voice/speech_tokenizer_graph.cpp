#include "voice/speech_tokenizer_graph.h"

#include <cmath>

#include "core/graph_ops.h"

namespace minicpmo {

namespace {

// Conv1d as im2col + one matrix product. x: [L, C_in] (time fastest); w: the (C_in*K -> C_out)
// matrix whose columns are ordered (channel, tap) like im2col's rows. Returns [C_out, L_out].
ggml_tensor * conv1d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, int kernel, int stride,
                     int pad) {
    // im2col reads only the kernel's shape (taps, input channels) from its first operand
    ggml_tensor * kernel_shape = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, kernel, x->ne[1]);
    ggml_tensor * cols = ggml_im2col(ctx, kernel_shape, x, stride, 0, pad, 0, 1, 0, false, GGML_TYPE_F32);
    cols = ggml_reshape_2d(ctx, cols, cols->ne[0], cols->ne[1]);  // [C_in*K, L_out]
    return linear(ctx, cols, w, b);
}

// Full (unmasked) attention of one recording with rotary positions. q, k, v: [D, T]. The reference
// scales q and k by hd^-1/4 each; the product's hd^-1/2 is applied once in the softmax.
ggml_tensor * attention(ggml_context * ctx, const SpeechTokenizerHparams & hp, ggml_tensor * q, ggml_tensor * k,
                        ggml_tensor * v, ggml_tensor * positions) {
    const int64_t hd = hp.head_dim(), H = hp.n_head, T = q->ne[1];
    q = ggml_reshape_3d(ctx, q, hd, H, T);
    k = ggml_reshape_3d(ctx, k, hd, H, T);
    // the reference rotates the two halves of each head (x * cos + [-x_hi, x_lo] * sin): NeoX mode
    q = ggml_rope_ext(ctx, q, positions, nullptr, hp.rope_dim, GGML_ROPE_TYPE_NEOX, hp.rope_positions,
                      hp.rope_theta, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f);
    k = ggml_rope_ext(ctx, k, positions, nullptr, hp.rope_dim, GGML_ROPE_TYPE_NEOX, hp.rope_positions,
                      hp.rope_theta, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f);
    ggml_tensor * qh = ggml_permute(ctx, q, 0, 2, 1, 3);                 // [hd, T, H]
    ggml_tensor * kh = ggml_cont(ctx, ggml_permute(ctx, k, 0, 2, 1, 3));  // [hd, T, H]
    ggml_tensor * kq = ggml_mul_mat(ctx, kh, ggml_cont(ctx, qh));         // [T_k, T_q, H]
    kq = ggml_soft_max_ext_inplace(ctx, kq, nullptr, 1.0f / std::sqrt(static_cast<float>(hd)), 0.0f);
    ggml_tensor * vt = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, v, hd, H, T), 1, 2, 0, 3));  // [T, hd, H]
    ggml_tensor * o = ggml_mul_mat(ctx, vt, kq);                          // [hd, T_q, H]
    o = ggml_cont(ctx, ggml_permute(ctx, o, 0, 2, 1, 3));                 // [hd, H, T_q]
    return ggml_reshape_2d(ctx, o, hd * H, T);
}

// FSMN memory: v + depthwise Conv1d(v) over time (zero padding (K-1)/2 left, the rest right). v: [D, T].
ggml_tensor * fsmn(ggml_context * ctx, const SpeechTokenizerHparams & hp, ggml_tensor * v, ggml_tensor * w) {
    const int left = (hp.fsmn_kernel - 1) / 2, right = hp.fsmn_kernel - 1 - left;
    ggml_tensor * vt = ggml_cont(ctx, ggml_transpose(ctx, v));                   // [T, D]
    vt = ggml_pad_ext(ctx, vt, left, right, 0, 0, 0, 0, 0, 0);                   // [T + K - 1, D]
    vt = ggml_reshape_3d(ctx, vt, vt->ne[0], vt->ne[1], 1);
    // ssm_conv: out[d, t] = sum_k sx[t + k, d] * c[k, d], the depthwise cross-correlation
    ggml_tensor * conv = ggml_ssm_conv(ctx, vt, w);                              // [D, T, 1]
    return ggml_add(ctx, ggml_reshape_2d(ctx, conv, conv->ne[0], conv->ne[1]), v);
}

}  // namespace

size_t speech_tokenizer_graph_nodes(const SpeechTokenizerHparams & hp) {
    return static_cast<size_t>(hp.n_layer) * 64 + 128;
}

ggml_tensor * build_speech_tokenizer(ggml_context * ctx, const SpeechTokenizer & m, ggml_tensor * mel,
                                     ggml_tensor * positions) {
    const SpeechTokenizerHparams & hp = m.hparams();
    ggml_tensor * x = ggml_gelu_erf(ctx, conv1d(ctx, mel, m.conv_w(0), m.conv_b(0), hp.conv_kernel[0],
                                                hp.conv_stride[0], hp.conv_pad[0]));  // [D, L1]
    x = ggml_cont(ctx, ggml_transpose(ctx, x));                                         // [L1, D]
    x = ggml_gelu_erf(ctx, conv1d(ctx, x, m.conv_w(1), m.conv_b(1), hp.conv_kernel[1], hp.conv_stride[1],
                                  hp.conv_pad[1]));                                     // [D, T]
    for (const SpeechTokenizerLayer & l : m.layers()) {
        ggml_tensor * h = layer_norm(ctx, x, l.attn_ln_w, l.attn_ln_b, hp.eps);
        ggml_tensor * q = linear(ctx, h, l.q_w, l.q_b);
        ggml_tensor * k = linear(ctx, h, l.k_w, nullptr);
        ggml_tensor * v = linear(ctx, h, l.v_w, l.v_b);
        ggml_tensor * a = linear(ctx, attention(ctx, hp, q, k, v, positions), l.out_w, l.out_b);
        x = ggml_add(ctx, x, ggml_add(ctx, a, fsmn(ctx, hp, v, l.fsmn_w)));
        h = layer_norm(ctx, x, l.mlp_ln_w, l.mlp_ln_b, hp.eps);
        h = linear(ctx, ggml_gelu_erf(ctx, linear(ctx, h, l.fc1_w, l.fc1_b)), l.fc2_w, l.fc2_b);
        x = ggml_add(ctx, x, h);
    }
    ggml_tensor * p = ggml_tanh(ctx, linear(ctx, x, m.fsq_w(), m.fsq_b()));  // [fsq_dim, T]
    return ggml_scale(ctx, p, hp.fsq_scale);
}

}  // namespace minicpmo
