#include "token2wav/hift_snake.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/cpu_clones.h"
#include "ggml-backend.h"

namespace minicpmo {

namespace {

// pi in three parts: A (8 significant bits) and B (12) make k * A and k * B exact for |k| < 2^12,
// so v - k * pi keeps its accuracy up to |v| = kReducedLimit; beyond it std::sin takes over
constexpr float kPiA = 0x1.92p+1f;
constexpr float kPiB = 0x1.fb6p-11f;
constexpr float kPiC = -0x1.777a5cp-24f;
constexpr float kInvPi = 0x1.45f306p-2f;
constexpr float kReducedLimit = 8192.0f;

// sin(r) on [-pi/2, pi/2] by its Taylor series to r^11: the first omitted term is below 6e-8
constexpr float kS3 = -1.0f / 6.0f, kS5 = 1.0f / 120.0f, kS7 = -1.0f / 5040.0f, kS9 = 1.0f / 362880.0f,
                kS11 = -1.0f / 39916800.0f;

// sin(v) for |v| <= kReducedLimit: v = k pi + r with |r| <= pi / 2, sin(v) = (-1)^k sin(r)
inline float reduced_sine(float v) {
    const float k = (v * kInvPi + kRoundToInteger) - kRoundToInteger;
    float r = v - k * kPiA;
    r -= k * kPiB;
    r -= k * kPiC;
    const float r2 = r * r;
    const float p = r + r * r2 * (kS3 + r2 * (kS5 + r2 * (kS7 + r2 * (kS9 + r2 * kS11))));
    // 1 when k is odd, else 0
    const float odd = std::fabs(k - 2.0f * ((0.5f * k + kRoundToInteger) - kRoundToInteger));
    return p - 2.0f * odd * p;
}

// Plain loops the compiler vectorises (MINICPMO_CPU_CLONES).
// Each returns whether an argument lay past kReducedLimit: the caller then redoes the row with
// std::sin (a NaN argument gives NaN either way).

// y = x + inv * sin(alpha x)^2 over one time step's channels
MINICPMO_CPU_CLONES
bool snake_row(const float * x, const float * alpha, const float * inv, float * y, int64_t n) {
    int beyond = 0;
    for (int64_t i = 0; i < n; ++i) {
        const float v = alpha[i] * x[i];
        const float s = reduced_sine(v);
        y[i] = x[i] + inv[i] * s * s;
        beyond |= std::fabs(v) > kReducedLimit;
    }
    return beyond != 0;
}

MINICPMO_CPU_CLONES
bool sine_row(const float * x, float * y, int64_t n) {
    int beyond = 0;
    for (int64_t i = 0; i < n; ++i) {
        y[i] = reduced_sine(x[i]);
        beyond |= std::fabs(x[i]) > kReducedLimit;
    }
    return beyond != 0;
}

void snake_row_checked(const float * x, const float * alpha, const float * inv, float * y, int64_t n) {
    if (!snake_row(x, alpha, inv, y, n)) return;
    for (int64_t i = 0; i < n; ++i) {
        const float s = std::sin(alpha[i] * x[i]);
        y[i] = x[i] + inv[i] * s * s;
    }
}

// dst ne (C, T + 2 pad) from args x ne (C, T), alpha, inv; this thread's share of the time steps
void padded_snake_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x = dst->src[0];
    const float * alpha = static_cast<const float *>(dst->src[1]->data);
    const float * inv = static_cast<const float *>(dst->src[2]->data);
    const int64_t C = dst->ne[0], T_out = dst->ne[1], pad = (T_out - x->ne[1]) / 2;
    const int64_t per = (T_out + nth - 1) / nth, t0 = std::min(T_out, per * ith), t1 = std::min(T_out, t0 + per);
    for (int64_t t = t0; t < t1; ++t) {
        float * y = reinterpret_cast<float *>(static_cast<char *>(dst->data) + t * dst->nb[1]);
        if (t < pad || t >= T_out - pad) {
            std::memset(y, 0, static_cast<size_t>(C) * sizeof(float));
        } else {
            const char * xt = static_cast<const char *>(x->data) + (t - pad) * x->nb[1];
            snake_row_checked(reinterpret_cast<const float *>(xt), alpha, inv, y, C);
        }
    }
}

bool on_host(const ggml_tensor * t) { return t->buffer && ggml_backend_buffer_is_host(t->buffer); }

}  // namespace

ggml_tensor * hift_padded_snake(ggml_context * ctx, ggml_tensor * x, ggml_tensor * alpha, ggml_tensor * inv, int pad) {
    if (on_host(alpha) && on_host(inv)) {
        if (!ggml_is_contiguous_rows(x)) x = ggml_cont(ctx, x);
        ggml_tensor * args[3] = {x, alpha, inv};
        return ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1] + 2 * pad, 1, 1, args, 3, padded_snake_op,
                              GGML_N_TASKS_MAX, nullptr);
    }
    // device weights: the ggml chain, in the mul -> sin -> sqr -> mul -> add order backends fuse
    ggml_tensor * y = ggml_mul(ctx, x, alpha);
    y = ggml_sin(ctx, y);
    y = ggml_sqr(ctx, y);
    y = ggml_mul(ctx, y, inv);
    y = ggml_add(ctx, x, y);
    return pad == 0 ? y : ggml_pad_ext(ctx, y, 0, 0, pad, pad, 0, 0, 0, 0);
}

void hift_sine(const float * in, float * out, int64_t n) {
    if (!sine_row(in, out, n)) return;
    for (int64_t i = 0; i < n; ++i) out[i] = std::sin(in[i]);
}

}  // namespace minicpmo
