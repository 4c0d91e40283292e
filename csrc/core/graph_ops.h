// Graph building blocks every encoder and decoder shares (vision, audio, Token2Wav): one definition
// of each, so a numerical change reaches all of them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ggml.h"

namespace minicpmo {

// LayerNorm over the first dimension: normalize, then scale by w and shift by b (either may be null).
ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps);

// x w^T + b for a weight stored [in, out] (ggml_mul_mat's layout); b may be null.
ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b);

// The taps of a 1-D convolution over x ne (C, T, B) (a time step's channels adjacent): the
// view ne (C, K, T_out, B) whose [:, k, t, b] is frame t * stride + k * dilation of batch b. Made
// contiguous (ggml_cont: copies of runs of C values) it is the convolution's input as a matrix ne
// (C * K, T_out * B) for a kernel whose column k * C + c multiplies channel c at tap k. Its windows
// overlap, which ggml's view functions refuse (they size a view as if it were contiguous), so the view
// is made one window long and then widened; its extent, from its strides, stays inside x.
ggml_tensor * conv_taps(ggml_context * ctx, ggml_tensor * x, int K, int dilation, int stride, int64_t T_out);

// A convolution kernel in the file's (PyTorch's) order, ne (K, C_in, C_out), re-laid on the host
// (elements of `element_size` bytes) as the matrix ne (C_in * K, C_out) that conv_taps' input multiplies.
void tap_major_kernel(const void * file_order, void * tap_major, int64_t K, int64_t C_in, int64_t C_out,
                      size_t element_size);

}  // namespace minicpmo
