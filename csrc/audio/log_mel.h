// Whisper log-mel front end of MiniCPM-o 4.5 (spec §3.1), batch path.
//
// Per frame: periodic Hann(n_fft) window centred at t * hop (reflect padding at the signal ends,
// torch.stft center=True), power spectrum |X|^2, mel = filters . power, log10(max(mel, 1e-10)).
// The STFT's last frame is dropped. A signal is cut into pieces of chunk_samples (30 s); each piece
// is zero-padded to chunk_samples *before* the STFT (the processor's padding="max_length"), its
// lower clip is max(x, max_piece - dynamic_range_db) with the max over the piece's whole padded
// spectrogram, the output is (x + 4) / 4, and only ceil(n_piece / hop) frames are kept. Pieces are
// concatenated in time. Arithmetic is double precision; the output is rounded to float once.
//
// The mel filter bank is an input (GGUF tensor a.mel_filters, (n_mel, n_fft/2 + 1) row-major):
// the front end never computes one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "audio/real_fft.h"

namespace minicpmo {

constexpr size_t kMaxMelFftSize = 4096;               // Whisper uses 400; bounds per-frame cost
constexpr int kMaxMelBands = 1024;
constexpr int kMaxMelSampleRate = 768000;
constexpr size_t kMaxMelInputSamples = size_t(1) << 31;  // ~37 h at 16 kHz: beyond any real input
constexpr double kMelFloor = 1e-10;                    // clamp before log10 (the extractor's mel_floor)

struct MelConfig {
    int sample_rate = 16000;
    int n_fft = 400;
    int hop = 160;
    int n_mel = 80;
    int64_t chunk_samples = 480000;  // one batch piece (chunk_length 30 s); also the extractor's truncation length
    float dynamic_range_db = 8.0f;   // lower clip below the max, in log10 units despite the name

    int n_bins() const { return n_fft / 2 + 1; }
};

// Throws invalid_argument naming the first bad field.
void validate_mel_config(const MelConfig & config);

// A log-mel spectrogram: data is [n_mel][n_frames] row-major (time fastest per mel band), which is
// the ggml tensor ne = (n_frames, n_mel) the encoder's conv1 takes.
struct LogMelSpectrogram {
    int n_mel = 0;
    int64_t n_frames = 0;
    std::vector<float> data;
    // batch path: frames of each 30-s piece in time order (they sum to n_frames). The official
    // processor encodes every piece as its own encoder input (positions and attention restart).
    std::vector<int64_t> piece_frames;
};

// log10 mel frames of a signal. Immutable after construction (safe to share between threads).
class MelFrameAnalyzer {
public:
    // `filters`: n_mel * n_bins values, row-major (n_mel, n_fft/2 + 1). Throws invalid_argument for
    // a bad config, a wrong filter count or a non-finite filter value.
    MelFrameAnalyzer(const MelConfig & config, std::vector<float> filters);

    const MelConfig & config() const { return config_; }

    // Frames of a signal of `len` samples after the last STFT frame is dropped:
    // floor((len + 2 * (n_fft / 2) - n_fft) / hop) (len 0 gives 0).
    int64_t n_frames(int64_t len) const;

    // Per-thread scratch of frame().
    struct Workspace {
        std::vector<double> frame;
        std::vector<std::complex<double>> spectrum;
        std::vector<std::complex<double>> fft_work;
        std::vector<double> power;
    };
    Workspace make_workspace() const;

    // out[b] = log10(max(mel_b, 1e-10)) for frame t of signal[0, len): window samples
    // [t * hop - n_fft / 2, t * hop - n_fft / 2 + n_fft), indices outside [0, len) reflected at the
    // ends (numpy/torch "reflect": -1 -> 1, len -> len - 2). Needs len >= 1.
    void frame(const float * signal, int64_t len, int64_t t, double * out, Workspace & ws) const;

    // True when frame t of a signal of `len` samples reads no reflected sample: its value then
    // depends only on the samples, not on where the signal ends.
    bool is_interior(int64_t len, int64_t t) const;

private:
    MelConfig config_;
    RealFft fft_;
    std::vector<double> window_;  // periodic Hann
    // filters as dense rows restricted to their non-zero bins (Slaney triangles touch few bins)
    std::vector<int> band_begin_, band_end_;
    std::vector<size_t> band_offset_;
    std::vector<double> band_weights_;
};

// The batch front end (spec §3.1): `pcm` is 16 kHz mono float32. Throws invalid_argument for an
// empty input, more than kMaxMelInputSamples samples, or a NaN/Inf sample (naming its index).
LogMelSpectrogram log_mel_spectrogram(const MelFrameAnalyzer & analyzer, const float * pcm, size_t n);

}  // namespace minicpmo
