// The resampler's 2-D sin-cos key position table for one patch grid (spec §2), computed on the
// host in float32 as the reference's numpy code does; grids wider than 70 just extend it.
#pragma once

#include <vector>

namespace minicpmo {

// Row-major over the (h, w) grid: row r*w + c = [sin(c ω), cos(c ω), sin(r ω), cos(r ω)],
// ω_i = 10000^(-i / (E/4)), i < E/4. E must be a multiple of 4.
std::vector<float> resampler_key_positions(int grid_h, int grid_w, int embd);

}  // namespace minicpmo
