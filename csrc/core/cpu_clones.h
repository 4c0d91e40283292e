#pragma once

// Shared pieces of the project's own vectorised CPU kernels (HiFT's sine, the BF16 softmax's exp).

namespace minicpmo {

// (x + kRoundToInteger) - kRoundToInteger is x rounded to the nearest integer for |x| < 2^22,
// without a branch or a call, so the loops vectorise (the build has no -ffast-math that could fold
// it away)
constexpr float kRoundToInteger = 0x1.8p+23f;

}  // namespace minicpmo

// A plain loop marked with this is compiled once per instruction set (AVX-512, AVX2, baseline) and
// the best is picked at load, so the portable build still uses the wide vectors (x86-64 Linux only)
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define MINICPMO_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MINICPMO_CPU_CLONES
#endif
