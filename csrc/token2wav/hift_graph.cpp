#include "token2wav/hift_graph.h"

#include <cfloat>

#include "core/conv1d_node.h"
#include "core/error.h"
#include "core/graph_ops.h"
#include "token2wav/hift_snake.h"

namespace minicpmo {

namespace {

// The activations are channel-major, ne (C, T): a time step's channels are contiguous, so the
// inputs of one output step of a convolution are K runs of C_in floats.

// Zero padding of `before` / `after` time steps
ggml_tensor * pad_time(ggml_context * ctx, ggml_tensor * x, int before, int after) {
    return before == 0 && after == 0 ? x : ggml_pad_ext(ctx, x, 0, 0, before, after, 0, 0, 0, 0);
}

// ne (C, T) <-> ne (T, C)
ggml_tensor * transposed(ggml_context * ctx, ggml_tensor * x) { return ggml_cont(ctx, ggml_transpose(ctx, x)); }

// Conv1d on xp ne (C_in, T) already zero-padded by c.padding on both sides, with stride and
// dilation, all F32 (HiftModel keeps every weight in F32). With `nodes` (the oneDNN backend is there)
// one conv1d node (core/conv1d_node); else the K taps of every output step gathered into one row ne
// (C_in * K) (copies of whole channel runs), then one matrix product with the kernel ne (C_in * K,
// C_out). The result ne (C_out, T_out) is channel-major again.
ggml_tensor * conv1d_padded(ggml_context * ctx, ggml_tensor * xp, const HiftConv & c, bool nodes) {
    if (nodes) return conv1d_node(ctx, xp, c.w, c.b, &c.taps);
    const Conv1dShape & s = c.taps;
    const int64_t C = xp->ne[0], T_out = conv1d_output_steps(s, xp->ne[1]);
    ggml_tensor * cols = ggml_cont(ctx, conv_taps(ctx, xp, s.kernel, s.dilation, s.stride, T_out));
    cols = ggml_reshape_2d(ctx, cols, C * s.kernel, T_out);
    return ggml_add(ctx, ggml_mul_mat(ctx, c.w, cols), c.b);
}

ggml_tensor * conv1d(ggml_context * ctx, ggml_tensor * x, const HiftConv & c, bool nodes) {
    return conv1d_padded(ctx, pad_time(ctx, x, c.padding, c.padding), c, nodes);
}

// ConvTranspose1d (torch semantics, padding p cropped from both ends) of x ne (C_in, T): every input
// step times the kernel gives K * C_out columns, which col2im_1d overlap-adds at stride `rate` into
// ne (T_out, C_out), time-major (its layout); `reflect_first` then prepends x[1] (ReflectionPad1d((1, 0))).
ggml_tensor * conv_transpose1d(ggml_context * ctx, ggml_tensor * x, const HiftUpStage & st, bool reflect_first) {
    ggml_tensor * cols = ggml_mul_mat(ctx, st.wt, x);  // (K * C_out, T)
    ggml_tensor * y = ggml_col2im_1d(ctx, cols, st.rate, st.c_out, st.padding);  // (T_out, C_out)
    if (reflect_first) y = ggml_pad_reflect_1d(ctx, y, 1, 0);
    return ggml_add(ctx, transposed(ctx, y), st.b);
}

// Snake, then the convolution it feeds (hift_snake.h makes both Snake and the padding one node on the CPU)
ggml_tensor * snake_conv1d(ggml_context * ctx, ggml_tensor * x, const HiftSnake & s, const HiftConv & c, bool nodes) {
    return conv1d_padded(ctx, hift_padded_snake(ctx, x, s.alpha, s.inv, c.padding), c, nodes);
}

ggml_tensor * resblock(ggml_context * ctx, ggml_tensor * x, const HiftResBlock & rb, bool nodes) {
    for (const HiftResUnit & u : rb) {
        ggml_tensor * t = snake_conv1d(ctx, x, u.a1, u.c1, nodes);
        t = snake_conv1d(ctx, t, u.a2, u.c2, nodes);
        x = ggml_add(ctx, t, x);
    }
    return x;
}

// torch.stft(n_fft, hop, periodic Hann, center=True with reflect padding, onesided) of a 1-D
// signal as a strided convolution with the windowed DFT basis: ne (n_fft + 2, frames), real
// parts then imaginary parts.
ggml_tensor * stft(ggml_context * ctx, const HiftModel & m, ggml_tensor * signal) {
    const HiftHparams & hp = m.hparams();
    ggml_tensor * s = ggml_reshape_2d(ctx, signal, signal->ne[0], 1);
    s = ggml_pad_reflect_1d(ctx, s, hp.n_fft / 2, hp.n_fft / 2);
    // the window tensor has the kernel's shape ne (n_fft, 1) im2col wants
    ggml_tensor * cols = ggml_im2col(ctx, m.window_sq(), s, hp.hop, 0, 0, 0, 1, 0, false, GGML_TYPE_F32);
    cols = ggml_reshape_2d(ctx, cols, cols->ne[0], cols->ne[1]);  // (n_fft, frames)
    return ggml_mul_mat(ctx, m.stft_basis(), cols);
}

// torch.istft(n_fft, hop, periodic Hann, center=True) of ne (n_fft + 2, frames) [re | im]: inverse
// real DFT x window per frame (one matrix product), overlap-add (col2im_1d), division by the
// overlap-added squared window, n_fft / 2 samples dropped at both ends.
ggml_tensor * istft(ggml_context * ctx, const HiftModel & m, ggml_tensor * spec) {
    const HiftHparams & hp = m.hparams();
    ggml_tensor * frames = ggml_mul_mat(ctx, m.istft_basis(), spec);  // (N, F)
    ggml_tensor * y = ggml_col2im_1d(ctx, frames, hp.hop, 1, hp.n_fft / 2);
    ggml_tensor * env = ggml_col2im_1d(ctx, ggml_repeat(ctx, m.window_sq(), frames), hp.hop, 1, hp.n_fft / 2);
    return ggml_div(ctx, y, env);
}

}  // namespace

ggml_tensor * build_hift_f0(ggml_context * ctx, const HiftModel & m, ggml_tensor * mel, bool conv_nodes) {
    ggml_tensor * x = transposed(ctx, mel);  // (n_mel, T)
    for (const HiftConv & c : m.f0_convs()) x = ggml_elu(ctx, conv1d(ctx, x, c, conv_nodes));
    ggml_tensor * f0 = ggml_add(ctx, ggml_mul_mat(ctx, m.f0_proj_w(), x), m.f0_proj_b());  // (1, T)
    return ggml_abs(ctx, f0);
}

HiftDecoderOutputs build_hift_decoder(ggml_context * ctx, const HiftModel & m, ggml_tensor * mel, ggml_tensor * sines,
                                      ggml_tensor * cache_source, bool conv_nodes) {
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

    ggml_tensor * x = conv1d(ctx, transposed(ctx, mel), m.conv_pre(), conv_nodes);  // (C, T)
    const auto & stages = m.stages();
    for (size_t i = 0; i < stages.size(); ++i) {
        const HiftUpStage & st = stages[i];
        x = conv_transpose1d(ctx, ggml_leaky_relu(ctx, x, hp.lrelu_slope, false), st, i + 1 == stages.size());
        x = ggml_add(ctx, x, resblock(ctx, conv1d(ctx, spec, st.src_down, conv_nodes), st.src_res, conv_nodes));
        ggml_tensor * sum = nullptr;
        for (const HiftResBlock & rb : st.res) {
            ggml_tensor * r = resblock(ctx, x, rb, conv_nodes);
            sum = sum ? ggml_add(ctx, sum, r) : r;
        }
        x = ggml_scale(ctx, sum, 1.0f / static_cast<float>(st.res.size()));
    }
    x = conv1d(ctx, ggml_leaky_relu(ctx, x, hp.post_lrelu_slope, false), m.conv_post(), conv_nodes);  // (n_fft + 2, F)

    // magnitude exp(.) clipped at magnitude_max, phase sin(.) (sic: the official head), to re / im
    const int64_t F = x->ne[1], nb = hp.n_bins();
    ggml_tensor * mag = ggml_exp(ctx, ggml_cont(ctx, ggml_view_2d(ctx, x, nb, F, x->nb[1], 0)));
    mag = ggml_clamp(ctx, mag, -FLT_MAX, hp.magnitude_max);
    ggml_tensor * phase = ggml_sin(ctx, ggml_cont(ctx, ggml_view_2d(ctx, x, nb, F, x->nb[1], nb * x->nb[0])));
    ggml_tensor * re = ggml_mul(ctx, mag, ggml_cos(ctx, phase));
    ggml_tensor * im = ggml_mul(ctx, mag, ggml_sin(ctx, phase));
    ggml_tensor * wav = istft(ctx, m, ggml_concat(ctx, re, im, 0));
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
