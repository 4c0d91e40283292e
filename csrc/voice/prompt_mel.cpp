#include "voice/prompt_mel.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <string>

#include "core/error.h"

namespace minicpmo {

namespace {

// Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per x6.4).
constexpr double kBreakHz = 1000.0;
constexpr double kMelPerHz = 3.0 / 200.0;
constexpr double kBreakMel = kBreakHz * kMelPerHz;
const double kLogStep = std::log(6.4) / 27.0;

double hz_to_mel(double hz) { return hz < kBreakHz ? hz * kMelPerHz : kBreakMel + std::log(hz / kBreakHz) / kLogStep; }
double mel_to_hz(double mel) { return mel < kBreakMel ? mel / kMelPerHz : kBreakHz * std::exp(kLogStep * (mel - kBreakMel)); }

constexpr double kMagnitudeEps = 1e-9;  // added under the square root, as the reference does
constexpr double kLogFloor = 1e-5;      // clamp before ln

}  // namespace

std::vector<double> slaney_mel_filters(int n_mel, int n_fft, int sample_rate, double f_min, double f_max) {
    const int n_bins = n_fft / 2 + 1;
    std::vector<double> corners(static_cast<size_t>(n_mel + 2));
    const double lo = hz_to_mel(f_min), hi = hz_to_mel(f_max);
    for (int i = 0; i < n_mel + 2; ++i) corners[i] = mel_to_hz(lo + (hi - lo) * i / (n_mel + 1));
    std::vector<double> w(static_cast<size_t>(n_mel) * n_bins);
    for (int b = 0; b < n_mel; ++b) {
        const double l = corners[b], c = corners[b + 1], r = corners[b + 2];
        for (int k = 0; k < n_bins; ++k) {
            const double f = static_cast<double>(sample_rate) / 2.0 * k / (n_bins - 1);
            const double tri = std::max(0.0, std::min((f - l) / (c - l), (r - f) / (r - c)));
            // rounded to float as librosa's (float32) filter bank is
            w[static_cast<size_t>(b) * n_bins + k] = static_cast<float>(tri * (2.0 / (r - l)));
        }
    }
    return w;
}

PromptMel::PromptMel(const PromptMelConfig & config)
    : config_(config), fft_(config.n_fft > 1 && config.n_fft <= 1 << 16 ? config.n_fft : 2) {
    const PromptMelConfig & c = config_;
    auto bad = [](const std::string & what) { fail(Status::bad_model, "prompt mel: " + what); };
    if (c.n_fft < 2 || c.n_fft > (1 << 16) || c.n_fft % 2) bad("n_fft must be even and in [2, 65536]");
    if (c.hop < 1 || c.hop > c.n_fft) bad("hop must lie in [1, n_fft]");
    if (c.n_mel < 1 || c.n_mel > 1024) bad("n_mel must lie in [1, 1024]");
    if (c.sample_rate < 1000 || c.sample_rate > 768000) bad("sample_rate must lie in [1000, 768000]");
    if (!(c.f_min >= 0 && c.f_min < c.f_max && c.f_max <= c.sample_rate / 2.0)) bad("need 0 <= f_min < f_max <= Nyquist");
    window_.resize(static_cast<size_t>(c.n_fft));
    for (int i = 0; i < c.n_fft; ++i) window_[i] = 0.5 - 0.5 * std::cos(2 * M_PI * i / c.n_fft);  // periodic Hann
    filters_ = slaney_mel_filters(c.n_mel, c.n_fft, c.sample_rate, c.f_min, c.f_max);
}

size_t PromptMel::n_frames(size_t n) const {
    const size_t pad = static_cast<size_t>((config_.n_fft - config_.hop) / 2);
    const size_t padded = n + 2 * pad;
    return padded < static_cast<size_t>(config_.n_fft) ? 0 : 1 + (padded - config_.n_fft) / config_.hop;
}

std::vector<float> PromptMel::compute(const float * pcm, size_t n) const {
    const PromptMelConfig & c = config_;
    const int64_t pad = (c.n_fft - c.hop) / 2;
    if (static_cast<int64_t>(n) <= pad) {
        fail(Status::invalid_argument, "audio too short for the prompt mel: needs more than " + std::to_string(pad) +
                                           " samples at " + std::to_string(c.sample_rate) + " Hz");
    }
    const int64_t len = static_cast<int64_t>(n);
    const size_t frames = n_frames(n);
    const int n_bins = c.n_fft / 2 + 1;
    std::vector<float> out(frames * static_cast<size_t>(c.n_mel));
    std::vector<double> frame(static_cast<size_t>(c.n_fft)), mag(static_cast<size_t>(n_bins));
    std::vector<std::complex<double>> spec(static_cast<size_t>(n_bins)), work(fft_.workspace_size());
    for (size_t t = 0; t < frames; ++t) {
        for (int i = 0; i < c.n_fft; ++i) {
            int64_t s = static_cast<int64_t>(t) * c.hop + i - pad;  // reflect (numpy "reflect": -1 -> 1)
            if (s < 0) s = -s;
            if (s >= len) s = 2 * (len - 1) - s;
            frame[i] = static_cast<double>(pcm[s]) * window_[i];
        }
        fft_.forward(frame.data(), spec.data(), work.data());
        for (int k = 0; k < n_bins; ++k) mag[k] = std::sqrt(std::norm(spec[k]) + kMagnitudeEps);
        for (int b = 0; b < c.n_mel; ++b) {
            const double * w = &filters_[static_cast<size_t>(b) * n_bins];
            double acc = 0;
            for (int k = 0; k < n_bins; ++k) acc += w[k] * mag[k];
            out[t * c.n_mel + b] = static_cast<float>(std::log(std::max(acc, kLogFloor)));
        }
    }
    return out;
}

std::vector<float> fit_mel_frames(std::vector<float> mel, int n_mel, size_t n_frames) {
    const size_t have = mel.size() / static_cast<size_t>(n_mel);
    if (have == 0) fail(Status::invalid_argument, "an empty prompt mel cannot be fitted");
    if (have >= n_frames) {
        mel.resize(n_frames * n_mel);
        return mel;
    }
    const std::vector<float> last(mel.end() - n_mel, mel.end());
    mel.reserve(n_frames * n_mel);
    for (size_t t = have; t < n_frames; ++t) mel.insert(mel.end(), last.begin(), last.end());
    return mel;
}

}  // namespace minicpmo
