// Uniform doubles from a 64-bit engine, the same numbers on every platform and standard library
// (std::uniform_real_distribution and std::generate_canonical are implementation-defined), so a
// seeded reply replays identically everywhere. Every sampler and noise source draws through these.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>

namespace minicpmo {

// The top 53 bits of a 64-bit draw: a double uniform in [0, 1).
inline double uniform_unit(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

// The same bits shifted by half a step: uniform in (0, 1), never 0 (for log() in Box-Muller).
inline double uniform_open_unit(uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }

// n standard normal floats by Box-Muller on uniform_open_unit draws, made in pairs (r cos a, r sin a)
// with r's draw first: the same numbers on every platform (std::normal_distribution is
// implementation-defined).
inline void standard_normals(std::mt19937_64 & rng, float * out, size_t n) {
    constexpr double kTwoPi = 6.283185307179586476925286766559;
    for (size_t i = 0; i < n; i += 2) {
        const double r = std::sqrt(-2.0 * std::log(uniform_open_unit(rng()))), a = kTwoPi * uniform_open_unit(rng());
        out[i] = static_cast<float>(r * std::cos(a));
        if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(a));
    }
}

// An endless source of uniform_unit draws from mt19937_64 seeded with `seed`; copies share the engine.
inline std::function<double()> seeded_uniform_draws(uint64_t seed) {
    auto rng = std::make_shared<std::mt19937_64>(seed);
    return [rng]() { return uniform_unit((*rng)()); };
}

}  // namespace minicpmo
