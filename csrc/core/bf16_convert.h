// Conversions for the oneDNN backend, which has no F16 reorder: F32 -> BF16 rounded to nearest even
// (the softmax's probabilities), F16 -> BF16 over whole weight matrices when they are packed (exact
// through F32, then rounded like oneDNN's own F32 -> BF16 reorder), and F16 -> F32.
#pragma once

#include <cstdint>
#include <cstring>

namespace minicpmo {

// F32 -> BF16 bits, rounded to nearest even; a NaN stays NaN (its high bits kept, quiet bit set)
inline uint16_t f32_to_bf16_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    // all ones for a NaN, else 0: a mask, not a branch, so that loops over it vectorise
    const uint32_t nan = 0u - static_cast<uint32_t>((u & 0x7fffffffu) > 0x7f800000u);
    return static_cast<uint16_t>((((u >> 16) | 0x40u) & nan) | (rounded & ~nan));
}

// n F16 values (IEEE half bits) -> BF16 bits: every value, subnormals, infinities and NaN included,
// as f32_to_bf16_bits of its exact F32 value. Vectorised for AVX-512 / AVX2, picked at load.
void f16_to_bf16(const uint16_t * src, uint16_t * dst, int64_t n);

// n F16 values -> their exact F32 values (the fused attention's F16 keys and values).
void f16_to_f32(const uint16_t * src, float * dst, int64_t n);

}  // namespace minicpmo
