// The sample-rate converter of the reference's voice prompt path (torchaudio.functional.resample,
// method sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99), so a cloned voice sees the same
// 16 kHz and 24 kHz signals as the official code. It differs on purpose from audio/resample.h (the
// project's own Kaiser converter for model input): this one reproduces the reference.
//
// Over the reduced ratio orig'/new', output sample m = k * new' + j is the dot product of the input
// (zeros outside it) around k * orig' with a Hann-windowed sinc cut at 6 zero crossings of the lower
// band edge (0.99 x the lower Nyquist rate). There are ceil(len * new' / orig') output samples.
// Arithmetic is double precision, rounded to float once.
#pragma once

#include <cstddef>
#include <vector>

namespace minicpmo {

// Throws invalid_argument for a rate outside [1, 768000].
std::vector<float> sinc_hann_resample(const float * x, size_t n, int orig_rate, int new_rate);

}  // namespace minicpmo
