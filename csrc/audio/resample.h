// Getting user audio to the 16 kHz mono float32 PCM the audio encoder takes: channel mixing and a
// band-limited sample-rate converter of our own, shared by the Python loader and minicpmo-cli so
// both follow one rule.
//
// The rule: channels are averaged (mean, not sum); a rate other than the target is converted with a
// Kaiser-windowed sinc filter, polyphase over the reduced ratio out/in. The filter passes
// 0 .. 0.91 x the lower Nyquist frequency (ripple below 0.001 dB) and stops >= 100 dB from the
// lower Nyquist frequency up, i.e. for 16 kHz output: flat to 7.28 kHz, nothing aliases from
// 8 kHz and above. Samples before the start and after the end count as zeros. Output sample n lies
// at time n / out_rate (no delay), and there are ceil(n_in * out_rate / in_rate) of them. Equal rates
// and one channel copy the input bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace minicpmo {

constexpr int kMaxAudioSampleRate = 768000;  // the highest rate of common audio hardware/files
constexpr int kMaxAudioChannels = 256;      // beyond any real file (WAV/FLAC allow 8..18 in practice)

// Throws invalid_argument unless 0 < rate <= kMaxAudioSampleRate. `what` names the value.
void validate_sample_rate(int rate, const char * what);

// ceil(n_in * out_rate / in_rate); throws invalid_argument when that does not fit in size_t.
size_t resampled_length(size_t n_in, int in_rate, int out_rate);

// The mean of the channels of interleaved PCM (frame-major: n_frames x n_channels).
// Throws invalid_argument for no frames, a bad channel count, NaN/Inf samples or a size overflow.
std::vector<float> mix_to_mono(const float * interleaved, size_t n_frames, int n_channels);

// Mono PCM at in_rate -> mono PCM at out_rate (see the rule above). Deterministic: the same input
// gives the same bits on every call. Throws invalid_argument for an empty input, a rate outside
// (0, kMaxAudioSampleRate], NaN/Inf samples, an output too large to address, or rates too far apart
// for the filter (a ratio beyond about 1:3400, e.g. 768 kHz -> 200 Hz: its table would take gigabytes).
std::vector<float> resample_pcm(const float * pcm, size_t n, int in_rate, int out_rate);

// How many filter coefficients resample_pcm computes for these rates before it filters: its set-up
// cost, the same for any length of audio (0 for equal rates). Throws like resample_pcm for a bad
// rate or rates too far apart.
size_t resample_table_coeffs(int in_rate, int out_rate);

}  // namespace minicpmo
