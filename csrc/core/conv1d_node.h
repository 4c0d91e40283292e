// A 1-D convolution as one graph node, for the oneDNN backend to run as a direct convolution.
//
// ggml builds a convolution from its gathered taps (conv_taps, or im2col) and one matrix product: on
// HiFT's shapes the gather writes K copies of every activation (about 430 MB per second of audio)
// and took a fifth of the vocoder's time. As one node the oneDNN backend (core/onednn_convolution)
// runs it as oneDNN's convolution primitive, which reads the activations where they are and adds the
// bias in the same pass. It is a ggml custom op, so graphs use it only where that backend computes
// them (ComputeBackend::onednn_products); devices and the plain CPU path keep taps + product. The CPU
// backend can still run the node (a direct loop, correct but not fast) should the scheduler place it there.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace minicpmo {

// The taps of a convolution: kernel size, spacing of the taps, step between output positions
struct Conv1dShape {
    int kernel = 1, dilation = 1, stride = 1;
};

// The output steps a convolution makes of T_in input steps (0 when the input is shorter than the
// kernel's span), and the input steps that T_out outputs read
int64_t conv1d_output_steps(const Conv1dShape & s, int64_t T_in);
int64_t conv1d_input_steps(const Conv1dShape & s, int64_t T_out);

// Conv1d of xp ne (C_in, T) (channel-major, already zero-padded: the node pads nothing) with the
// tap-major kernel w ne (C_in * K, C_out) (tap_major_kernel's layout), plus bias b ne (C_out) (may
// be null); all F32, xp contiguous. Returns ne (C_out, T_out), T_out = (T - dilation (K - 1) - 1) /
// stride + 1. `shape` must outlive every graph holding the node (the model's, typically).
ggml_tensor * conv1d_node(ggml_context * ctx, ggml_tensor * xp, ggml_tensor * w, ggml_tensor * b,
                          const Conv1dShape * shape);

// The shape of a node conv1d_node made, or null for any other node. Its sources: xp, w, and b when
// it has one (src[2]).
const Conv1dShape * conv1d_node_shape(const ggml_tensor * op);

}  // namespace minicpmo
