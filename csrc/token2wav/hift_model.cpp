#include "token2wav/hift_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "core/compute_backend.h"
#include "core/error.h"
#include "core/graph_ops.h"

namespace minicpmo {

namespace {

using Use = GgufWeights::Use;

constexpr const char * kKey = "minicpmo.token2wav.";
constexpr int64_t kMaxChannels = 1 << 14;
constexpr int64_t kMaxKernel = 1024;

std::string key(const std::string & name) { return kKey + name; }

[[noreturn]] void bad(const GgufWeights & w, const std::string & what) {
    fail(Status::bad_model, "omni file '" + w.path() + "': HiFT " + what);
}

std::vector<int> int_array(const GgufWeights & w, const std::string & name, int64_t lo, int64_t hi) {
    const auto v = w.header().get_int_array(key(name).c_str());
    if (!v) fail(Status::bad_model, "omni file '" + w.path() + "' lacks the integer array key '" + key(name) + "'");
    if (v->empty()) bad(w, "key '" + key(name) + "' is an empty array");
    std::vector<int> out;
    for (int64_t x : *v) {
        if (x < lo || x > hi) {
            bad(w, "key '" + key(name) + "' holds " + std::to_string(x) + ", outside [" + std::to_string(lo) + ", " +
                       std::to_string(hi) + "]");
        }
        out.push_back(static_cast<int>(x));
    }
    return out;
}

// A flattened row-major table with one row of equal length per kernel.
std::vector<std::vector<int>> int_rows(const GgufWeights & w, const std::string & name, size_t n_rows) {
    const std::vector<int> flat = int_array(w, name, 1, kMaxKernel);
    if (flat.size() % n_rows) {
        bad(w, "key '" + key(name) + "' has " + std::to_string(flat.size()) + " values, not " + std::to_string(n_rows) +
                   " rows of equal length");
    }
    const size_t n = flat.size() / n_rows;
    std::vector<std::vector<int>> rows(n_rows);
    for (size_t r = 0; r < n_rows; ++r) rows[r].assign(flat.begin() + r * n, flat.begin() + (r + 1) * n);
    return rows;
}

float positive_float(const GgufWeights & w, const std::string & name) {
    const double v = w.require_float(key(name));
    if (!(v > 0.0) || !std::isfinite(v)) bad(w, "key '" + key(name) + "' must be a positive number");
    return static_cast<float>(v);
}

HiftHparams read_hparams(const GgufWeights & w) {
    const GgufHeader & h = w.header();
    HiftHparams hp;
    hp.sample_rate = static_cast<int>(w.require_int(key("sample_rate"), 1000, 768000));
    hp.n_mel = static_cast<int>(w.require_int(key("hift.in_channels"), 1, 1024));
    hp.base_channels = static_cast<int>(w.require_int(key("hift.base_channels"), 1, kMaxChannels));
    hp.nb_harmonics = static_cast<int>(w.require_int(key("hift.nb_harmonics"), 0, 255));
    hp.nsf_alpha = positive_float(w, "hift.nsf_alpha");
    hp.nsf_sigma = positive_float(w, "hift.nsf_sigma");
    hp.voiced_threshold = static_cast<float>(w.require_float(key("hift.voiced_threshold")));
    hp.up_rates = int_array(w, "hift.upsample_rates", 1, 64);
    hp.up_kernels = int_array(w, "hift.upsample_kernels", 1, kMaxKernel);
    hp.n_fft = static_cast<int>(w.require_int(key("hift.istft_n_fft"), 2, 4096));
    hp.hop = static_cast<int>(w.require_int(key("hift.istft_hop"), 1, 4096));
    hp.res_kernels = int_array(w, "hift.resblock_kernels", 1, kMaxKernel);
    hp.res_dilations = int_rows(w, "hift.resblock_dilations", hp.res_kernels.size());
    hp.src_kernels = int_array(w, "hift.source_resblock_kernels", 1, kMaxKernel);
    hp.src_dilations = int_rows(w, "hift.source_resblock_dilations", hp.src_kernels.size());
    hp.lrelu_slope = static_cast<float>(w.require_float(key("hift.lrelu_slope")));
    hp.post_lrelu_slope = static_cast<float>(w.require_float(key("hift.post_lrelu_slope")));
    hp.audio_limit = positive_float(w, "hift.audio_limit");
    hp.magnitude_max = positive_float(w, "hift.magnitude_max");
    hp.snake_eps = static_cast<float>(w.require_float(key("hift.snake_eps")));
    hp.f0_channels = static_cast<int>(w.require_int(key("hift.f0_channels"), 1, kMaxChannels));
    hp.f0_n_conv = static_cast<int>(w.require_int(key("hift.f0_n_conv"), 1, 64));
    hp.stream_mel_cache_frames = static_cast<int>(w.require_int(key("hift.stream_mel_cache_frames"), 1, 1024));
    hp.stream_source_cache_samples =
        static_cast<int>(w.require_int(key("hift.stream_source_cache_samples"), 1, 1 << 20));

    const int n = hp.n_stages();
    if (n > 8 || hp.up_kernels.size() != hp.up_rates.size() || hp.src_kernels.size() != hp.up_rates.size()) {
        bad(w, "needs one upsample kernel and one source resblock kernel per upsampling stage (at most 8 stages)");
    }
    for (int i = 0; i < n; ++i) {
        const int u = hp.up_rates[i], k = hp.up_kernels[i];
        if (k < u || (k - u) % 2) {
            bad(w, "upsample kernel " + std::to_string(k) + " with rate " + std::to_string(u) +
                       " needs k >= rate and an even k - rate (padding (k - rate) / 2)");
        }
    }
    if (hp.base_channels % (1 << n)) bad(w, "base_channels must be divisible by 2^(upsampling stages)");
    if (hp.n_fft % 2 || hp.hop > hp.n_fft) bad(w, "istft_n_fft must be even and istft_hop at most n_fft");
    for (const auto * ks : {&hp.res_kernels, &hp.src_kernels}) {
        for (int k : *ks) {
            if (k % 2 == 0) bad(w, "resblock kernels must be odd (same-length convolutions), got " + std::to_string(k));
        }
    }
    if (!(hp.snake_eps >= 0.0f) || !std::isfinite(hp.voiced_threshold) || !std::isfinite(hp.lrelu_slope) ||
        !std::isfinite(hp.post_lrelu_slope)) {
        bad(w, "snake_eps, voiced_threshold and the leaky-ReLU slopes must be finite (snake_eps >= 0)");
    }
    if (hp.stream_source_cache_samples != hp.stream_mel_cache_frames * hp.hop_samples()) {
        bad(w, "stream_source_cache_samples must equal stream_mel_cache_frames x samples per mel frame (" +
                   std::to_string(hp.stream_mel_cache_frames * hp.hop_samples()) + ")");
    }
    if (const auto mel_hop = h.get_int(key("mel_hop").c_str()); mel_hop && *mel_hop != hp.hop_samples()) {
        bad(w, "makes " + std::to_string(hp.hop_samples()) + " samples per mel frame but " + key("mel_hop") + " says " +
                   std::to_string(*mel_hop));
    }
    if (const auto n_mel = h.get_int(key("n_mel").c_str()); n_mel && *n_mel != hp.n_mel) {
        bad(w, "in_channels " + std::to_string(hp.n_mel) + " differs from " + key("n_mel"));
    }
    const std::string window = h.get_str(key("hift.crossfade_window").c_str()).value_or("hamming");
    if (window != "hamming") bad(w, "cross-fade window '" + window + "' is not supported (hamming only)");
    return hp;
}

// The tensor's values as float32 (F32 or F16 storage), read from wherever its buffer lives.
std::vector<float> host_floats(const ggml_tensor * t) {
    const int64_t n = ggml_nelements(t);
    std::vector<float> out(n);
    if (t->type == GGML_TYPE_F32) {
        ggml_backend_tensor_get(t, out.data(), 0, n * sizeof(float));
    } else if (t->type == GGML_TYPE_F16) {
        std::vector<ggml_fp16_t> half(n);
        ggml_backend_tensor_get(t, half.data(), 0, n * sizeof(ggml_fp16_t));
        ggml_fp16_to_fp32_row(half.data(), out.data(), n);
    } else {
        fail(Status::internal, std::string("HiFT: unexpected tensor type ") + ggml_type_name(t->type));
    }
    return out;
}

}  // namespace

int HiftHparams::hop_samples() const {
    int p = hop;
    for (int u : up_rates) p *= u;
    return p;
}

int HiftHparams::src_down_rate(int stage) const {
    int p = 1;
    for (int j = stage + 1; j < n_stages(); ++j) p *= up_rates[j];
    return p;
}

// Constants built on the host and uploaded to the compute device in one buffer.
class HiftModel::Builder {
public:
    Builder(ggml_context * ctx) : ctx_(ctx) {}
    ggml_tensor * add(std::vector<float> data, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1) {
        if (static_cast<int64_t>(data.size()) != ne0 * ne1 * ne2) fail(Status::internal, "HiFT: constant size mismatch");
        ggml_tensor * t = ggml_new_tensor_3d(ctx_, GGML_TYPE_F32, ne0, ne1, ne2);
        if (!t) fail(Status::internal, "HiFT: constants context is full");
        items_.emplace_back(t, std::move(data));
        return t;
    }
    void upload(ggml_backend_buffer_type_t buft, ggml_backend_buffer_t * buf) {
        *buf = ggml_backend_alloc_ctx_tensors_from_buft(ctx_, buft);
        if (!*buf) fail(Status::internal, "out of memory allocating the HiFT weights");
        ggml_backend_buffer_set_usage(*buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        for (auto & [t, data] : items_) ggml_backend_tensor_set(t, data.data(), 0, data.size() * sizeof(float));
        items_.clear();
    }

private:
    ggml_context * ctx_;
    std::vector<std::pair<ggml_tensor *, std::vector<float>>> items_;
};

HiftModel::HiftModel(const std::string & omni_path, ComputeDevice device, bool map_file) {
    // The file's tensors are staged in host memory and the graph gets float32 copies on the compute
    // device: HiFT computes in float32 whatever the file stores (an F16 file stores its kernels in
    // F16). Why: the vocoder is ill-conditioned where magnitudes saturate (the iSTFT cancels terms
    // of size 100 into samples below 1), so F16 activations (what F16 kernels compute with in
    // ggml) change samples by tens of percent there; the vocoder is small (~21 M parameters).
    GgufWeights w(omni_path, "omni file", std::vector<std::string>{"t2w.hift."}, weight_buffer_type(nullptr), map_file);
    path_ = w.path();
    w.require_component("token2wav", "speech output");
    hp_ = read_hparams(w);
    const HiftHparams & hp = hp_;

    ggml_init_params ip{};
    ip.mem_size = (w.n_tensors() * 2 + 16) * ggml_tensor_overhead();  // every file tensor + the derived ones
    ip.no_alloc = true;
    const_ctx_ = ggml_init(ip);
    if (!const_ctx_) fail(Status::internal, "cannot create the HiFT weights context");
    Builder B(const_ctx_);

    auto take = [&](const std::string & name, std::initializer_list<int64_t> ne, Use use) {
        const ggml_tensor * src = w.get(name, ne, use);
        return B.add(host_floats(src), src->ne[0], src->ne[1], src->ne[2]);
    };
    // Conv1d kernels re-laid as the matrices the graph's gathered taps multiply (tap_major_kernel;
    // hift_graph.cpp, conv1d)
    auto conv = [&](const std::string & name, int64_t c_out, int64_t c_in, int k) {
        const std::vector<float> wk = host_floats(w.get(name + ".weight", {k, c_in, c_out}, Use::table));
        std::vector<float> wm(wk.size());
        tap_major_kernel(wk.data(), wm.data(), k, c_in, c_out, sizeof(float));
        HiftConv c;
        c.w = B.add(std::move(wm), c_in * k, c_out);
        c.b = take(name + ".bias", {c_out}, Use::vector);
        c.taps.kernel = k;
        c.c_in = static_cast<int>(c_in);
        return c;
    };
    // Snake: alpha as (C, 1) so it broadcasts over time, and 1 / (alpha + eps) in float32
    auto snake = [&](const std::string & name, int64_t ch) {
        std::vector<float> a = host_floats(w.get(name, {ch}, Use::vector)), inv(ch);
        for (int64_t c = 0; c < ch; ++c) {
            if (!std::isfinite(a[c]) || a[c] + hp.snake_eps == 0.0f) bad(w, "Snake alpha '" + name + "' is zero or not finite");
            inv[c] = 1.0f / (a[c] + hp.snake_eps);
        }
        HiftSnake s;
        s.alpha = B.add(std::move(a), ch, 1);
        s.inv = B.add(std::move(inv), ch, 1);
        return s;
    };
    auto resblock = [&](const std::string & p, int ch, int k, const std::vector<int> & dilations) {
        HiftResBlock rb;
        for (size_t j = 0; j < dilations.size(); ++j) {
            const std::string s = std::to_string(j);
            HiftResUnit u;
            u.c1 = conv(p + ".c1." + s, ch, ch, k);
            u.c1.taps.dilation = dilations[j];
            u.c1.padding = (k * dilations[j] - dilations[j]) / 2;
            u.c2 = conv(p + ".c2." + s, ch, ch, k);
            u.c2.padding = (k - 1) / 2;
            u.a1 = snake(p + ".a1." + s + ".alpha", ch);
            u.a2 = snake(p + ".a2." + s + ".alpha", ch);
            rb.push_back(u);
        }
        return rb;
    };

    for (int j = 0; j < hp.f0_n_conv; ++j) {
        HiftConv c = conv("t2w.hift.f0.conv" + std::to_string(j), hp.f0_channels, j == 0 ? hp.n_mel : hp.f0_channels, 3);
        c.padding = 1;
        f0_convs_.push_back(c);
    }
    f0_proj_w_ = take("t2w.hift.f0.proj.weight", {hp.f0_channels, 1}, Use::table);
    f0_proj_b_ = take("t2w.hift.f0.proj.bias", {1}, Use::vector);
    source_w_ = take("t2w.hift.source.weight", {hp.n_harmonic_sines(), 1}, Use::table);
    source_b_ = take("t2w.hift.source.bias", {1}, Use::vector);
    conv_pre_ = conv("t2w.hift.conv_pre", hp.base_channels, hp.n_mel, 7);
    conv_pre_.padding = 3;
    weights_f32_ = w.get("t2w.hift.conv_pre.weight", {7, hp.n_mel, hp.base_channels}, Use::table)->type == GGML_TYPE_F32;

    const int nk = static_cast<int>(hp.res_kernels.size());
    for (int i = 0; i < hp.n_stages(); ++i) {
        HiftUpStage st;
        st.rate = hp.up_rates[i];
        st.kernel = hp.up_kernels[i];
        st.padding = (st.kernel - st.rate) / 2;
        st.c_in = i == 0 ? hp.base_channels : hp.channels(i - 1);
        st.c_out = hp.channels(i);
        // ConvTranspose1d as a matrix product needs the kernel with C_in contiguous: row (oc * K + k)
        // of ne (C_in, K * C_out) holds W[:, oc, k], the column order col2im_1d scatters
        const int64_t K = st.kernel, OC = st.c_out, IC = st.c_in;
        const std::vector<float> wk =
            host_floats(w.get("t2w.hift.up." + std::to_string(i) + ".weight", {K, OC, IC}, Use::table));
        std::vector<float> wt(wk.size());
        for (int64_t ci = 0; ci < IC; ++ci) {
            for (int64_t oc = 0; oc < OC; ++oc) {
                for (int64_t k = 0; k < K; ++k) wt[ci + IC * (oc * K + k)] = wk[k + K * (oc + OC * ci)];
            }
        }
        st.wt = B.add(std::move(wt), IC, K * OC);
        st.b = take("t2w.hift.up." + std::to_string(i) + ".bias", {OC}, Use::vector);
        const int u = hp.src_down_rate(i);
        st.src_down = conv("t2w.hift.src_down." + std::to_string(i), st.c_out, hp.n_spec(), u == 1 ? 1 : 2 * u);
        st.src_down.taps.stride = u;
        st.src_down.padding = u == 1 ? 0 : u / 2;
        st.src_res = resblock("t2w.hift.src_res." + std::to_string(i), st.c_out, hp.src_kernels[i], hp.src_dilations[i]);
        for (int j = 0; j < nk; ++j) {
            st.res.push_back(resblock("t2w.hift.res." + std::to_string(i * nk + j), st.c_out, hp.res_kernels[j],
                                      hp.res_dilations[j]));
        }
        stages_.push_back(std::move(st));
    }
    conv_post_ = conv("t2w.hift.conv_post", hp.n_spec(), hp.channels(hp.n_stages() - 1), 7);
    conv_post_.padding = 3;
    if (w.n_tensors() != n_taken_tensors()) {
        bad(w, "the file stores " + std::to_string(w.n_tensors()) + " t2w.hift tensors, its hyper-parameters describe " +
                   std::to_string(n_taken_tensors()));
    }

    // 16-point DFT bases with the periodic Hann window (scipy "hann", fftbins=True), rounded to
    // float32 as the official code stores it; basis products in double, rounded once
    const int N = hp.n_fft, nb = hp.n_bins();
    const double pi = 3.14159265358979323846;
    std::vector<double> win(N);
    for (int n = 0; n < N; ++n) win[n] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * pi * n / N));
    std::vector<float> fwd(static_cast<size_t>(N) * (N + 2)), inv(static_cast<size_t>(N + 2) * N), wsq(N);
    for (int k = 0; k < nb; ++k) {
        for (int n = 0; n < N; ++n) {
            const double ang = 2.0 * pi * static_cast<double>((k * n) % N) / N;  // k n mod N: exact angle
            fwd[n + static_cast<size_t>(N) * k] = static_cast<float>(win[n] * std::cos(ang));
            fwd[n + static_cast<size_t>(N) * (nb + k)] = static_cast<float>(-win[n] * std::sin(ang));
            // irfft: DC and Nyquist count once and their imaginary parts are ignored
            const bool edge = k == 0 || k == N / 2;
            const double coef = edge ? 1.0 : 2.0;
            inv[k + static_cast<size_t>(N + 2) * n] = static_cast<float>(coef * std::cos(ang) * win[n] / N);
            inv[nb + k + static_cast<size_t>(N + 2) * n] = edge ? 0.0f : static_cast<float>(-coef * std::sin(ang) * win[n] / N);
        }
    }
    for (int n = 0; n < N; ++n) wsq[n] = static_cast<float>(win[n] * win[n]);
    stft_basis_ = B.add(std::move(fwd), N, N + 2);
    istft_basis_ = B.add(std::move(inv), N + 2, N);
    window_sq_ = B.add(std::move(wsq), N, 1);

    B.upload(weight_buffer_type(device), &const_buf_);
}

HiftModel::~HiftModel() {
    if (const_buf_) ggml_backend_buffer_free(const_buf_);
    if (const_ctx_) ggml_free(const_ctx_);
}

size_t HiftModel::n_taken_tensors() const {
    size_t n = 2 * f0_convs_.size() + 4 + 2 + 2;  // f0 convs, f0 proj + source merge, conv_pre, conv_post
    for (const auto & st : stages_) {
        n += 2 + 2 + 6 * st.src_res.size();       // up, src_down, src_res units (2 convs, 2 alphas)
        for (const auto & rb : st.res) n += 6 * rb.size();
    }
    return n;
}

}  // namespace minicpmo
