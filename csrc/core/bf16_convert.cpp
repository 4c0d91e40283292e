#include "core/bf16_convert.h"

#include "core/cpu_clones.h"

namespace minicpmo {

namespace {

// F16 bits -> the F32 value's bits, without a branch (so the loop vectorises): normal numbers move
// their exponent and mantissa into place and rebias the exponent (127 - 15 = 112); infinities and
// NaN keep an all-ones exponent; subnormals and zero are their mantissa times 2^-24, exact in F32
inline float f16_bits_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t magnitude = h & 0x7fffu;
    const uint32_t normal = (magnitude << 13) + (112u << 23);
    const uint32_t special = (magnitude << 13) | 0x7f800000u;
    const float small = static_cast<float>(static_cast<int32_t>(magnitude)) * 0x1p-24f;
    uint32_t small_bits;
    std::memcpy(&small_bits, &small, sizeof small_bits);
    // masks, not branches, so that the loop vectorises
    const uint32_t is_small = 0u - static_cast<uint32_t>(magnitude < 0x400u);
    const uint32_t is_special = 0u - static_cast<uint32_t>(magnitude >= 0x7c00u);
    const uint32_t large = (special & is_special) | (normal & ~is_special);
    const uint32_t bits = ((small_bits & is_small) | (large & ~is_small)) | sign;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

}  // namespace

MINICPMO_CPU_CLONES
void f16_to_bf16(const uint16_t * src, uint16_t * dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16_bits(f16_bits_to_f32(src[i]));
}

MINICPMO_CPU_CLONES
void f16_to_f32(const uint16_t * src, float * dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_bits_to_f32(src[i]);
}

}  // namespace minicpmo
