#include "voice/speaker_encoder_graph.h"

#include <algorithm>

namespace minicpmo {

namespace {

ggml_tensor * add_bias_2d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * b) {
    // x ne (W, H, C, 1): the bias is per channel (ne2)
    return ggml_add(ctx, x, ggml_reshape_4d(ctx, b, 1, 1, b->ne[0], 1));
}

ggml_tensor * conv2d(ggml_context * ctx, const SpkConv & c, ggml_tensor * x) {
    // x ne (T, F, C, 1); strides and padding only along frequency (ne1) beyond 1, "same" padding
    const int pad = (c.kernel - 1) / 2;
    return add_bias_2d(ctx, ggml_conv_2d(ctx, c.w, x, 1, c.stride, pad, pad, 1, 1), c.b);
}

// A 1-D conv on x ne (C_in, T): the K dilated, strided shifts of the zero-padded input stacked into
// ne (K * C_in, T_out), then one product with the kernel matrix.
ggml_tensor * conv1d(ggml_context * ctx, const SpkConv & c, ggml_tensor * x) {
    ggml_tensor * cols = x;
    if (c.kernel > 1 || c.stride > 1) {
        const int pad = c.dilation * (c.kernel - 1) / 2;
        const int64_t t_in = x->ne[1];
        const int64_t t_out = (t_in + 2 * pad - c.dilation * (c.kernel - 1) - 1) / c.stride + 1;
        ggml_tensor * padded = pad > 0 ? ggml_pad_ext(ctx, x, 0, 0, pad, pad, 0, 0, 0, 0) : x;
        cols = nullptr;
        for (int k = 0; k < c.kernel; ++k) {
            ggml_tensor * tap = ggml_view_2d(ctx, padded, x->ne[0], t_out, padded->nb[1] * c.stride,
                                             padded->nb[1] * static_cast<size_t>(k) * c.dilation);
            tap = ggml_cont(ctx, tap);
            cols = cols ? ggml_concat(ctx, cols, tap, 0) : tap;
        }
    }
    return ggml_add(ctx, ggml_mul_mat(ctx, c.w, cols), c.b);
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

    // head: the fbank as a one-channel image ne (T, F, 1, 1)
    ggml_tensor * x = ggml_cont(ctx, ggml_transpose(ctx, in.feats));
    x = ggml_reshape_4d(ctx, x, n_frames, hp.fbank.n_mel, 1, 1);
    x = ggml_relu(ctx, conv2d(ctx, model.head_in(), x));
    for (const SpkResBlock & b : model.head_blocks()) {
        ggml_tensor * y = ggml_relu(ctx, conv2d(ctx, b.conv1, x));
        y = conv2d(ctx, b.conv2, y);
        x = ggml_relu(ctx, ggml_add(ctx, y, b.shortcut.w ? conv2d(ctx, b.shortcut, x) : x));
    }
    x = ggml_relu(ctx, conv2d(ctx, model.head_out(), x));  // ne (T, F', m, 1)
    // channels c * F' + f, frames along ne1
    x = ggml_reshape_2d(ctx, x, n_frames, x->ne[1] * x->ne[2]);
    x = ggml_cont(ctx, ggml_transpose(ctx, x));

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
    ggml_tensor * stats = ggml_concat(ctx, ggml_reshape_2d(ctx, mean, C, 1), ggml_reshape_2d(ctx, ggml_sqrt(ctx, var), C, 1), 0);
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
    for (int64_t t = 0; t < frames; ++t) pooling[static_cast<size_t>(n_seg * frames + t)] = 1.0f / static_cast<float>(frames);
}

size_t speaker_encoder_graph_nodes(const SpeakerEncoder & model) {
    size_t layers = 0;
    for (const SpkBlock & b : model.blocks()) layers += b.layers.size();
    const size_t taps = static_cast<size_t>(std::max(model.hparams().tdnn_kernel, 1)) * 2;
    // ~30 nodes per dense layer (with its conv taps), ~10 per head block, and the rest
    return 256 + 12 * model.head_blocks().size() + (40 + 3 * taps) * layers + 16 * model.blocks().size();
}

}  // namespace minicpmo
