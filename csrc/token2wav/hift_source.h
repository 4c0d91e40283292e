// The harmonic sine source of HiFT's NSF module (SineGen2 of SourceModuleHnNSF2, spec §5.2.5),
// computed on the host from the frame-rate F0 the graph predicted.
//
// Why on the host and not in the ggml graph: the source phase is a running sum that reaches
// 1e4..1e5 rad, where one float32 ulp (~0.008 rad) is visible in the waveform. The official code
// (and the numpy reference) accumulates it in double (torch's CPU cumsum) and interpolates with
// fused multiply-adds; ggml's cumsum accumulates in float32 and GPU sin (fast-math) is inexact at
// such arguments. The work is tiny (samples x harmonics), so it is done here exactly; the
// weights (the 9 -> 1 merge, tanh) stay in the graph.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "token2wav/hift_model.h"

namespace minicpmo {

// The random inputs of one source evaluation: initial phases (H+1 values in cycles; element 0 is
// ignored, as in SineGen2) and additive noise (n_samples x (H+1), sample-major, N(0, 1)).
struct HiftSourceRandom {
    std::vector<float> phases;
    std::vector<float> noise;
};

// Draws HiftSourceRandom the way the official code does (torch.rand phases, torch.randn noise), from
// a per-session generator.
class HiftSourceRng {
public:
    explicit HiftSourceRng(uint64_t seed) : gen_(seed) {}
    void reseed(uint64_t seed) { gen_.seed(seed); }
    HiftSourceRandom draw(int n_sines, int64_t n_samples);

private:
    std::mt19937_64 gen_;
};

// f0: n_frames frame-rate F0 values (Hz, >= 0). Returns the sine excitation before the merge,
// n_frames * hop_samples rows of (H+1) values: sin waves of the harmonics k f0 (k = 1..H+1) times
// nsf_alpha on voiced samples, plus noise of amplitude nsf_sigma (voiced) or nsf_alpha / 3
// (unvoiced).
std::vector<float> hift_sine_excitation(const HiftHparams & hp, const float * f0, int n_frames,
                                        const HiftSourceRandom & random);

}  // namespace minicpmo
