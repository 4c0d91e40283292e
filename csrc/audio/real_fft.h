// Discrete Fourier transforms for the log-mel front end, in double precision.
//
// Whisper's STFT frame is 400 samples, not a power of two, so this is a mixed-radix FFT of any
// length: a Stockham auto-sort (no bit reversal) with radix-4, -2, -3 and -5 butterflies and a
// direct DFT for any larger prime factor (400 = 2 * 200 and 200 = 4 * 2 * 5 * 5 use none). A real
// frame of even length n goes through one complex FFT of length n/2 (even samples as the real
// part, odd samples as the imaginary part) and a split step; an odd length uses a complex FFT of
// length n. The plans are immutable after construction: one plan can serve several threads, each
// with its own scratch.
#pragma once

#include <complex>
#include <cstddef>
#include <vector>

namespace minicpmo {

constexpr size_t kMaxFftSize = size_t(1) << 20;  // far beyond any audio frame; bounds the tables

class ComplexFft {
public:
    // Throws invalid_argument unless 1 <= n <= kMaxFftSize.
    explicit ComplexFft(size_t n);

    size_t size() const { return n_; }

    // out[k] = sum_j in[j] * exp(-2 pi i j k / n) for k in [0, n). `work` holds n values of scratch.
    // `in` is only read; `out` and `work` must not overlap it or each other.
    void forward(const std::complex<double> * in, std::complex<double> * out, std::complex<double> * work) const;

private:
    // One pass of the Stockham recursion: sub-transforms of length radix * m, interleaved with `stride`.
    struct Stage {
        size_t radix;
        size_t m;
        size_t stride;
        size_t twiddle_offset;  // into twiddles_: m rows of `radix` factors exp(-2 pi i j r stride / n)
    };

    size_t n_;
    size_t max_radix_ = 1;
    std::vector<Stage> stages_;
    std::vector<std::complex<double>> twiddles_;
    std::vector<std::complex<double>> roots_;  // exp(-2 pi i t / n), t in [0, n): roots of every radix
};

class RealFft {
public:
    // Throws invalid_argument unless 1 <= n <= kMaxFftSize.
    explicit RealFft(size_t n);

    size_t size() const { return n_; }
    size_t n_bins() const { return n_ / 2 + 1; }
    // complex values of scratch forward() needs
    size_t workspace_size() const { return 3 * half_.size(); }

    // out[k] = sum_j in[j] * exp(-2 pi i j k / n) for k in [0, n/2] (the non-negative frequencies).
    void forward(const double * in, std::complex<double> * out, std::complex<double> * work) const;

private:
    size_t n_;
    ComplexFft half_;                         // length n/2 for even n, n for odd n
    std::vector<std::complex<double>> split_;  // exp(-2 pi i k / n), k in [0, n/2], for even n
};

}  // namespace minicpmo
