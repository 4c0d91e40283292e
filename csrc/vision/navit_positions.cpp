// Built with -ffp-contract=off (CMakeLists.txt): a fused multiply-add would round start + step*i
// once instead of twice and change which side of a tie a fraction lands on.
#include "vision/navit_positions.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace minicpmo {

namespace {

constexpr int kMaxGridSide = 65536;
constexpr int kMaxPositionTableSide = 4096;  // side * side ids must fit int32
constexpr int64_t kMaxPositions = int64_t(1) << 26;

// torch's CPU arange kernel writes whole blocks of two 8-float vectors, then single values
constexpr int64_t kVectorLanes = 8;
constexpr int64_t kBlock = 2 * kVectorLanes;

void check_range(int v, int hi, const char * what) {
    if (v < 1 || v > hi) {
        fail(Status::invalid_argument, std::string("navit_position_ids: ") + what + " must be in [1, " +
                                           std::to_string(hi) + "], got " + std::to_string(v));
    }
}

}  // namespace

std::vector<float> torch_arange_f32(double start, double end, double step) {
    const double count_d = std::ceil((end - start) / step);
    if (!(count_d > 0.0)) return {};
    if (count_d > double(kMaxPositions)) fail(Status::invalid_argument, "torch_arange_f32: too many elements");
    const int64_t count = static_cast<int64_t>(count_d);
    const int64_t vectorised = count / kBlock * kBlock;

    std::vector<float> out(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
        if (i < vectorised) {
            const int64_t lane = i % kVectorLanes;
            const float base = static_cast<float>(start + step * double(i - lane));
            out[size_t(i)] = static_cast<float>(double(base) + double(lane) * step);
        } else {
            out[size_t(i)] = static_cast<float>(start + step * double(i));
        }
    }
    return out;
}

std::vector<int32_t> navit_buckets(int n, int side) {
    check_range(n, kMaxGridSide, "grid side");
    check_range(side, kMaxPositionTableSide, "position table side");

    const float step = 1.0f / static_cast<float>(n);
    const std::vector<float> fractions = torch_arange_f32(0.0, 1.0 - 1e-6, double(step));
    if (fractions.size() != size_t(n)) {
        // cannot happen below kMaxGridSide; the reference would fail with a shape mismatch
        fail(Status::internal, "navit_buckets: arange gave " + std::to_string(fractions.size()) +
                                   " fractions for a grid side of " + std::to_string(n));
    }
    const double inv_side = 1.0 / side;
    const std::vector<float> boundaries = torch_arange_f32(inv_side, 1.0, inv_side);

    std::vector<int32_t> buckets(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
        // bucketize(right=True): how many boundaries are <= the fraction (boundaries ascend)
        buckets[size_t(r)] =
            int32_t(std::upper_bound(boundaries.begin(), boundaries.end(), fractions[size_t(r)]) - boundaries.begin());
    }
    return buckets;
}

std::vector<int32_t> navit_position_ids(int h, int w, int side) {
    check_range(h, kMaxGridSide, "h");
    check_range(w, kMaxGridSide, "w");
    if (int64_t(h) * w > kMaxPositions) {
        fail(Status::invalid_argument, "navit_position_ids: " + std::to_string(h) + "x" + std::to_string(w) +
                                           " patches exceed the limit of " + std::to_string(kMaxPositions));
    }
    const std::vector<int32_t> bh = navit_buckets(h, side);
    const std::vector<int32_t> bw = navit_buckets(w, side);
    std::vector<int32_t> ids(size_t(h) * size_t(w));
    for (int r = 0; r < h; ++r) {
        for (int c = 0; c < w; ++c) ids[size_t(r) * size_t(w) + size_t(c)] = bh[size_t(r)] * side + bw[size_t(c)];
    }
    return ids;
}

}  // namespace minicpmo
