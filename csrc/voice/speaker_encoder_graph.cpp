#include "voice/speaker_encoder_graph.h"

#include <algorithm>

namespace minicpmo {

namespace {

// tap t of a conv kernel: the contiguous matrix ne (C_in, C_out)
ggml_tensor * tap_matrix(ggml_context * ctx, const SpkConv & c, int t) {
    return ggml_view_2d(ctx, c.w, c.w->ne[0], c.w->ne[1], c.w->nb[1], c.w->nb[2] * static_cast<size_t>(t));
}

// A 2-D conv on x ne (C, F, T): the sum over taps (kh along frequency, kw along time) of the tap's
// matrix times the shifted, frequency-strided input; "same" padding. One product per tap instead of
// ggml's im2col, whose per-element gather dominated the whole encoder.
ggml_tensor * conv2d(ggml_context * ctx, const SpkConv & c, ggml_tensor * x) {
    const int k = c.kernel, pad = (k - 1) / 2;
    const int64_t C = x->ne[0], F = x->ne[1], T = x->ne[2];
    const int64_t f_out = (F + 2 * pad - k) / c.stride + 1;
    ggml_tensor * padded = pad > 0 ? ggml_pad_ext(ctx, x, 0, 0, pad, pad, pad, pad, 0, 0) : x;
    if (C < 8) {
        // a narrow input (the one-channel fbank): per-tap products of depth C would each be a few
        // multiply-adds per output; stack the taps into one product of depth taps * C instead,
        // zero-padded to a multiple of 8 (the depth the CPU's blocked F32 GEMM takes)
        ggml_tensor * cols = nullptr;
        for (int kh = 0; kh < k; ++kh) {
            for (int kw = 0; kw < k; ++kw) {
                ggml_tensor * tap = ggml_view_3d(ctx, padded, C, f_out, T, padded->nb[1] * c.stride, padded->nb[2],
                                                 padded->nb[1] * kh + padded->nb[2] * kw);
                tap = ggml_reshape_2d(ctx, ggml_cont(ctx, tap), C, f_out * T);
                cols = cols ? ggml_concat(ctx, cols, tap, 0) : tap;
            }
        }
        const int64_t depth = C * k * k, pad_depth = (8 - depth % 8) % 8;
        ggml_tensor * w = c.w->type == GGML_TYPE_F32 ? c.w : ggml_cast(ctx, c.w, GGML_TYPE_F32);
        w = ggml_reshape_2d(ctx, ggml_cont(ctx, ggml_permute(ctx, w, 0, 2, 1, 3)), depth, c.c_out);  // (tap, ci) rows
        if (pad_depth > 0) {
            w = ggml_pad(ctx, w, static_cast<int>(pad_depth), 0, 0, 0);
            cols = ggml_pad(ctx, cols, static_cast<int>(pad_depth), 0, 0, 0);
        }
        return ggml_reshape_3d(ctx, ggml_add(ctx, ggml_mul_mat(ctx, w, cols), c.b), c.c_out, f_out, T);
    }
    ggml_tensor * y = nullptr;
    for (int kh = 0; kh < k; ++kh) {
        for (int kw = 0; kw < k; ++kw) {
            ggml_tensor * tap = ggml_view_3d(ctx, padded, C, f_out, T, padded->nb[1] * c.stride, padded->nb[2],
                                             padded->nb[1] * kh + padded->nb[2] * kw);
            tap = ggml_reshape_2d(ctx, ggml_cont(ctx, tap), C, f_out * T);
            ggml_tensor * part = ggml_mul_mat(ctx, tap_matrix(ctx, c, kh * k + kw), tap);
            y = y ? ggml_add(ctx, y, part) : part;
        }
    }
    return ggml_reshape_3d(ctx, ggml_add(ctx, y, c.b), c.c_out, f_out, T);
}

// A 1-D conv on x ne (C_in, T): the sum over taps of the tap's matrix times the dilated, strided
// shift of the zero-padded input.
ggml_tensor * conv1d(ggml_context * ctx, const SpkConv & c, ggml_tensor * x) {
    if (c.kernel == 1 && c.stride == 1) return ggml_add(ctx, ggml_mul_mat(ctx, tap_matrix(ctx, c, 0), x), c.b);
    const int pad = c.dilation * (c.kernel - 1) / 2;
    const int64_t t_out = (x->ne[1] + 2 * pad - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
    ggml_tensor * padded = pad > 0 ? ggml_pad_ext(ctx, x, 0, 0, pad, pad, 0, 0, 0, 0) : x;
    ggml_tensor * y = nullptr;
    for (int k = 0; k < c.kernel; ++k) {
        ggml_tensor * tap = ggml_view_2d(ctx, padded, x->ne[0], t_out, padded->nb[1] * c.stride,
                                         padded->nb[1] * static_cast<size_t>(k) * c.dilation);
        if (c.stride > 1) tap = ggml_cont(ctx, tap);
        ggml_tensor * part = ggml_mul_mat(ctx, tap_matrix(ctx, c, k), tap);
        y = y ? ggml_add(ctx, y, part) : part;
    }
    return ggml_add(ctx, y, c.b);
}

ggml_tensor * affine(ggml_context * ctx, const SpkAffine & a, ggml_tensor * x) {
    return ggml_add(ctx, ggml_mul(ctx, x, a.scale), a.shift);
}

// One CAM dense layer on x ne (C, T): returns its growth channels ne (G, T).
ggml_tensor * dense_layer(ggml_context * ctx, const SpkDenseLayer & d, ggml_tensor * x,
                          const SpeakerEncoderGraphInputs & in) {
    ggml_tensor * h = ggml_relu(ctx, affine(ctx, d.bn_in, x));
    h = ggml_relu(ctx, conv1d(ctx, d.fc_in, h));  // ne (B, T)
    ggml_tensor * y = conv1d(ctx, d.local, h);    // ne (G, T)
    // context of every frame: the utterance mean + its segment's mean, both from one product
    ggml_tensor * pooled = ggml_mul_mat(ctx, ggml_cont(ctx, ggml_transpose(ctx, h)), in.pooling);  // ne (B, n_seg + 1)
    const int64_t n_seg = pooled->ne[1] - 1;
    ggml_tensor * segs = ggml_view_2d(ctx, pooled, pooled->ne[0], n_seg, pooled->nb[1], 0);
    ggml_tensor * mean = ggml_view_2d(ctx, pooled, pooled->ne[0], 1, pooled->nb[1], pooled->nb[1] * n_seg);
    ggml_tensor * context = ggml_add(ctx, segs, mean);
    ggml_tensor * mask = ggml_sigmoid(ctx, conv1d(ctx, d.ctx2, ggml_relu(ctx, conv1d(ctx, d.ctx1, context))));  // (G, n_seg)
    return ggml_mul(ctx, y, ggml_get_rows(ctx, mask, in.segment));
}

}  // namespace

ggml_tensor * build_speaker_encoder(ggml_context * ctx, const SpeakerEncoder & model, int64_t n_frames,
                                    SpeakerEncoderGraphInputs & in) {
    const SpeakerEncoderHparams & hp = model.hparams();
    const int64_t frames = model.tdnn_frames(n_frames);
    const int64_t n_seg = (frames + hp.seg_len - 1) / hp.seg_len;
    in.feats = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.fbank.n_mel, n_frames);
    in.pooling = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, frames, n_seg + 1);
    in.segment = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, frames);
    for (ggml_tensor * t : {in.feats, in.pooling, in.segment}) ggml_set_input(t);

    // head: the fbank as a one-channel image ne (1, F, T)
    ggml_tensor * x = ggml_reshape_3d(ctx, in.feats, 1, hp.fbank.n_mel, n_frames);
    x = ggml_relu(ctx, conv2d(ctx, model.head_in(), x));
    for (const SpkResBlock & b : model.head_blocks()) {
        ggml_tensor * y = ggml_relu(ctx, conv2d(ctx, b.conv1, x));
        y = conv2d(ctx, b.conv2, y);
        x = ggml_relu(ctx, ggml_add(ctx, y, b.shortcut.w ? conv2d(ctx, b.shortcut, x) : x));
    }
    x = ggml_relu(ctx, conv2d(ctx, model.head_out(), x));  // ne (m, F', T)
    // the TDNN's channel c * F' + f: frequency fastest
    x = ggml_cont(ctx, ggml_permute(ctx, x, 1, 0, 2, 3));
    x = ggml_reshape_2d(ctx, x, x->ne[0] * x->ne[1], n_frames);

    x = ggml_relu(ctx, conv1d(ctx, model.tdnn(), x));  // ne (C0, frames)
    const size_t n_blocks = model.blocks().size();
    for (size_t bi = 0; bi < n_blocks; ++bi) {
        const SpkBlock & b = model.blocks()[bi];
        for (const SpkDenseLayer & d : b.layers) x = ggml_concat(ctx, x, dense_layer(ctx, d, x, in), 0);
        x = conv1d(ctx, b.transit, ggml_relu(ctx, affine(ctx, b.transit_bn, x)));
    }
    x = ggml_relu(ctx, affine(ctx, model.out_bn(), x));  // ne (C, frames)

    // statistics pooling: mean and unbiased standard deviation over frames
    ggml_tensor * xt = ggml_cont(ctx, ggml_transpose(ctx, x));  // ne (frames, C)
    ggml_tensor * mean = ggml_mean(ctx, xt);                    // ne (1, C)
    ggml_tensor * dev = ggml_sub(ctx, xt, mean);
    ggml_tensor * var = ggml_scale(ctx, ggml_sum_rows(ctx, ggml_sqr(ctx, dev)), 1.0f / static_cast<float>(frames - 1));
    const int64_t C = x->ne[0];
    ggml_tensor * std_dev = ggml_reshape_2d(ctx, ggml_sqrt(ctx, var), C, 1);
    ggml_tensor * stats = ggml_concat(ctx, ggml_reshape_2d(ctx, mean, C, 1), std_dev, 0);
    return conv1d(ctx, model.dense(), stats);  // ne (E, 1)
}

