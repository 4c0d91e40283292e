#include "core/onednn_row_ops.h"

#ifdef MINICPMO_ONEDNN

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/cpu_clones.h"

namespace minicpmo {

namespace {

bool f32_contiguous(const ggml_tensor * t) { return t->type == GGML_TYPE_F32 && ggml_is_contiguous(t); }

// one row: y = a + b or a * b (b a row of the same width), vectorised per instruction set
MINICPMO_CPU_CLONES
void add_row(const float * a, const float * b, float * y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

MINICPMO_CPU_CLONES
void mul_row(const float * a, const float * b, float * y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}

// sixteen partial sums, so the compiler vectorises without reassociating one sum
MINICPMO_CPU_CLONES
float row_sum(const float * x, int64_t n) {
    float part[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int j = 0; j < 16; ++j) part[j] += x[i + j];
    }
    float s = 0.0f;
    for (; i < n; ++i) s += x[i];
    for (float p : part) s += p;
    return s;
}

MINICPMO_CPU_CLONES
float row_centered_squares(const float * x, float mean, int64_t n) {
    float part[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int j = 0; j < 16; ++j) {
            const float d = x[i + j] - mean;
            part[j] += d * d;
        }
    }
    float s = 0.0f;
    for (; i < n; ++i) s += (x[i] - mean) * (x[i] - mean);
    for (float p : part) s += p;
    return s;
}

// (x - mean) * rstd, then * scale and + shift where given
MINICPMO_CPU_CLONES
void normalize_row(const float * x, float mean, float rstd, const float * scale, const float * shift, float * y,
                   int64_t n) {
    if (scale && shift) {
        for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd * scale[i] + shift[i];
    } else if (scale) {
        for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd * scale[i];
    } else if (shift) {
        for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd + shift[i];
    } else {
        for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * rstd;
    }
}

}  // namespace

bool is_f32_row(const ggml_tensor * t, int64_t width) {
    return f32_contiguous(t) && t->ne[0] == width && ggml_nrows(t) == 1;
}

bool onednn_row_op_supported(const ggml_tensor * op) {
    if (!f32_contiguous(op) || !op->src[0] || !f32_contiguous(op->src[0]) || !ggml_are_same_shape(op, op->src[0])) {
        return false;
    }
    if (op->op == GGML_OP_NORM) return true;
    if (op->op != GGML_OP_ADD && op->op != GGML_OP_MUL) return false;
    const ggml_tensor * b = op->src[1];
    return f32_contiguous(b) && (ggml_are_same_shape(op, b) || is_f32_row(b, op->ne[0]));
}

void compute_row_binary(ggml_tensor * op, int n_threads) {
    const ggml_tensor * a = op->src[0];
    const ggml_tensor * b = op->src[1];
    const int64_t n = op->ne[0], rows = ggml_nrows(op);
    const bool broadcast = ggml_nrows(b) == 1 && rows > 1;
    const bool add = op->op == GGML_OP_ADD;
    const auto * as = static_cast<const float *>(a->data);
    const auto * bs = static_cast<const float *>(b->data);
    auto * ys = static_cast<float *>(op->data);
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        const float * br = broadcast ? bs : bs + r * n;
        (add ? add_row : mul_row)(as + r * n, br, ys + r * n, n);
    }
}

void compute_row_norm(const ggml_tensor * x, float eps, const ggml_tensor * scale, const ggml_tensor * shift,
                      ggml_tensor * dst, int n_threads) {
    const int64_t n = x->ne[0], rows = ggml_nrows(x);
    const auto * xs = static_cast<const float *>(x->data);
    const float * s = scale ? static_cast<const float *>(scale->data) : nullptr;
    const float * b = shift ? static_cast<const float *>(shift->data) : nullptr;
    auto * ys = static_cast<float *>(dst->data);
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        const float * row = xs + r * n;
        const float mean = row_sum(row, n) / static_cast<float>(n);
        const float var = row_centered_squares(row, mean, n) / static_cast<float>(n);
        normalize_row(row, mean, 1.0f / std::sqrt(var + eps), s, b, ys + r * n, n);
    }
}

}  // namespace minicpmo

#endif
