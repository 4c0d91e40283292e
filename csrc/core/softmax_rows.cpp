#include "core/softmax_rows.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/bf16_convert.h"
#include "core/cpu_clones.h"

namespace minicpmo {

namespace {

// exp(x) = 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2; ln 2 in two parts (the first with
// 16 significant bits, so n * kLn2Hi is exact for |n| < 2^8)
constexpr float kLog2e = 0x1.715476p+0f;
constexpr float kLn2Hi = 0x1.62e4p-1f;
constexpr float kLn2Lo = 0x1.7f7d1cp-20f;
// below this exp underflows to 0 in float32 (subnormals are flushed), above it overflows
constexpr float kExpLow = -87.0f;
constexpr float kExpHigh = 88.7f;
// e^r on |r| <= ln 2 / 2 by its Taylor series to r^6: the first omitted term is below 2e-8 relative
constexpr float kE2 = 1.0f / 2.0f, kE3 = 1.0f / 6.0f, kE4 = 1.0f / 24.0f, kE5 = 1.0f / 120.0f, kE6 = 1.0f / 720.0f;

// exp(x): 0 below kExpLow, +inf above kExpHigh, NaN for NaN (the clamp keeps 2^n a normal float)
inline float exp_reduced(float x) {
    float xc = x > kExpLow ? x : kExpLow;  // NaN becomes kExpLow here; the last select returns it
    xc = xc < kExpHigh ? xc : kExpHigh;
    const float n = (xc * kLog2e + kRoundToInteger) - kRoundToInteger;
    const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
    const float p = 1.0f + r * (1.0f + r * (kE2 + r * (kE3 + r * (kE4 + r * (kE5 + r * kE6)))));
    // 2^n through the exponent bits; n in [-126, 128]: 2^128 is split as 2 * 2^127
    const int32_t ni = static_cast<int32_t>(n);
    const int32_t half = ni >> 1;
    int32_t b1 = (half + 127) << 23, b2 = (ni - half + 127) << 23;
    float s1, s2;
    std::memcpy(&s1, &b1, sizeof s1);
    std::memcpy(&s2, &b2, sizeof s2);
    const float y = p * s1 * s2;
    const float inf = std::numeric_limits<float>::infinity();
    return x > kExpHigh ? inf : x >= kExpLow ? y : x < kExpLow ? 0.0f : x;  // the last: NaN stays NaN
}

MINICPMO_CPU_CLONES
void exp_row(const float * x, float * y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = exp_reduced(x[i]);
}

// the reductions are vectorised through `omp simd` (the file is built with -fopenmp-simd): their
// reordering is the one a vectorised softmax always makes. Leaves the row's exp terms in `work` and
// returns 1 / their sum, or 0 when every term is -inf (nothing to attend to: the row is zeros).
MINICPMO_CPU_CLONES
float softmax_terms(const float * s, const float * mask, int64_t n, float scale, float * work) {
    // the row's terms scale * s + mask first (work), then their maximum
    if (mask) {
        for (int64_t i = 0; i < n; ++i) work[i] = s[i] * scale + mask[i];
    } else {
        for (int64_t i = 0; i < n; ++i) work[i] = s[i] * scale;
    }
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; ++i) m = m > work[i] ? m : work[i];
    if (m == -std::numeric_limits<float>::infinity()) return 0.0f;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) {
        work[i] = exp_reduced(work[i] - m);
        sum += work[i];
    }
    return 1.0f / sum;
}

MINICPMO_CPU_CLONES
void scale_to_bf16(const float * work, float inv, uint16_t * out, int64_t n) {
    if (inv == 0.0f) {  // every term -inf: the terms are -inf, the probabilities 0
        std::memset(out, 0, static_cast<size_t>(n) * sizeof(uint16_t));
        return;
    }
    for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16_bits(work[i] * inv);
}

MINICPMO_CPU_CLONES
void scale_in_place(float * work, float inv, int64_t n) {
    if (inv == 0.0f) {  // every term -inf (see scale_to_bf16)
        std::memset(work, 0, static_cast<size_t>(n) * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < n; ++i) work[i] *= inv;
}

}  // namespace

void softmax_rows_to_bf16(const float * scores, int64_t ld, const float * mask, int64_t ld_mask, uint16_t * out,
                          int64_t ld_out, int64_t rows, int64_t cols, float scale) {
    float stack[4096];
    std::vector<float> heap;
    float * work = stack;
    if (cols > 4096) {
        heap.resize(static_cast<size_t>(cols));
        work = heap.data();
    }
    for (int64_t r = 0; r < rows; ++r) {
        const float inv = softmax_terms(scores + r * ld, mask ? mask + r * ld_mask : nullptr, cols, scale, work);
        scale_to_bf16(work, inv, out + r * ld_out, cols);
    }
}

void softmax_rows_to_f32(const float * scores, int64_t ld, const float * mask, int64_t ld_mask, float * out,
                         int64_t ld_out, int64_t rows, int64_t cols, float scale) {
    for (int64_t r = 0; r < rows; ++r) {
        // the terms go straight into the output row (each read of a score precedes its write)
        float * row = out + r * ld_out;
        const float inv = softmax_terms(scores + r * ld, mask ? mask + r * ld_mask : nullptr, cols, scale, row);
        scale_in_place(row, inv, cols);
    }
}

void vector_exp(const float * x, float * y, int64_t n) { exp_row(x, y, n); }

}  // namespace minicpmo
