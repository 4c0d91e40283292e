#include "token2wav/hift_graph.h"

#include <cfloat>

namespace minicpmo {

namespace {

ggml_tensor * add_bias(ggml_context * ctx, ggml_tensor * y, ggml_tensor * b) {
    return ggml_add(ctx, y, ggml_reshape_2d(ctx, b, 1, b->ne[0]));  // (C) -> (1, C): broadcast over time
}

// Conv1d on x ne (T, C_in) with zero padding, stride and dilation: im2col, then one matrix product
// with the kernel viewed as ne (K * C_in, C_out) (im2col's row order is (channel, tap), tap
// fastest), all F32 (HiftModel keeps every weight in F32). The kernel goes first so the product's
// rows are output channels: ggml's CPU GEMM (tinyBLAS) needs a row count divisible by 4, which
// C_out is and the time length (120 T + 1 in the last stage) is not. The result is transposed back
// to time-major.
ggml_tensor * conv1d(ggml_context * ctx, ggml_tensor * x, const HiftConv & c) {
    ggml_tensor * cols = ggml_im2col(ctx, c.w, x, c.stride, 0, c.padding, 0, c.dilation, 0, false, GGML_TYPE_F32);
    cols = ggml_reshape_2d(ctx, cols, cols->ne[0], cols->ne[1]);
    ggml_tensor * w2 = ggml_reshape_2d(ctx, c.w, c.w->ne[0] * c.w->ne[1], c.w->ne[2]);
    ggml_tensor * y = ggml_add(ctx, ggml_mul_mat(ctx, w2, cols), c.b);  // (C_out, T_out)
    return ggml_cont(ctx, ggml_transpose(ctx, y));
}

// ConvTranspose1d (torch semantics, padding p cropped from both ends): every input frame times the
// kernel gives K * C_out columns, which col2im_1d overlap-adds at stride `rate`.
ggml_tensor * conv_transpose1d(ggml_context * ctx, ggml_tensor * x, const HiftUpStage & st) {
    ggml_tensor * xc = ggml_cont(ctx, ggml_transpose(ctx, x));  // (C_in, T)
    ggml_tensor * cols = ggml_mul_mat(ctx, st.wt, xc);          // (K * C_out, T)
    ggml_tensor * y = ggml_col2im_1d(ctx, cols, st.rate, st.c_out, st.padding);  // (T_out, C_out)
    return add_bias(ctx, y, st.b);
}

// Snake: x + 1/(alpha + eps) * sin(alpha x)^2, in the mul -> sin -> sqr -> mul -> add order the
// CUDA and Metal backends fuse into one kernel.
ggml_tensor * snake(ggml_context * ctx, ggml_tensor * x, const HiftSnake & s) {
    ggml_tensor * y = ggml_mul(ctx, x, s.alpha);
    y = ggml_sin(ctx, y);
    y = ggml_sqr(ctx, y);
    y = ggml_mul(ctx, y, s.inv);
    return ggml_add(ctx, x, y);
}

ggml_tensor * resblock(ggml_context * ctx, ggml_tensor * x, const HiftResBlock & rb) {
    for (const HiftResUnit & u : rb) {
        ggml_tensor * t = conv1d(ctx, snake(ctx, x, u.a1), u.c1);
        t = conv1d(ctx, snake(ctx, t, u.a2), u.c2);
        x = ggml_add(ctx, t, x);
    }
    return x;
}

// torch.stft(n_fft, hop, periodic Hann, center=True with reflect padding, onesided) of a 1-D
// signal as a strided convolution with the windowed DFT basis: ne (frames, n_fft + 2), real
// parts then imaginary parts.
ggml_tensor * stft(ggml_context * ctx, const HiftModel & m, ggml_tensor * signal) {
    const HiftHparams & hp = m.hparams();
    ggml_tensor * s = ggml_reshape_2d(ctx, signal, signal->ne[0], 1);
    s = ggml_pad_reflect_1d(ctx, s, hp.n_fft / 2, hp.n_fft / 2);
    // the window tensor has the kernel's shape ne (n_fft, 1) im2col wants
    ggml_tensor * cols = ggml_im2col(ctx, m.window_sq(), s, hp.hop, 0, 0, 0, 1, 0, false, GGML_TYPE_F32);
    return ggml_mul_mat(ctx, cols, m.stft_basis());
}

// torch.istft(n_fft, hop, periodic Hann, center=True) of ne (frames, n_fft + 2) [re | im]: inverse
// real DFT x window per frame (one matrix product), overlap-add (col2im_1d), division by the
// overlap-added squared window, n_fft / 2 samples dropped at both ends.
ggml_tensor * istft(ggml_context * ctx, const HiftModel & m, ggml_tensor * spec) {
    const HiftHparams & hp = m.hparams();
    ggml_tensor * frames = ggml_mul_mat(ctx, m.istft_basis(), ggml_cont(ctx, ggml_transpose(ctx, spec)));  // (N, F)
    ggml_tensor * y = ggml_col2im_1d(ctx, frames, hp.hop, 1, hp.n_fft / 2);
    ggml_tensor * env = ggml_col2im_1d(ctx, ggml_repeat(ctx, m.window_sq(), frames), hp.hop, 1, hp.n_fft / 2);
    return ggml_div(ctx, y, env);
}

}  // namespace

ggml_tensor * build_hift_f0(ggml_context * ctx, const HiftModel & m, ggml_tensor * mel) {
    ggml_tensor * x = mel;
    for (const HiftConv & c : m.f0_convs()) x = ggml_elu(ctx, conv1d(ctx, x, c));
    ggml_tensor * xc = ggml_cont(ctx, ggml_transpose(ctx, x));                 // (C, T)
    ggml_tensor * f0 = ggml_add(ctx, ggml_mul_mat(ctx, m.f0_proj_w(), xc), m.f0_proj_b());  // (1, T)
    return ggml_abs(ctx, f0);
}

HiftDecoderOutputs build_hift_decoder(ggml_context * ctx, const HiftModel & m, ggml_tensor * mel, ggml_tensor * sines,
                                      ggml_tensor * cache_source) {
    const HiftHparams & hp = m.hparams();
    const int64_t L = sines->ne[1];

    // NSF merge: tanh(Linear(H+1 -> 1)) per sample; the streaming cache replaces the first samples
    ggml_tensor * src = ggml_add(ctx, ggml_mul_mat(ctx, m.source_w(), sines), m.source_b());  // (1, L)
    src = ggml_reshape_1d(ctx, ggml_tanh(ctx, src), L);
    if (cache_source) {
        const int64_t n = cache_source->ne[0];
        src = n >= L ? cache_source
                     : ggml_concat(ctx, cache_source, ggml_view_1d(ctx, src, L - n, n * ggml_element_size(src)), 0);
    }
    ggml_tensor * spec = stft(ctx, m, src);

    ggml_tensor * x = conv1d(ctx, mel, m.conv_pre());
    const auto & stages = m.stages();
    for (size_t i = 0; i < stages.size(); ++i) {
        const HiftUpStage & st = stages[i];
        x = conv_transpose1d(ctx, ggml_leaky_relu(ctx, x, hp.lrelu_slope, false), st);
        if (i + 1 == stages.size()) x = ggml_pad_reflect_1d(ctx, x, 1, 0);  // ReflectionPad1d((1, 0))
        x = ggml_add(ctx, x, resblock(ctx, conv1d(ctx, spec, st.src_down), st.src_res));
        ggml_tensor * sum = nullptr;
        for (const HiftResBlock & rb : st.res) {
            ggml_tensor * r = resblock(ctx, x, rb);
            sum = sum ? ggml_add(ctx, sum, r) : r;
        }
        x = ggml_scale(ctx, sum, 1.0f / static_cast<float>(st.res.size()));
    }
    x = conv1d(ctx, ggml_leaky_relu(ctx, x, hp.post_lrelu_slope, false), m.conv_post());  // (F, n_fft + 2)

    // magnitude exp(.) clipped at magnitude_max, phase sin(.) (sic: the official head), to re / im
    const int64_t F = x->ne[0], nb = hp.n_bins();
    ggml_tensor * mag = ggml_exp(ctx, ggml_view_2d(ctx, x, F, nb, x->nb[1], 0));
    mag = ggml_clamp(ctx, mag, -FLT_MAX, hp.magnitude_max);
    ggml_tensor * phase = ggml_sin(ctx, ggml_view_2d(ctx, x, F, nb, x->nb[1], nb * x->nb[1]));
    ggml_tensor * re = ggml_mul(ctx, mag, ggml_cos(ctx, phase));
    ggml_tensor * im = ggml_mul(ctx, mag, ggml_sin(ctx, phase));
    ggml_tensor * wav = istft(ctx, m, ggml_concat(ctx, re, im, 1));
    wav = ggml_clamp(ctx, wav, -hp.audio_limit, hp.audio_limit);

    HiftDecoderOutputs out;
    out.audio = ggml_reshape_1d(ctx, wav, wav->ne[0]);
    out.source = src;
    return out;
}

size_t hift_graph_nodes(const HiftModel & m) {
    size_t units = 0;
    for (const auto & st : m.stages()) {
        units += st.src_res.size();
        for (const auto & rb : st.res) units += rb.size();
    }
    // a residual unit is ~25 nodes (2 Snakes, 2 convolutions, views and the residual add)
    return units * 32 + m.stages().size() * 48 + m.f0_convs().size() * 8 + 256;
}

}  // namespace minicpmo
