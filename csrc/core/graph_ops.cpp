#include "core/graph_ops.h"

#include <cstdint>
#include <cstring>

#include "core/error.h"

namespace minicpmo {

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps) {
    x = ggml_norm(ctx, x, eps);
    if (w) x = ggml_mul(ctx, x, w);
    return b ? ggml_add(ctx, x, b) : x;
}

ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    return b ? ggml_add(ctx, y, b) : y;
}

ggml_tensor * conv_taps(ggml_context * ctx, ggml_tensor * x, int K, int dilation, int stride, int64_t T_out) {
    if (x->nb[0] != ggml_type_size(x->type) || K < 1 || T_out < 1) fail(Status::internal, "conv_taps: bad input");
    const size_t step = x->nb[1];
    ggml_tensor * v = ggml_view_4d(ctx, x, x->ne[0], 1, 1, 1, step * dilation, step * stride, x->nb[2], 0);
    v->ne[1] = K;
    v->ne[2] = T_out;
    v->ne[3] = x->ne[2];
    if (x->ne[3] != 1 || ggml_nbytes(v) > ggml_nbytes(x)) fail(Status::internal, "convolution taps past the input");
    return v;
}

void tap_major_kernel(const void * file_order, void * tap_major, int64_t K, int64_t C_in, int64_t C_out,
                      size_t element_size) {
    const auto * from = static_cast<const uint8_t *>(file_order);
    auto * to = static_cast<uint8_t *>(tap_major);
    for (int64_t o = 0; o < C_out; ++o) {
        for (int64_t c = 0; c < C_in; ++c) {
            for (int64_t k = 0; k < K; ++k) {
                std::memcpy(to + ((o * K + k) * C_in + c) * element_size, from + ((o * C_in + c) * K + k) * element_size,
                            element_size);
            }
        }
    }
}

}  // namespace minicpmo
