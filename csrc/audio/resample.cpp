#include "audio/resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "audio/pcm_checks.h"
#include "core/error.h"

namespace minicpmo {

namespace {

// Filter specification (see resample.h). The Kaiser formulas (Kaiser 1974, as in Oppenheim &
// Schafer §7.5.3) turn it into a window shape beta and a length.
constexpr double kStopbandDb = 100.0;
constexpr double kPassbandEnd = 0.91;   // x lower Nyquist: end of the flat band
constexpr double kStopbandStart = 1.0;  // x lower Nyquist: nothing at or above it survives (>= 100 dB)

// Memory bound of a coefficient table (floats). A reduced ratio with many phases (an odd rate such
// as 44101 Hz) would need more; it then uses a finer grid of phases and interpolates (below).
constexpr size_t kMaxTableCoeffs = size_t(1) << 23;  // 32 MB
constexpr int64_t kMaxExactPhases = 4096;
constexpr int64_t kGridPhases = 4096;  // grid of the interpolated table: error below 1e-7
constexpr int64_t kMinGridPhases = 16;  // the coarsest grid used (longest filters)

const double kPi = 3.14159265358979323846;

// Modified Bessel function of the first kind, order 0 (power series; converges fast for x <= 30).
double bessel_i0(double x) {
    const double q = x * x / 4.0;
    double term = 1.0, sum = 1.0;
    for (int k = 1; k < 200; ++k) {
        term *= q / (double(k) * double(k));
        sum += term;
        if (term < sum * 1e-17) break;
    }
    return sum;
}

struct FilterDesign {
    double cutoff = 0.0;  // cycles per input sample: middle of the transition band
    double beta = 0.0;    // Kaiser window shape
    int64_t half = 0;     // the kernel is zero for |t| >= half (t in input samples)
    double i0_beta = 1.0;
};

FilterDesign design_filter(int in_rate, int out_rate) {
    const double nyquist_low = 0.5 * double(std::min(in_rate, out_rate));
    const double pass = kPassbandEnd * nyquist_low;
    const double stop = kStopbandStart * nyquist_low;
    const double transition = (stop - pass) / double(in_rate);  // cycles per input sample
    FilterDesign d;
    d.cutoff = 0.5 * (pass + stop) / double(in_rate);
    d.beta = 0.1102 * (kStopbandDb - 8.7);
    const double order = (kStopbandDb - 7.95) / (2.285 * 2.0 * kPi * transition);
    d.half = int64_t(std::ceil(order / 2.0));
    d.i0_beta = bessel_i0(d.beta);
    return d;
}

// The continuous kernel: a Kaiser-windowed ideal low-pass at `cutoff`, t in input samples.
double kernel(const FilterDesign & d, double t) {
    const double h = double(d.half);
    if (std::fabs(t) >= h) return 0.0;
    const double x = 2.0 * d.cutoff * t;
    const double sinc = x == 0.0 ? 1.0 : std::sin(kPi * x) / (kPi * x);
    const double r = t / h;
    return 2.0 * d.cutoff * sinc * bessel_i0(d.beta * std::sqrt(1.0 - r * r)) / d.i0_beta;
}

// One row of taps for an output that lies `frac` (0 <= frac <= 1) input samples after input
// sample i: tap j (0 <= j < 2*half) multiplies input i - half + 1 + j. Rows are scaled to sum to 1
// so a constant signal stays exactly constant (no DC gain error from the window).
void fill_row(const FilterDesign & d, double frac, float * row) {
    const int64_t taps = 2 * d.half;
    std::vector<double> c(static_cast<size_t>(taps), 0.0);
    double sum = 0.0;
    for (int64_t j = 0; j < taps; ++j) {
        c[size_t(j)] = kernel(d, frac - double(j - d.half + 1));
        sum += c[size_t(j)];
    }
    for (int64_t j = 0; j < taps; ++j) row[j] = float(c[size_t(j)] / sum);
}

// Dot product with eight independent partial sums: a fixed order (deterministic) that compilers can
// still vectorise.
float dot(const float * a, const float * b, size_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int l = 0; l < 8; ++l) acc[l] += a[i + size_t(l)] * b[i + size_t(l)];
    }
    float tail = 0.0f;
    for (; i < n; ++i) tail += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

// Taps of one output against input starting at `first` (may lie before 0 or run past the end:
// those samples are zeros).
float apply_row(const float * row, int64_t taps, const float * pcm, int64_t n_in, int64_t first) {
    if (first >= 0 && first + taps <= n_in) return dot(row, pcm + first, size_t(taps));
    const int64_t j0 = std::max<int64_t>(0, -first);
    const int64_t j1 = std::min<int64_t>(taps, n_in - first);
    if (j1 <= j0) return 0.0f;
    return dot(row + j0, pcm + first + j0, size_t(j1 - j0));
}

std::string rate_text(int rate) { return std::to_string(rate) + " Hz"; }

// The coefficient table resample_pcm builds for a pair of (valid, different) rates.
struct TablePlan {
    FilterDesign design;
    int64_t up = 0, down = 0;  // the reduced ratio: output n lies at input n * down / up
    int64_t taps = 0;
    bool exact = false;  // one row per phase of the ratio; else rows on a grid, interpolated
    int64_t rows = 0;    // rows of `taps` coefficients
};

TablePlan plan_table(int in_rate, int out_rate) {
    TablePlan t;
    const int64_t g = std::gcd(in_rate, out_rate);
    t.up = out_rate / g;
    t.down = in_rate / g;
    t.design = design_filter(in_rate, out_rate);
    t.taps = 2 * t.design.half;
    // the filter grows with the rate ratio: refuse before allocating rather than take gigabytes
    // (768 kHz -> 1 Hz would need 1e8 taps x 17 rows, 7 GB); ratios up to about 1:3400 pass
    if (size_t(t.taps) > kMaxTableCoeffs / size_t(kMinGridPhases + 1)) {
        fail(Status::invalid_argument, "resample: " + rate_text(in_rate) + " -> " + rate_text(out_rate) +
                                           ": the rates are too far apart (the filter would need " +
                                           std::to_string(t.taps) + " taps, at most " +
                                           std::to_string(kMaxTableCoeffs / size_t(kMinGridPhases + 1)) + " are built)");
    }
    t.exact = t.up <= kMaxExactPhases && size_t(t.up) * size_t(t.taps) <= kMaxTableCoeffs;
    t.rows = t.exact ? t.up
                     : 1 + std::max<int64_t>(kMinGridPhases,
                                             std::min<int64_t>(kGridPhases, int64_t(kMaxTableCoeffs / size_t(t.taps)) - 1));
    return t;
}

}  // namespace

