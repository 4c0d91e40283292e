// Bicubic resize of 8-bit RGB images that reproduces Pillow 10.4.0's Image.resize(size, BICUBIC) bit
// for bit (the MiniCPM-o image processor resizes with Pillow, spec §1.2).
//
// Pillow's algorithm, as documented and measured: a separable Keys cubic (a = -0.5) whose support
// (2 source pixels) is stretched by the downscale factor, so shrinking also low-pass filters. For
// each output index the taps are centred at (i + 0.5) * in/out, normalised to sum 1, then turned
// into 22-bit fixed-point integers. Each pass rounds and clamps to uint8. The horizontal pass always
// runs first (only over the source rows the vertical pass will read), as in Pillow 10.4.0, the
// version the official stack pins (minicpmo-utils); Pillow 13 changed the order for images whose
// height shrinks much more than their width, and this file follows the pinned version. An axis
// whose size does not change is not filtered at all.
#pragma once

#include <cstdint>
#include <vector>

#include "vision/rgb_image.h"

namespace minicpmo {

// Largest output side resize_bicubic accepts (extreme aspect ratios upscale one side a lot).
constexpr int kMaxResizeSide = 1 << 17;

// Fixed-point filter taps of one axis: output index i reads `count[i]` source samples starting at
// `first[i]`, weighted by weights[i * ksize + k] / 2^kResamplePrecisionBits.
struct ResampleTaps {
    int ksize = 0;
    std::vector<int> first;
    std::vector<int> count;
    std::vector<int32_t> weights;
};

// 32-bit accumulators: 8 bits of pixel value, 2 bits of headroom for the cubic's overshoot.
constexpr int kResamplePrecisionBits = 32 - 8 - 2;

// Taps for resizing an axis of `in_size` samples to `out_size` samples (both >= 1).
ResampleTaps bicubic_taps(int in_size, int out_size);

// Pillow-10.4.0-exact bicubic resize. Throws invalid_argument for an invalid source (see
// validate_input_image), a target side < 1 or > kMaxResizeSide, or when the output or the
// intermediate image would exceed kMaxWorkPixels.
RgbImage resize_bicubic(const RgbImageView & src, int new_width, int new_height);

}  // namespace minicpmo
