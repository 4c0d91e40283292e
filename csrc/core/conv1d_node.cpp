#include "core/conv1d_node.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/cpu_clones.h"
#include "core/error.h"
#include "ggml-impl.h"  // ggml_custom_op_params: how a custom node keeps its function (pinned ggml)

namespace minicpmo {

namespace {

// sixteen partial sums, so the compiler vectorises without reassociating a single sum
MINICPMO_CPU_CLONES
float dot(const float * a, const float * b, int64_t n) {
    float part[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int j = 0; j < 16; ++j) part[j] += a[i + j] * b[i + j];
    }
    float s = 0.0f;
    for (; i < n; ++i) s += a[i] * b[i];
    for (float p : part) s += p;
    return s;
}

// The CPU backend's fallback: this thread's share of the output steps, each output channel one dot
// product per tap (a tap's C_in inputs are contiguous, and so are the kernel's)
void conv1d_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const auto & shape = *static_cast<const Conv1dShape *>(userdata);
    const ggml_tensor * xp = dst->src[0];
    const ggml_tensor * w = dst->src[1];
    const ggml_tensor * b = dst->src[2];
    const int64_t C_in = xp->ne[0], C_out = dst->ne[0], T_out = dst->ne[1], K = shape.kernel;
    const auto * x = static_cast<const float *>(xp->data);
    const auto * wk = static_cast<const float *>(w->data);
    const float * bias = b ? static_cast<const float *>(b->data) : nullptr;
    const int64_t per = (T_out + nth - 1) / nth, t0 = std::min(T_out, per * ith), t1 = std::min(T_out, t0 + per);
    for (int64_t t = t0; t < t1; ++t) {
        float * y = static_cast<float *>(dst->data) + t * C_out;
        for (int64_t o = 0; o < C_out; ++o) {
            float acc = bias ? bias[o] : 0.0f;
            for (int64_t k = 0; k < K; ++k) {
                acc += dot(wk + (o * K + k) * C_in, x + (t * shape.stride + k * shape.dilation) * C_in, C_in);
            }
            y[o] = acc;
        }
    }
}

}  // namespace

int64_t conv1d_output_steps(const Conv1dShape & s, int64_t T_in) {
    const int64_t span = static_cast<int64_t>(s.dilation) * (s.kernel - 1) + 1;
    return T_in < span ? 0 : (T_in - span) / s.stride + 1;
}

int64_t conv1d_input_steps(const Conv1dShape & s, int64_t T_out) {
    return (T_out - 1) * s.stride + static_cast<int64_t>(s.dilation) * (s.kernel - 1) + 1;
}

ggml_tensor * conv1d_node(ggml_context * ctx, ggml_tensor * xp, ggml_tensor * w, ggml_tensor * b,
                          const Conv1dShape * shape) {
    const int64_t C_in = xp->ne[0], T = xp->ne[1];
    const bool f32 = xp->type == GGML_TYPE_F32 && w->type == GGML_TYPE_F32 && (!b || b->type == GGML_TYPE_F32);
    if (!shape || shape->kernel < 1 || shape->dilation < 1 || shape->stride < 1 || !f32 || !ggml_is_contiguous(xp) ||
        !ggml_is_contiguous(w) || xp->ne[2] != 1 || xp->ne[3] != 1 || w->ne[0] != C_in * shape->kernel ||
        w->ne[2] != 1 || w->ne[3] != 1 || (b && (!ggml_is_contiguous(b) || ggml_nelements(b) != w->ne[1]))) {
        fail(Status::internal, "conv1d node: operands of the wrong type or shape");
    }
    const int64_t T_out = conv1d_output_steps(*shape, T);
    if (T_out < 1) fail(Status::internal, "conv1d node: input of " + std::to_string(T) + " steps is shorter than the kernel");
    ggml_tensor * args[3] = {xp, w, b};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], T_out, 1, 1, args, b ? 3 : 2, conv1d_op, GGML_N_TASKS_MAX,
                          const_cast<Conv1dShape *>(shape));
}

const Conv1dShape * conv1d_node_shape(const ggml_tensor * op) {
    if (op->op != GGML_OP_CUSTOM) return nullptr;
    ggml_custom_op_params params;
    std::memcpy(&params, op->op_params, sizeof params);
    return params.fun == conv1d_op ? static_cast<const Conv1dShape *>(params.userdata) : nullptr;
}

}  // namespace minicpmo
