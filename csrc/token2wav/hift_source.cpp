// Compiled with -ffp-contract=off: every float32 operation below is rounded on its own, as numpy
// does; the fused multiply-adds of torch's interpolation are written out explicitly (in double,
// where the product of two floats is exact).
#include "token2wav/hift_source.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/uniform_random.h"

namespace minicpmo {

namespace {

// fma(a, b, c) rounded once to float32, as torch's interpolation kernel computes it (the product of
// two floats is exact in double, so only the sum rounds before the final rounding to float)
float fma_f32(float a, float b, float c) {
    return static_cast<float>(static_cast<double>(a) * static_cast<double>(b) + static_cast<double>(c));
}

// F.interpolate(mode="linear", align_corners=False, scale_factor=s) along time of a (n_in x width)
// sample-major array given by `row(i, k)`; float32 arithmetic of torch's CPU kernel.
template <typename Row>
std::vector<float> linear_interp(Row row, int64_t n_in, int width, double scale_factor, int64_t n_out_expected) {
    const int64_t n_out = static_cast<int64_t>(std::floor(static_cast<double>(n_in) * scale_factor));
    if (n_out != n_out_expected) fail(Status::internal, "HiFT source: unexpected interpolation length");
    const float scale = static_cast<float>(1.0 / scale_factor);
    std::vector<float> out(static_cast<size_t>(n_out) * width);
    for (int64_t j = 0; j < n_out; ++j) {
        const float dst = static_cast<float>(j) + 0.5f;
        float src = std::max(fma_f32(scale, dst, -0.5f), 0.0f);
        const int64_t i0 = std::min(static_cast<int64_t>(std::floor(src)), n_in - 1);
        const int64_t i1 = std::min(i0 + 1, n_in - 1);
        const float lam1 = std::clamp(src - static_cast<float>(i0), 0.0f, 1.0f);
        const float lam0 = 1.0f - lam1;
        for (int k = 0; k < width; ++k) {
            const float b = lam1 * row(i1, k);
            out[static_cast<size_t>(j) * width + k] = fma_f32(lam0, row(i0, k), b);
        }
    }
    return out;
}

}  // namespace

HiftSourceRandom HiftSourceRng::draw(int n_sines, int64_t n_samples) {
    HiftSourceRandom r;
    // the same numbers on every platform (core/uniform_random.h)
    r.phases.resize(n_sines);
    for (float & p : r.phases) p = static_cast<float>(uniform_unit(gen_()));
    r.noise.resize(static_cast<size_t>(n_samples) * n_sines);
    standard_normals(gen_, r.noise.data(), r.noise.size());
    return r;
}

std::vector<float> hift_sine_excitation(const HiftHparams & hp, const float * f0, int n_frames,
                                        const HiftSourceRandom & random) {
    const int nh = hp.n_harmonic_sines();
    const int up = hp.hop_samples();
    const int64_t L = static_cast<int64_t>(n_frames) * up;
    if (n_frames <= 0) fail(Status::invalid_argument, "HiFT source: no frames");
    if (random.phases.size() != static_cast<size_t>(nh)) {
        fail(Status::invalid_argument, "HiFT source phases must hold " + std::to_string(nh) + " values, got " +
                                           std::to_string(random.phases.size()));
    }
    if (random.noise.size() != static_cast<size_t>(L) * nh) {
        fail(Status::invalid_argument, "HiFT source noise must hold " + std::to_string(L) + " x " + std::to_string(nh) +
                                           " values, got " + std::to_string(random.noise.size()));
    }
    for (int t = 0; t < n_frames; ++t) {
        if (!std::isfinite(f0[t])) fail(Status::invalid_argument, "HiFT F0 predictor produced a non-finite value");
    }
    for (size_t i = 0; i < random.noise.size(); ++i) {
        if (!std::isfinite(random.noise[i])) fail(Status::invalid_argument, "HiFT source noise contains non-finite values");
    }
    for (float p : random.phases) {
        if (!std::isfinite(p)) fail(Status::invalid_argument, "HiFT source phases contain non-finite values");
    }
    const float sr = static_cast<float>(hp.sample_rate);

    // per-sample phase increment in cycles of harmonic k: (f0 (k+1) / sr) mod 1, with the random
    // initial phases added to sample 0 for k >= 1 (F0 is upsampled by repetition)
    auto rad = [&](int64_t s, int k) {
        const float fn = f0[s / up] * static_cast<float>(k + 1);
        float r = std::fmod(fn / sr, 1.0f);
        if (s == 0 && k > 0) r = r + random.phases[k];
        return r;
    };
    // down to frame rate (linear, x 1/up), running sum in double, x 2 pi, back up (linear, x up)
    const std::vector<float> rad_d = linear_interp(rad, L, nh, 1.0 / up, n_frames);
    std::vector<float> phase(static_cast<size_t>(n_frames) * nh);
    const float pi_f = static_cast<float>(3.14159265358979323846);
    for (int k = 0; k < nh; ++k) {
        double acc = 0.0;
        for (int t = 0; t < n_frames; ++t) {
            acc += rad_d[static_cast<size_t>(t) * nh + k];
            const float p = static_cast<float>(acc) * 2.0f * pi_f;
            phase[static_cast<size_t>(t) * nh + k] = p * static_cast<float>(up);
        }
    }
    auto phase_row = [&](int64_t t, int k) { return phase[static_cast<size_t>(t) * nh + k]; };
    std::vector<float> out = linear_interp(phase_row, n_frames, nh, static_cast<double>(up), L);

    const float alpha = hp.nsf_alpha, sigma = hp.nsf_sigma, thr = hp.voiced_threshold;
    const float unvoiced_amp = (1.0f * alpha) / 3.0f;
    for (int64_t s = 0; s < L; ++s) {
        const bool voiced = f0[s / up] > thr;
        const float uv = voiced ? 1.0f : 0.0f;
        const float amp = voiced ? sigma : unvoiced_amp;
        for (int k = 0; k < nh; ++k) {
            float & v = out[static_cast<size_t>(s) * nh + k];
            // sin of the float32 phase, evaluated in double and rounded once
            const float sine = static_cast<float>(std::sin(static_cast<double>(v))) * alpha;
            const float a = sine * uv;
            const float b = amp * random.noise[static_cast<size_t>(s) * nh + k];
            v = a + b;
        }
    }
    return out;
}

}  // namespace minicpmo
