// The quantization around the int8 matrix products of compute_type "int8" (core/onednn_matmul):
// weights per output row to 7-bit signed integers, activations per row to unsigned bytes with a zero
// point, and the integer sums back to F32.
//
// Why 7 bits for the weights: CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) multiply bytes
// with vpmaddubsw, which adds two u8 x s8 products into a saturating 16-bit lane: 2 x 255 x 63 =
// 32130 fits, 2 x 255 x 127 does not. With |q| <= 63 no CPU saturates, so the integer sums, and the
// products, are the same on every CPU (exact integer arithmetic, whatever the kernel or ISA).
#pragma once

#include <cstdint>

namespace minicpmo {

constexpr int kInt8WeightMax = 63;  // |quantized weight| <= this (see above)
// The longest rows whose sums stay exact in int32: |sum - zero * weight sum| <= 2 * 255 * 63 * length
constexpr int64_t kInt8MaxRowLength = 65536;

// Row n of `w` (n_rows rows of `row_len` F32 values) -> q[n][k] = round(w[n][k] / scale[n]) with
// scale[n] = max_k |w[n][k]| / 63 (an all-zero row, or one whose 1 / scale overflows, is all zeros
// with scale 1), and sum[n] = sum_k q[n][k] (the activations' zero point is subtracted through it).
// Throws invalid_argument for a non-finite weight.
void quantize_weight_rows(const float * w, int64_t n_rows, int64_t row_len, int8_t * q, float * scale, int32_t * sum);

// Activation row m (row_len values at x + m * row_stride) -> q[m][k] = clamp(round(x / scale[m]) +
// zero[m], 0, 255) over a range that includes 0: scale[m] = (max(x, 0) - min(x, 0)) / 255 (zeros
// with scale 1 as for the weights), zero[m] = round(-min(x, 0) / scale[m]); x ~ scale[m] * (q -
// zero[m]). A row holding a NaN or infinity gets scale[m] = NaN (its products come out NaN, as F32
// arithmetic would give).
// Rows [row_begin, row_end) only, so that callers split the rows between threads.
void quantize_activation_rows(const float * x, int64_t row_stride, int64_t row_len, int64_t row_begin,
                              int64_t row_end, uint8_t * q, float * scale, int32_t * zero);

// Rows [row_begin, row_end) of the M x N integer sums acc = q_x . q_w^T (in place, row-major, F32
// slots holding int32 bits) -> F32 products: scale_x[m] * scale_w[n] * (acc - zero[m] * sum_w[n]).
void dequantize_products(void * acc, int64_t n_cols, int64_t row_begin, int64_t row_end, const float * scale_x,
                         const int32_t * zero, const float * scale_w, const int32_t * sum_w);

}  // namespace minicpmo
