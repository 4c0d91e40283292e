// Position ids of the NaViT SigLIP tower (spec §1.1 step 2): each patch of an h x w grid is mapped
// to one of side x side learned positions by bucketizing its fractional coordinates.
//
// Mathematically bucket(r) = floor(side * r / n), but the reference computes the fractions and
// the bucket boundaries with float32 torch.arange on the CPU, and at exact ties (r/n = m/side) the
// rounding decides. We emulate those float semantics, measured on torch 2.13 CPU:
//   * step = float32(1) / float32(n)   (1 / tensor(n) is computed in float32);
//   * arange(start, end, step) has ceil((end - start) / step) elements (double arithmetic); the
//     kernel fills blocks of 16 outputs as two 8-lane vectors, each lane j of a vector starting at
//     index i0 being float32(double(float32(start + step*i0)) + j*step); the tail after the last
//     whole block is float32(start + step*i) (all products and sums in double);
//   * fractions = arange(0, 1 - 1e-6, step), boundaries = arange(1/side, 1, 1/side) (Python
//     doubles), bucket = number of boundaries <= fraction, compared in float32.
// The spec's exception table (209 grid sizes in 1..1024) is reproduced by this, not embedded.
#pragma once

#include <cstdint>
#include <vector>

namespace minicpmo {

// float32 values of torch.arange(start, end, step) on the CPU (float32 output).
std::vector<float> torch_arange_f32(double start, double end, double step);

// Bucket index per row/column of an n-patch side; throws invalid_argument unless 1 <= n <= 65536.
std::vector<int32_t> navit_buckets(int n, int side = 70);

// pos[r * w + c] = bucket_h[r] * side + bucket_w[c], h * w ids. Throws invalid_argument for
// h, w or side outside [1, 65536] or h * w > 2^26.
std::vector<int32_t> navit_position_ids(int h, int w, int side = 70);

}  // namespace minicpmo
