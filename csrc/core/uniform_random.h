// Uniform doubles from a 64-bit engine, the same numbers on every platform and standard library
// (std::uniform_real_distribution and std::generate_canonical are implementation-defined), so a
// seeded reply replays identically everywhere. Every sampler and noise source draws through these.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>

namespace minicpmo {

// The top 53 bits of a 64-bit draw: a double uniform in [0, 1).
inline double uniform_unit(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

// The same bits shifted by half a step: uniform in (0, 1), never 0 (for log() in Box-Muller).
inline double uniform_open_unit(uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }

// An endless source of uniform_unit draws from mt19937_64 seeded with `seed`; copies share the engine.
inline std::function<double()> seeded_uniform_draws(uint64_t seed) {
    auto rng = std::make_shared<std::mt19937_64>(seed);
    return [rng]() { return uniform_unit((*rng)()); };
}

}  // namespace minicpmo
