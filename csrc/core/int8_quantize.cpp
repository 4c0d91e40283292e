#include "core/int8_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/error.h"

#if defined(__SSE2__)
#include <emmintrin.h>  // x86-64's baseline: every CPU this runs on, so no run-time dispatch is needed
#endif

namespace minicpmo {

namespace {

// v rounded to the nearest integer, ties to even (the FPU's default mode), for |v| < 2^22: adding and
// taking away 1.5 * 2^23 leaves no fraction bits (IEEE arithmetic: compilers keep both operations
// without -ffast-math). Plain arithmetic, so that the loops vectorise in a portable build, where
// std::nearbyint is a library call (no SSE4.1 rounding instruction).
inline float round_even(float v) {
    constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
    return (v + kMagic) - kMagic;
}

// The smallest and largest of the n values and 0, and whether any value is a NaN (min and max pass
// over a NaN); an infinity comes out as a bound.
void row_range(const float * row, int64_t n, float * lo_out, float * hi_out, bool * nan_out) {
    float lo = 0.0f, hi = 0.0f;
    bool nan = false;
    int64_t k = 0;
#if defined(__SSE2__)
    __m128 vlo = _mm_setzero_ps(), vhi = _mm_setzero_ps(), vnan = _mm_setzero_ps();
    for (; k + 4 <= n; k += 4) {
        const __m128 v = _mm_loadu_ps(row + k);
        vlo = _mm_min_ps(vlo, v);
        vhi = _mm_max_ps(vhi, v);
        vnan = _mm_or_ps(vnan, _mm_cmpunord_ps(v, v));
    }
    alignas(16) float l[4], h[4];
    _mm_store_ps(l, vlo);
    _mm_store_ps(h, vhi);
    for (int i = 0; i < 4; ++i) {
        lo = std::min(lo, l[i]);
        hi = std::max(hi, h[i]);
    }
    nan = _mm_movemask_ps(vnan) != 0;
#endif
    for (; k < n; ++k) {
        lo = std::min(lo, row[k]);
        hi = std::max(hi, row[k]);
        nan = nan || row[k] != row[k];
    }
    *lo_out = lo;
    *hi_out = hi;
    *nan_out = nan;
}

// out[k] = clamp(round(row[k] * inv) + z, 0, 255), rounding ties to even either way (SSE2's conversion
// follows the FPU's default mode, as round_even does)
void quantize_row(const float * row, int64_t n, float inv, float z, uint8_t * out) {
    int64_t k = 0;
#if defined(__SSE2__)
    const __m128 vinv = _mm_set1_ps(inv);
    const __m128i vz = _mm_set1_epi32(static_cast<int32_t>(z));
    const auto ints = [&](int64_t i) { return _mm_add_epi32(_mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(row + i), vinv)), vz); };
    for (; k + 16 <= n; k += 16) {
        // signed 16-bit packs, then unsigned 8-bit packs: the saturation is the clamp to [0, 255]
        const __m128i lo = _mm_packs_epi32(ints(k), ints(k + 4)), hi = _mm_packs_epi32(ints(k + 8), ints(k + 12));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(out + k), _mm_packus_epi16(lo, hi));
    }
#endif
    for (; k < n; ++k) {
        out[k] = static_cast<uint8_t>(static_cast<int32_t>(std::clamp(round_even(row[k] * inv) + z, 0.0f, 255.0f)));
    }
}

}  // namespace

