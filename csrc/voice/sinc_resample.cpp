#include "voice/sinc_resample.h"

#include <cmath>
#include <numeric>
#include <string>

#include "core/error.h"

namespace minicpmo {

namespace {
constexpr int kWidthZeros = 6;      // zero crossings of the windowed sinc on each side
constexpr double kRolloff = 0.99;   // band edge as a fraction of the lower Nyquist rate
constexpr int kMaxRate = 768000;
}  // namespace

std::vector<float> sinc_hann_resample(const float * x, size_t n, int orig_rate, int new_rate) {
    if (orig_rate < 1 || orig_rate > kMaxRate || new_rate < 1 || new_rate > kMaxRate) {
        fail(Status::invalid_argument, "sample rates must lie in [1, " + std::to_string(kMaxRate) + "], got " +
                                           std::to_string(orig_rate) + " -> " + std::to_string(new_rate));
    }
    if (orig_rate == new_rate) return std::vector<float>(x, x + n);
    const int g = std::gcd(orig_rate, new_rate);
    const int64_t o = orig_rate / g, m = new_rate / g;
    const double base = static_cast<double>(std::min(o, m)) * kRolloff;
    const int64_t width = static_cast<int64_t>(std::ceil(kWidthZeros * static_cast<double>(o) / base));
    const int64_t taps = 2 * width + o;
    // kernels[j][i]: weight of input sample k*o - width + i for output phase j
    std::vector<double> kernels(static_cast<size_t>(m * taps));
    for (int64_t j = 0; j < m; ++j) {
        for (int64_t i = 0; i < taps; ++i) {
            double t = (-static_cast<double>(j) / m + static_cast<double>(i - width) / o) * base;
            t = std::min(std::max(t, -static_cast<double>(kWidthZeros)), static_cast<double>(kWidthZeros));
            const double w = std::cos(t * M_PI / kWidthZeros / 2);
            const double s = t == 0 ? 1.0 : std::sin(t * M_PI) / (t * M_PI);
            kernels[static_cast<size_t>(j * taps + i)] = s * w * w * (base / o);
        }
    }
    const int64_t len = static_cast<int64_t>(n);
    const int64_t n_out = (len * m + o - 1) / o;
    std::vector<float> out(static_cast<size_t>(n_out));
    for (int64_t idx = 0; idx < n_out; ++idx) {
        const int64_t k = idx / m, j = idx % m;
        const int64_t start = k * o - width;  // input index of tap 0
        const double * kern = &kernels[static_cast<size_t>(j * taps)];
        const int64_t i0 = std::max<int64_t>(0, -start), i1 = std::min<int64_t>(taps, len - start);
        double acc = 0;
        for (int64_t i = i0; i < i1; ++i) acc += kern[i] * x[start + i];
        out[static_cast<size_t>(idx)] = static_cast<float>(acc);
    }
    return out;
}

}  // namespace minicpmo