void validate_sample_rate(int rate, const char * what) {
    if (rate <= 0 || rate > kMaxAudioSampleRate) {
        fail(Status::invalid_argument, std::string(what) + " " + std::to_string(rate) +
                                           " Hz is not a usable sample rate (expected 1 .. " +
                                           std::to_string(kMaxAudioSampleRate) + " Hz)");
    }
}

size_t resampled_length(size_t n_in, int in_rate, int out_rate) {
    validate_sample_rate(in_rate, "input rate");
    validate_sample_rate(out_rate, "output rate");
    const uint64_t g = uint64_t(std::gcd(in_rate, out_rate));
    const uint64_t up = uint64_t(out_rate) / g, down = uint64_t(in_rate) / g;
    const uint64_t max64 = std::numeric_limits<uint64_t>::max();
    if (uint64_t(n_in) > (max64 - (down - 1)) / up) {
        fail(Status::invalid_argument, "resample: " + std::to_string(n_in) + " samples at " + rate_text(in_rate) +
                                           " give more output samples than can be addressed");
    }
    const uint64_t n_out = (uint64_t(n_in) * up + down - 1) / down;
    if (n_out > uint64_t(std::numeric_limits<int64_t>::max() / int64_t(sizeof(float))) ||
        n_out > uint64_t(std::numeric_limits<size_t>::max() / sizeof(float))) {
        fail(Status::invalid_argument, "resample: " + std::to_string(n_out) + " output samples are too many");
    }
    return size_t(n_out);
}

