// Kaldi / torchaudio `fbank` log mel filterbank energies (the CAM++ speaker encoder's front end,
// spec §5.2.1), dither 0: frames of frame_ms every shift_ms, "snip edges" (only whole frames), per
// frame DC removal, pre-emphasis (the first sample against itself), povey window (Hann^0.85), power
// spectrum of the next power of two, Kaldi mel triangles from low_hz to Nyquist (mel = 1127 ln(1 +
// f/700), the Nyquist bin weighted 0), natural log floored at float32 epsilon. Arithmetic in double,
// rounded to float once (the numpy reference is convert/voice_frontend.py kaldi_fbank).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "audio/real_fft.h"

namespace minicpmo {

struct KaldiFbankConfig {
    int sample_rate = 16000;
    int n_mel = 80;
    double frame_ms = 25.0;
    double shift_ms = 10.0;
    double low_hz = 20.0;
    double preemph = 0.97;
};

// Immutable after construction: one instance may serve several threads.
class KaldiFbank {
public:
    // Throws invalid_argument naming the first bad field.
    explicit KaldiFbank(const KaldiFbankConfig & config);
    const KaldiFbankConfig & config() const { return config_; }
    int frame_length() const { return frame_len_; }  // samples per frame (400 at 16 kHz)
    int frame_shift() const { return shift_; }       // samples between frames (160)
    // 1 + (n - frame_length) / frame_shift whole frames; 0 when n < frame_length.
    int64_t n_frames(size_t n) const;
    // (n_frames, n_mel) row-major (mel bin fastest). Throws invalid_argument when the audio holds
    // less than one frame or a non-finite sample.
    std::vector<float> compute(const float * pcm, size_t n) const;

private:
    KaldiFbankConfig config_;
    int frame_len_ = 0, shift_ = 0, n_fft_ = 0;
    std::vector<double> window_;
    std::vector<double> banks_;  // (n_mel, n_fft / 2 + 1) row-major
    RealFft fft_;
};

}  // namespace minicpmo