void quantize_weight_rows(const float * w, int64_t n_rows, int64_t row_len, int8_t * q, float * scale, int32_t * sum) {
    for (int64_t n = 0; n < n_rows; ++n) {
        const float * row = w + n * row_len;
        float lo, hi;
        bool nan;
        row_range(row, row_len, &lo, &hi, &nan);
        const float peak = std::max(-lo, hi);
        if (nan || !std::isfinite(peak)) {
            fail(Status::invalid_argument, "int8 products: weight row " + std::to_string(n) + " holds a non-finite value");
        }
        float s = peak / kInt8WeightMax;
        // an all-zero row, or one so close to zero that 1 / scale overflows: all zeros
        if (!std::isfinite(1.0f / s)) s = std::numeric_limits<float>::infinity();
        const float inv = 1.0f / s;
        int8_t * out = q + n * row_len;
        int32_t total = 0;
        int64_t k = 0;
#if defined(__SSE2__)
        const __m128 vinv = _mm_set1_ps(inv);
        const __m128i top = _mm_set1_epi16(kInt8WeightMax), bottom = _mm_set1_epi16(-kInt8WeightMax);
        __m128i vsum = _mm_setzero_si128();
        const auto halves = [&](int64_t i) {  // 8 values rounded (ties to even) and clamped, 16-bit
            const __m128i a = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(row + i), vinv));
            const __m128i b = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(row + i + 4), vinv));
            return _mm_max_epi16(_mm_min_epi16(_mm_packs_epi32(a, b), top), bottom);
        };
        for (; k + 16 <= row_len; k += 16) {
            const __m128i lo16 = halves(k), hi16 = halves(k + 8);
            vsum = _mm_add_epi32(vsum, _mm_madd_epi16(_mm_add_epi16(lo16, hi16), _mm_set1_epi16(1)));
            _mm_storeu_si128(reinterpret_cast<__m128i *>(out + k), _mm_packs_epi16(lo16, hi16));
        }
        alignas(16) int32_t parts[4];
        _mm_store_si128(reinterpret_cast<__m128i *>(parts), vsum);
        total = parts[0] + parts[1] + parts[2] + parts[3];
#endif
        for (; k < row_len; ++k) {
            const float v = round_even(row[k] * inv);
            out[k] = static_cast<int8_t>(static_cast<int32_t>(std::clamp(v, -float(kInt8WeightMax), float(kInt8WeightMax))));
            total += out[k];
        }
        scale[n] = std::isfinite(s) ? s : 1.0f;
        sum[n] = total;
    }
}

void quantize_activation_rows(const float * x, int64_t row_stride, int64_t row_len, int64_t row_begin,
                              int64_t row_end, uint8_t * q, float * scale, int32_t * zero) {
    for (int64_t m = row_begin; m < row_end; ++m) {
        const float * row = x + m * row_stride;
        float lo, hi;
        bool nan;
        row_range(row, row_len, &lo, &hi, &nan);
        uint8_t * out = q + m * row_len;
        const float range = hi - lo;
        if (nan || !std::isfinite(range)) {
            scale[m] = std::numeric_limits<float>::quiet_NaN();
            zero[m] = 0;
            std::memset(out, 0, static_cast<size_t>(row_len));
            continue;
        }
        float s = range / 255.0f;
        if (!std::isfinite(1.0f / s)) s = std::numeric_limits<float>::infinity();  // as for the weights
        const float inv = 1.0f / s;
        const float z = round_even(-lo * inv);
        quantize_row(row, row_len, inv, z, out);
        scale[m] = std::isfinite(s) ? s : 1.0f;
        zero[m] = static_cast<int32_t>(z);
    }
}

void dequantize_products(void * acc, int64_t n_cols, int64_t row_begin, int64_t row_end, const float * scale_x,
                         const int32_t * zero, const float * scale_w, const int32_t * sum_w) {
    auto * bytes = static_cast<unsigned char *>(acc);
    for (int64_t m = row_begin; m < row_end; ++m) {
        unsigned char * row = bytes + m * n_cols * 4;
        const float sx = scale_x[m];
        const int32_t z = zero[m];
        for (int64_t n = 0; n < n_cols; ++n) {
            int32_t a;
            std::memcpy(&a, row + n * 4, 4);  // the slot holds int32 bits until it is overwritten
            const float v = sx * scale_w[n] * static_cast<float>(a - z * sum_w[n]);
            std::memcpy(row + n * 4, &v, 4);
        }
    }
}

}  // namespace minicpmo
