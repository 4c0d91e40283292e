// HiFT's Snake activation, x + 1/(alpha + eps) * sin(alpha x)^2 per channel, with the zero time
// padding of the convolution that reads it, as one graph node.
//
// ggml's CPU backend would run it as six passes (mul, sin, sqr, mul, add, pad) whose sine is a
// scalar libm call per element, about a third of the vocoder's time on 2 cores. On weights in host
// memory it is one custom op here: a vectorised sine (Cody-Waite reduction by pi and an odd
// polynomial, within ~2 ulp of sinf), compiled for AVX-512, AVX2 and baseline x86-64 and chosen by
// CPUID at load. Weights on a device (CUDA, Metal, Vulkan) keep the ggml op chain, which those
// backends run on the device.
#pragma once

#include "ggml.h"

namespace minicpmo {

// x ne (C, T) channel-major, alpha and inv ne (C, 1) F32. Returns ne (C, T + 2 * pad): Snake(x)
// with `pad` zero time steps on both sides (Snake(0) = 0, so padding before or after is the same).
ggml_tensor * hift_padded_snake(ggml_context * ctx, ggml_tensor * x, ggml_tensor * alpha, ggml_tensor * inv, int pad);

// The vectorised sine of hift_padded_snake, exposed for tests: out[i] = sin(in[i]).
void hift_sine(const float * in, float * out, int64_t n);

}  // namespace minicpmo
