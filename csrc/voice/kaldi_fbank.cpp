#include "voice/kaldi_fbank.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <limits>
#include <string>

#include "audio/pcm_checks.h"
#include "core/error.h"

namespace minicpmo {

namespace {

constexpr double kPi = 3.14159265358979323846;

int next_pow2(int n) {
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

double kaldi_mel(double hz) { return 1127.0 * std::log1p(hz / 700.0); }

void check_config(const KaldiFbankConfig & c) {
    auto bad = [](const std::string & what) { fail(Status::invalid_argument, "Kaldi fbank: " + what); };
    if (c.sample_rate < 1000 || c.sample_rate > 768000) bad("sample_rate must lie in [1000, 768000]");
    if (c.n_mel < 1 || c.n_mel > 1024) bad("n_mel must lie in [1, 1024]");
    if (!(c.frame_ms > 0.0 && c.frame_ms <= 1000.0)) bad("frame_ms must lie in (0, 1000]");
    if (!(c.shift_ms > 0.0 && c.shift_ms <= c.frame_ms)) bad("shift_ms must lie in (0, frame_ms]");
    if (!(c.low_hz >= 0.0 && c.low_hz < c.sample_rate / 2.0)) bad("low_hz must lie in [0, Nyquist)");
    if (!(c.preemph >= 0.0 && c.preemph <= 1.0)) bad("preemph must lie in [0, 1]");
}

}  // namespace

KaldiFbank::KaldiFbank(const KaldiFbankConfig & config)
    : config_((check_config(config), config)),
      frame_len_(static_cast<int>(config.sample_rate * config.frame_ms / 1000.0)),
      shift_(static_cast<int>(config.sample_rate * config.shift_ms / 1000.0)),
      n_fft_(next_pow2(std::max(frame_len_, 2))),
      fft_(static_cast<size_t>(n_fft_)) {
    if (frame_len_ < 2 || shift_ < 1) fail(Status::invalid_argument, "Kaldi fbank: frame or shift shorter than a sample");
    // povey window: the symmetric Hann window to the power 0.85
    window_.resize(frame_len_);
    for (int i = 0; i < frame_len_; ++i) {
        window_[i] = std::pow(0.5 - 0.5 * std::cos(2.0 * kPi * i / (frame_len_ - 1)), 0.85);
    }
    const int n_bins = n_fft_ / 2 + 1;
    const double lo = kaldi_mel(config_.low_hz), hi = kaldi_mel(config_.sample_rate / 2.0);
    const double delta = (hi - lo) / (config_.n_mel + 1);
    banks_.assign(static_cast<size_t>(config_.n_mel) * n_bins, 0.0);
    for (int m = 0; m < config_.n_mel; ++m) {
        const double left = lo + m * delta, centre = left + delta, right = left + 2.0 * delta;
        for (int k = 0; k < n_fft_ / 2; ++k) {  // the Nyquist bin keeps weight 0, as in Kaldi
            const double f = kaldi_mel(static_cast<double>(k) * config_.sample_rate / n_fft_);
            const double up = (f - left) / (centre - left), down = (right - f) / (right - centre);
            banks_[static_cast<size_t>(m) * n_bins + k] = std::max(0.0, std::min(up, down));
        }
    }
}

int64_t KaldiFbank::n_frames(size_t n) const {
    if (n < static_cast<size_t>(frame_len_)) return 0;
    return 1 + static_cast<int64_t>((n - frame_len_) / shift_);
}

std::vector<float> KaldiFbank::compute(const float * pcm, size_t n) const {
    const int64_t frames = n_frames(n);
    if (frames == 0) {
        fail(Status::invalid_argument, "Kaldi fbank: " + std::to_string(n) + " samples hold no " +
                                           std::to_string(frame_len_) + "-sample frame (audio too short)");
    }
    require_finite_pcm(pcm, n, "Kaldi fbank");
    const int n_bins = n_fft_ / 2 + 1;
    const double floor = std::numeric_limits<float>::epsilon();  // torchaudio's log floor
    std::vector<float> out(static_cast<size_t>(frames) * config_.n_mel);
    std::vector<double> frame(n_fft_, 0.0), power(n_bins);
    std::vector<std::complex<double>> spectrum(fft_.n_bins()), work(fft_.workspace_size());
    for (int64_t t = 0; t < frames; ++t) {
        const float * x = pcm + t * shift_;
        double mean = 0.0;
        for (int i = 0; i < frame_len_; ++i) mean += x[i];
        mean /= frame_len_;
        // pre-emphasis runs backwards so each sample still sees its unemphasised predecessor
        for (int i = 0; i < frame_len_; ++i) frame[i] = x[i] - mean;
        for (int i = frame_len_ - 1; i > 0; --i) frame[i] -= config_.preemph * frame[i - 1];
        frame[0] -= config_.preemph * frame[0];
        for (int i = 0; i < frame_len_; ++i) frame[i] *= window_[i];
        std::fill(frame.begin() + frame_len_, frame.end(), 0.0);
        fft_.forward(frame.data(), spectrum.data(), work.data());
        for (int k = 0; k < n_bins; ++k) power[k] = std::norm(spectrum[k]);
        for (int m = 0; m < config_.n_mel; ++m) {
            const double * bank = banks_.data() + static_cast<size_t>(m) * n_bins;
            double e = 0.0;
            for (int k = 0; k < n_bins; ++k) e += bank[k] * power[k];
            out[static_cast<size_t>(t) * config_.n_mel + m] = static_cast<float>(std::log(std::max(e, floor)));
        }
    }
    return out;
}

}  // namespace minicpmo
