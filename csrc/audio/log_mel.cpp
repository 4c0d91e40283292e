#include "audio/log_mel.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "audio/pcm_checks.h"
#include "core/error.h"

namespace minicpmo {

namespace {

// numpy/torch "reflect" padding of a signal of `len` samples: ... 2 1 | 0 1 2 ... len-1 | len-2 ...
// (repeated reflection when the pad is longer than the signal, as np.pad does)
int64_t reflect_index(int64_t i, int64_t len) {
    if (len == 1) return 0;
    const int64_t period = 2 * (len - 1);
    int64_t r = i % period;
    if (r < 0) r += period;
    return r < len ? r : period - r;
}

}  // namespace

void validate_mel_config(const MelConfig & c) {
    auto bad = [](const std::string & what) { fail(Status::invalid_argument, "mel config: " + what); };
    if (c.sample_rate < 1 || c.sample_rate > kMaxMelSampleRate) {
        bad("sample_rate " + std::to_string(c.sample_rate) + " is outside [1, " + std::to_string(kMaxMelSampleRate) + "]");
    }
    if (c.n_fft < 2 || size_t(c.n_fft) > kMaxMelFftSize) {
        bad("n_fft " + std::to_string(c.n_fft) + " is outside [2, " + std::to_string(kMaxMelFftSize) + "]");
    }
    if (c.hop < 1 || c.hop > c.n_fft) {
        bad("hop " + std::to_string(c.hop) + " is outside [1, n_fft = " + std::to_string(c.n_fft) + "]");
    }
    if (c.n_mel < 1 || c.n_mel > kMaxMelBands) {
        bad("n_mel " + std::to_string(c.n_mel) + " is outside [1, " + std::to_string(kMaxMelBands) + "]");
    }
    if (c.chunk_samples < c.n_fft || uint64_t(c.chunk_samples) > kMaxMelInputSamples) {
        bad("chunk_samples " + std::to_string(c.chunk_samples) + " is outside [n_fft, " +
            std::to_string(kMaxMelInputSamples) + "]");
    }
    if (!std::isfinite(c.dynamic_range_db) || c.dynamic_range_db < 0.0f) {
        bad("dynamic_range_db must be a finite value >= 0, got " + std::to_string(c.dynamic_range_db));
    }
}

MelFrameAnalyzer::MelFrameAnalyzer(const MelConfig & config, std::vector<float> filters)
    : config_((validate_mel_config(config), config)), fft_(size_t(config.n_fft)) {
    const int n_bins = config_.n_bins();
    const size_t expected = size_t(config_.n_mel) * size_t(n_bins);
    if (filters.size() != expected) {
        fail(Status::invalid_argument, "mel filters: expected n_mel x (n_fft/2 + 1) = " + std::to_string(config_.n_mel) +
                                           " x " + std::to_string(n_bins) + " = " + std::to_string(expected) +
                                           " values, got " + std::to_string(filters.size()));
    }
    for (size_t i = 0; i < filters.size(); ++i) {
        if (!std::isfinite(filters[i])) {
            fail(Status::invalid_argument, "mel filters: value " + std::to_string(i) + " (band " +
                                               std::to_string(i / size_t(n_bins)) + ", bin " +
                                               std::to_string(i % size_t(n_bins)) + ") is not finite");
        }
    }
    // periodic Hann: the window of torch.hann_window(n) and transformers' window_function(n, "hann")
    window_.resize(size_t(config_.n_fft));
    for (int i = 0; i < config_.n_fft; ++i) {
        window_[size_t(i)] = 0.5 - 0.5 * std::cos(2.0 * M_PI * double(i) / double(config_.n_fft));
    }
    for (int b = 0; b < config_.n_mel; ++b) {
        const float * row = filters.data() + size_t(b) * size_t(n_bins);
        int lo = 0, hi = n_bins;
        while (lo < hi && row[lo] == 0.0f) ++lo;
        while (hi > lo && row[hi - 1] == 0.0f) --hi;
        band_begin_.push_back(lo);
        band_end_.push_back(hi);
        band_offset_.push_back(band_weights_.size());
        for (int k = lo; k < hi; ++k) band_weights_.push_back(double(row[k]));
    }
}

int64_t MelFrameAnalyzer::n_frames(int64_t len) const {
    const int64_t padded = len + 2 * (config_.n_fft / 2);
    if (len <= 0 || padded < config_.n_fft) return 0;
    return (padded - config_.n_fft) / config_.hop;  // STFT frames minus the dropped last one
}

MelFrameAnalyzer::Workspace MelFrameAnalyzer::make_workspace() const {
    Workspace ws;
    ws.frame.resize(size_t(config_.n_fft));
    ws.spectrum.resize(fft_.n_bins());
    ws.fft_work.resize(fft_.workspace_size());
    ws.power.resize(fft_.n_bins());
    return ws;
}

bool MelFrameAnalyzer::is_interior(int64_t len, int64_t t) const {
    const int64_t start = t * config_.hop - config_.n_fft / 2;
    return start >= 0 && start + config_.n_fft <= len;
}

void MelFrameAnalyzer::frame(const float * signal, int64_t len, int64_t t, double * out, Workspace & ws) const {
    const int n_fft = config_.n_fft;
    const int64_t start = t * config_.hop - n_fft / 2;
    double * x = ws.frame.data();
    if (start >= 0 && start + n_fft <= len) {
        const float * s = signal + start;
        for (int j = 0; j < n_fft; ++j) x[j] = double(s[j]) * window_[size_t(j)];
    } else {
        for (int j = 0; j < n_fft; ++j) x[j] = double(signal[reflect_index(start + j, len)]) * window_[size_t(j)];
    }
    fft_.forward(x, ws.spectrum.data(), ws.fft_work.data());
    const size_t n_bins = fft_.n_bins();
    double * power = ws.power.data();
    for (size_t k = 0; k < n_bins; ++k) {
        const double re = ws.spectrum[k].real(), im = ws.spectrum[k].imag();
        power[k] = re * re + im * im;
    }
    for (int b = 0; b < config_.n_mel; ++b) {
        const double * w = band_weights_.data() + band_offset_[size_t(b)];
        double mel = 0.0;
        for (int k = band_begin_[size_t(b)]; k < band_end_[size_t(b)]; ++k) mel += *w++ * power[k];
        out[b] = std::log10(std::max(mel, kMelFloor));
    }
}

LogMelSpectrogram log_mel_spectrogram(const MelFrameAnalyzer & analyzer, const float * pcm, size_t n) {
    if (n == 0) fail(Status::invalid_argument, "log-mel: the audio is empty (0 samples)");
    if (n > kMaxMelInputSamples) {
        fail(Status::invalid_argument, "log-mel: " + std::to_string(n) + " samples is more than the limit of " +
                                           std::to_string(kMaxMelInputSamples));
    }
    if (pcm == nullptr) fail(Status::invalid_argument, "log-mel: no sample buffer given");
    require_finite_pcm(pcm, n, "log-mel");

    const MelConfig & c = analyzer.config();
    const int n_mel = c.n_mel;
    const int64_t piece_len = c.chunk_samples;
    const int64_t piece_frames = analyzer.n_frames(piece_len);
    const int64_t half = c.n_fft / 2;

    LogMelSpectrogram out;
    out.n_mel = n_mel;
    for (size_t begin = 0; begin < n; begin += size_t(piece_len)) {
        const int64_t n_piece = int64_t(std::min(n - begin, size_t(piece_len)));
        // the processor keeps attention_mask[::hop].sum() = ceil(n_piece / hop) frames
        out.piece_frames.push_back(std::min(piece_frames, (n_piece + c.hop - 1) / c.hop));
        out.n_frames += out.piece_frames.back();
    }
    out.data.assign(size_t(n_mel) * size_t(out.n_frames), 0.0f);

    MelFrameAnalyzer::Workspace ws = analyzer.make_workspace();
    std::vector<float> padded(static_cast<size_t>(piece_len));
    std::vector<double> kept;  // raw log10 mel of the kept frames, frame-major
    std::vector<double> scratch(static_cast<size_t>(n_mel));
    int64_t column = 0;
    size_t piece = 0;
    for (size_t begin = 0; begin < n; begin += size_t(piece_len), ++piece) {
        const int64_t n_piece = int64_t(std::min(n - begin, size_t(piece_len)));
        const int64_t n_keep = out.piece_frames[piece];
        // zero padding to the full piece length happens before the STFT (padding="max_length")
        std::copy(pcm + begin, pcm + begin + size_t(n_piece), padded.begin());
        std::fill(padded.begin() + n_piece, padded.end(), 0.0f);

        kept.assign(size_t(n_keep) * size_t(n_mel), 0.0);
        // The clip threshold is the max over all piece_frames frames. A frame whose window (after
        // reflection at the padded end) reads only padding zeros is log10(1e-10) in every band, the
        // smallest possible value, so it never raises the max and is not computed.
        double max_value = std::log10(kMelFloor);
        for (int64_t t = 0; t < piece_frames; ++t) {
            const int64_t start = t * c.hop - half;
            int64_t lowest_read = std::max<int64_t>(start, 0);
            if (start + c.n_fft > piece_len) {
                lowest_read = std::min(lowest_read, 2 * piece_len - 1 - start - c.n_fft);
            }
            const bool all_padding = lowest_read >= n_piece;
            if (all_padding && t >= n_keep) continue;
            double * dst = t < n_keep ? kept.data() + size_t(t) * size_t(n_mel) : scratch.data();
            if (all_padding) {
                std::fill(dst, dst + n_mel, std::log10(kMelFloor));
                continue;
            }
            analyzer.frame(padded.data(), piece_len, t, dst, ws);
            for (int b = 0; b < n_mel; ++b) max_value = std::max(max_value, dst[b]);
        }
        const double threshold = max_value - double(c.dynamic_range_db);
        // frame-major -> band-major in blocks of frames, so both sides stay in cache
        constexpr int64_t kBlock = 64;
        for (int64_t t0 = 0; t0 < n_keep; t0 += kBlock) {
            const int64_t t1 = std::min(n_keep, t0 + kBlock);
            for (int b = 0; b < n_mel; ++b) {
                float * dst = out.data.data() + size_t(b) * size_t(out.n_frames) + size_t(column);
                for (int64_t t = t0; t < t1; ++t) {
                    dst[t] = float((std::max(kept[size_t(t) * size_t(n_mel) + size_t(b)], threshold) + 4.0) / 4.0);
                }
            }
        }
        column += n_keep;
    }
    return out;
}

}  // namespace minicpmo
