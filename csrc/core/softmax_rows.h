// Row softmax of attention scores into BF16 or F32 probabilities: the step between the two matrix
// products of the oneDNN backend's fused attention (core/onednn_attention; BF16 in BF16 sessions, F32
// in int8 sessions). A vectorised exp (range reduction by ln 2 and a polynomial, within ~2 ulp of
// expf) and, for BF16, round-to-nearest-even, compiled for AVX-512, AVX2 and baseline x86-64 and
// chosen by CPUID at load.
#pragma once

#include <cstdint>

namespace minicpmo {

// For each of `rows` rows of `cols` F32 scores (row stride `ld`): p = softmax(scale * s + mask), with
// `mask` an additive F32 mask of the same shape (row stride `ld_mask`; 0 / -inf) or null, written as
// BF16 bits (row stride `ld_out`). A row whose terms are all -inf gives zeros, not NaN; a NaN score
// makes its row NaN.
void softmax_rows_to_bf16(const float * scores, int64_t ld, const float * mask, int64_t ld_mask, uint16_t * out,
                          int64_t ld_out, int64_t rows, int64_t cols, float scale);

// The same softmax written as F32 (row stride `ld_out`); `out` may be `scores` itself.
void softmax_rows_to_f32(const float * scores, int64_t ld, const float * mask, int64_t ld_mask, float * out,
                         int64_t ld_out, int64_t rows, int64_t cols, float scale);

// exp(x) elementwise by the same vectorised exp, exposed for tests: within a few ulp of exp for
// -87 <= x <= 88.7, 0 below, +inf above, NaN for NaN.
void vector_exp(const float * x, float * y, int64_t n);

}  // namespace minicpmo