std::vector<float> mix_to_mono(const float * interleaved, size_t n_frames, int n_channels) {
    if (n_channels < 1 || n_channels > kMaxAudioChannels) {
        fail(Status::invalid_argument, "mix_to_mono: " + std::to_string(n_channels) +
                                           " channels is not a usable channel count (expected 1 .. " +
                                           std::to_string(kMaxAudioChannels) + ")");
    }
    if (n_frames == 0) fail(Status::invalid_argument, "mix_to_mono: the audio is empty (0 frames)");
    if (n_frames > std::numeric_limits<size_t>::max() / sizeof(float) / size_t(n_channels)) {
        fail(Status::invalid_argument, "mix_to_mono: " + std::to_string(n_frames) + " frames of " +
                                           std::to_string(n_channels) + " channels are too many");
    }
    const size_t channels = size_t(n_channels);
    for (size_t i = 0; i < n_frames * channels; ++i) {
        if (!std::isfinite(interleaved[i])) {
            fail(Status::invalid_argument, "mix_to_mono: frame " + std::to_string(i / channels) + ", channel " +
                                               std::to_string(i % channels) + " is " +
                                               (std::isnan(interleaved[i]) ? "NaN" : "infinite") +
                                               " (audio samples must be finite numbers)");
        }
    }
    if (channels == 1) return std::vector<float>(interleaved, interleaved + n_frames);
    std::vector<float> mono(n_frames);
    for (size_t i = 0; i < n_frames; ++i) {
        // a double sum of a few audio floats is exact, so the mean is rounded once, to float
        double sum = 0.0;
        for (size_t c = 0; c < channels; ++c) sum += double(interleaved[i * channels + c]);
        mono[i] = float(sum / double(n_channels));
    }
    return mono;
}

std::vector<float> resample_pcm(const float * pcm, size_t n, int in_rate, int out_rate) {
    validate_sample_rate(in_rate, "resample: input rate");
    validate_sample_rate(out_rate, "resample: output rate");
    if (n == 0) fail(Status::invalid_argument, "resample: the audio is empty (0 samples)");
    require_finite_pcm(pcm, n, "resample");
    if (in_rate == out_rate) return std::vector<float>(pcm, pcm + n);  // bit-exact passthrough

    const size_t n_out = resampled_length(n, in_rate, out_rate);
    if (n > size_t(std::numeric_limits<int64_t>::max() / 2)) {
        fail(Status::invalid_argument, "resample: " + std::to_string(n) + " input samples are too many");
    }
    const TablePlan plan = plan_table(in_rate, out_rate);
    const FilterDesign & d = plan.design;
    const int64_t up = plan.up, down = plan.down, taps = plan.taps;
    const int64_t n_in = int64_t(n);

    std::vector<float> out(n_out);
    // position of output k: input index i + phase / up, advanced by down / up per output
    const int64_t step_int = down / up, step_frac = down % up;

    if (plan.exact) {
        // exact polyphase: one row per phase p/up of the reduced ratio
        std::vector<float> table(size_t(up) * size_t(taps));
        for (int64_t p = 0; p < up; ++p) fill_row(d, double(p) / double(up), &table[size_t(p * taps)]);
        int64_t i = 0, p = 0;
        for (size_t k = 0; k < n_out; ++k) {
            out[k] = apply_row(&table[size_t(p * taps)], taps, pcm, n_in, i - d.half + 1);
            i += step_int;
            p += step_frac;
            if (p >= up) {
                p -= up;
                ++i;
            }
        }
        return out;
    }

    // Too many phases for one row each: rows on a grid of `grid` phases per input sample, linearly
    // interpolated. The kernel is smooth on that scale (its bandwidth is at most half a cycle per
    // input sample), so the interpolation error is below (pi / grid)^2 / 8 of the largest coefficient.
    const int64_t grid = plan.rows - 1;
    std::vector<float> table(size_t(grid + 1) * size_t(taps));
    for (int64_t q = 0; q <= grid; ++q) fill_row(d, double(q) / double(grid), &table[size_t(q * taps)]);
    std::vector<float> row(static_cast<size_t>(taps));
    int64_t i = 0, p = 0;
    for (size_t k = 0; k < n_out; ++k) {
        const double pos = double(p) / double(up) * double(grid);
        const int64_t q = std::min<int64_t>(int64_t(pos), grid - 1);
        const float a = float(pos - double(q));
        const float * r0 = &table[size_t(q * taps)];
        const float * r1 = r0 + taps;
        for (int64_t j = 0; j < taps; ++j) row[size_t(j)] = r0[j] + a * (r1[j] - r0[j]);
        out[k] = apply_row(row.data(), taps, pcm, n_in, i - d.half + 1);
        i += step_int;
        p += step_frac;
        if (p >= up) {
            p -= up;
            ++i;
        }
    }
    return out;
}

size_t resample_table_coeffs(int in_rate, int out_rate) {
    validate_sample_rate(in_rate, "resample: input rate");
    validate_sample_rate(out_rate, "resample: output rate");
    if (in_rate == out_rate) return 0;
    const TablePlan plan = plan_table(in_rate, out_rate);
    return size_t(plan.rows) * size_t(plan.taps);
}

}  // namespace minicpmo