void speaker_encoder_pooling(int64_t frames, int seg_len, std::vector<float> & pooling, std::vector<int32_t> & segment) {
    const int64_t n_seg = (frames + seg_len - 1) / seg_len;
    pooling.assign(static_cast<size_t>((n_seg + 1) * frames), 0.0f);
    segment.resize(static_cast<size_t>(frames));
    for (int64_t s = 0; s < n_seg; ++s) {
        const int64_t t0 = s * seg_len, t1 = std::min<int64_t>(frames, t0 + seg_len);
        for (int64_t t = t0; t < t1; ++t) {
            pooling[static_cast<size_t>(s * frames + t)] = 1.0f / static_cast<float>(t1 - t0);
            segment[static_cast<size_t>(t)] = static_cast<int32_t>(s);
        }
    }
    for (int64_t t = 0; t < frames; ++t) {
        pooling[static_cast<size_t>(n_seg * frames + t)] = 1.0f / static_cast<float>(frames);
    }
}

size_t speaker_encoder_graph_nodes(const SpeakerEncoder & model) {
    size_t layers = 0;
    for (const SpkBlock & b : model.blocks()) layers += b.layers.size();
    const SpeakerEncoderHparams & hp = model.hparams();
    const size_t taps2d = static_cast<size_t>(hp.head_kernel) * hp.head_kernel;
    size_t taps1d = static_cast<size_t>(hp.tdnn_kernel);
    for (int k : hp.kernels) taps1d = std::max(taps1d, static_cast<size_t>(k));
    // up to 5 nodes per tap (view, cont, reshape, product, sum); ~20 more per dense layer
    return 256 + 5 * taps2d * (3 * model.head_blocks().size() + 2) + (24 + 5 * taps1d) * (layers + 1) +
           16 * model.blocks().size();
}

}  // namespace minicpmo
