// The elementwise steps between the oneDNN backend's products that the backend runs itself, in BF16
// and int8 sessions: ADD and MUL of an F32 tensor with a tensor of its shape or with one row broadcast
// over it (biases, LayerNorm's affine, adaLN shifts, scales and gates, residuals), and NORM (LayerNorm
// without affine), a NORM and the MUL and ADD of rows that follow it in one pass.
//
// Left to ggml's CPU backend, they cut the graph into pieces between the two backends: a layer of the
// flow's DiT ran in ~11 scheduler splits, each a hand-over between ggml's and oneDNN's use of the
// threads, and a product's bias, gate and residual were three more passes over its output. On the
// backend they join its products (core/onednn_matmul fuses a product's bias, activation, gate and
// residual into the product itself) and the graph keeps a few splits per layer.
// Built only with MINICPMO_ONEDNN (OpenMP).
#pragma once

#ifdef MINICPMO_ONEDNN

#include "ggml.h"

namespace minicpmo {

// Whether `op` is one of these steps: ADD or MUL with F32 contiguous operands, the second of `op`'s
// shape or one row of its width; or NORM of F32 contiguous rows
bool onednn_row_op_supported(const ggml_tensor * op);

// `op` (an ADD or MUL that onednn_row_op_supported accepts) on `n_threads`
void compute_row_binary(ggml_tensor * op, int n_threads);

// LayerNorm of each row of x (contiguous F32, epsilon `eps`), times the row `scale` and plus the row
// `shift` (either may be null), into dst (x's shape, contiguous F32; may be x), on `n_threads`
void compute_row_norm(const ggml_tensor * x, float eps, const ggml_tensor * scale, const ggml_tensor * shift,
                      ggml_tensor * dst, int n_threads);

// Whether t is one F32 contiguous row of `width` values (a bias, a LayerNorm weight, an adaLN chunk)
bool is_f32_row(const ggml_tensor * t, int64_t width);

}  // namespace minicpmo

#endif
