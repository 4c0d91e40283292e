// Built with -ffp-contract=off (CMakeLists.txt) so every double operation rounds like Python's.
#include "vision/image_slicing.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "vision/bicubic_resize.h"
#include "vision/rgb_image.h"

namespace minicpmo {

namespace {

// Python's round(x) for a float: nearest integer, ties to even.
double round_half_even(double x) {
    const double lower = std::floor(x);
    const double diff = x - lower;  // exact
    if (diff > 0.5) return lower + 1.0;
    if (diff < 0.5) return lower;
    return std::fmod(lower, 2.0) == 0.0 ? lower : lower + 1.0;
}

// Sizes here stay far below INT_MAX for valid configs; refuse anything else instead of wrapping.
int checked_side(int64_t v, const char * what) {
    if (v < 1 || v > kMaxResizeSide) {
        fail(Status::invalid_argument, std::string("image slicing: ") + what + " side " + std::to_string(v) +
                                           " is outside [1, " + std::to_string(kMaxResizeSide) + "]");
    }
    return static_cast<int>(v);
}

// Python's int(x) for a finite float that must fit the sizes we handle.
int64_t truncate_to_int(double x, const char * what) {
    if (!std::isfinite(x) || std::fabs(x) > double(int64_t(1) << 40)) {
        fail(Status::invalid_argument, std::string("image slicing: ") + what + " is out of range");
    }
    return static_cast<int64_t>(x);
}

}  // namespace

void validate_slice_config(const SliceConfig & c) {
    if (c.patch_size < 1 || c.patch_size > 256) {
        fail(Status::invalid_argument, "patch_size must be in [1, 256], got " + std::to_string(c.patch_size));
    }
    if (c.scale_resolution < c.patch_size || c.scale_resolution > 4096) {
        fail(Status::invalid_argument, "scale_resolution must be in [patch_size, 4096], got " +
                                           std::to_string(c.scale_resolution));
    }
    if (c.max_slice_nums < 1 || c.max_slice_nums > 1024) {
        fail(Status::invalid_argument, "max_slice_nums must be in [1, 1024], got " + std::to_string(c.max_slice_nums));
    }
    for (int i = 0; i < 3; ++i) {
        if (!std::isfinite(c.mean[i]) || !std::isfinite(c.std[i]) || c.std[i] == 0.0f) {
            fail(Status::invalid_argument, "image mean/std must be finite and std non-zero");
        }
    }
}

int64_t ensure_divide(double length, int multiple) {
    const double rounded = round_half_even(length / multiple) * multiple;
    const int64_t v = truncate_to_int(rounded, "ensure_divide result");
    return v > multiple ? v : multiple;
}

ImageSize find_best_resize(double width, double height, const SliceConfig & config, bool allow_upscale) {
    const double s = config.scale_resolution;
    if (width * height > s * s || allow_upscale) {
        const double ratio = width / height;
        const int64_t h = truncate_to_int(s / std::sqrt(ratio), "resized height");
        const int64_t w = truncate_to_int(double(h) * ratio, "resized width");
        width = double(w);
        height = double(h);
    }
    return {checked_side(ensure_divide(width, config.patch_size), "resized width"),
            checked_side(ensure_divide(height, config.patch_size), "resized height")};
}

ImageSize get_refine_size(int width, int height, SliceGrid grid, const SliceConfig & config) {
    // the image is first made divisible by the grid, then each cell gets the best ~S*S size
    const int64_t refine_w = ensure_divide(width, grid.cols);
    const int64_t refine_h = ensure_divide(height, grid.rows);
    const ImageSize cell = find_best_resize(double(refine_w) / grid.cols, double(refine_h) / grid.rows, config, true);
    return {checked_side(int64_t(cell.width) * grid.cols, "refine width"),
            checked_side(int64_t(cell.height) * grid.rows, "refine height")};
}

SliceGrid get_sliced_grid(int width, int height, const SliceConfig & config) {
    const double log_ratio = std::log(double(width) / double(height));
    const double s = config.scale_resolution;
    const double area_ratio = double(int64_t(width) * height) / (s * s);
    const int64_t multiple = std::min<int64_t>(int64_t(std::ceil(area_ratio)), config.max_slice_nums);
    if (multiple <= 1) return {};

    // cell counts multiple-1, multiple, multiple+1 (never 1, never above the cap); for each, every
    // factorisation [cols, rows] with cols ascending -- the order in which ties are decided
    std::vector<SliceGrid> candidates;
    for (int64_t n = multiple - 1; n <= multiple + 1; ++n) {
        if (n == 1 || n > config.max_slice_nums) continue;
        for (int64_t m = 1; m <= n; ++m) {
            if (n % m == 0) candidates.push_back({int(m), int(n / m)});
        }
    }
    SliceGrid best{1, 1};
    double best_error = std::numeric_limits<double>::infinity();
    for (const SliceGrid & g : candidates) {
        const double error = std::fabs(log_ratio - std::log(double(g.cols) / double(g.rows)));
        if (error < best_error) {  // first strict minimum wins
            best = g;
            best_error = error;
        }
    }
    return best;
}

int64_t SliceLayout::total_pixels() const {
    return int64_t(source.width) * source.height + int64_t(refine.width) * refine.height;
}

SliceLayout plan_slices(int width, int height, const SliceConfig & config) {
    validate_input_size(width, height, "image preprocessing");
    validate_slice_config(config);
    SliceLayout layout;
    layout.grid = get_sliced_grid(width, height, config);
    if (!layout.sliced()) {
        layout.source = find_best_resize(width, height, config, true);
    } else {
        layout.source = find_best_resize(width, height, config, false);
        layout.refine = get_refine_size(width, height, layout.grid, config);
        layout.slice = {layout.refine.width / layout.grid.cols, layout.refine.height / layout.grid.rows};
    }
    if (layout.total_pixels() > kMaxLayoutPixels) {
        fail(Status::invalid_argument, "image preprocessing: a " + std::to_string(width) + "x" +
                                           std::to_string(height) + " image with max_slice_nums " +
                                           std::to_string(config.max_slice_nums) + " needs " +
                                           std::to_string(layout.total_pixels()) + " resized pixels (limit " +
                                           std::to_string(kMaxLayoutPixels) + ")");
    }
    return layout;
}

}  // namespace minicpmo
