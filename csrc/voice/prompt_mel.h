// The prompt mel of a voice (spec §5.2.1): the 24 kHz log-mel the flow is conditioned on, computed
// as the reference does: reflect-pad (n_fft - hop) / 2 at both ends, frames of n_fft every hop
// (no centring), periodic Hann window, magnitude sqrt(re^2 + im^2 + 1e-9), Slaney mel filters
// (area-normalised, f_min..f_max), ln(max(mel, 1e-5)). Double precision, rounded to float once.
#pragma once

#include <cstddef>
#include <vector>

#include "audio/real_fft.h"

namespace minicpmo {

struct PromptMelConfig {
    int sample_rate = 24000;
    int n_fft = 1920;
    int hop = 480;
    int n_mel = 80;
    double f_min = 0.0;
    double f_max = 8000.0;
};

// (n_mel, n_fft / 2 + 1) Slaney filter bank, row-major, like librosa.filters.mel(norm="slaney"); the
// weights are rounded to float (librosa builds it in float32) and held as double.
std::vector<double> slaney_mel_filters(int n_mel, int n_fft, int sample_rate, double f_min, double f_max);

class PromptMel {
public:
    // Throws invalid_argument naming the first bad field.
    explicit PromptMel(const PromptMelConfig & config);

    const PromptMelConfig & config() const { return config_; }
    // Frames of a signal of n samples: 1 + (n + 2 * pad - n_fft) / hop (the signal must be longer than pad).
    size_t n_frames(size_t n) const;
    // (n_frames, n_mel) frame-major. Throws invalid_argument when the signal is too short.
    std::vector<float> compute(const float * pcm, size_t n) const;

private:
    PromptMelConfig config_;
    RealFft fft_;
    std::vector<double> window_;
    std::vector<double> filters_;
};

// Replicates the last frame or truncates so exactly n_frames frames of n_mel remain (the
// reference's replicate pad of the prompt mel to 2 frames per prompt token).
std::vector<float> fit_mel_frames(std::vector<float> mel, int n_mel, size_t n_frames);

}  // namespace minicpmo
