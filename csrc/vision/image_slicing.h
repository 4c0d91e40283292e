// MiniCPM-o image slicing geometry (spec §1.2): which size the whole image ("source") is resized
// to, whether and how it is cut into a grid of slices, and the size of those slices. Pure
// arithmetic on (width, height); no pixels are touched, so the prompt builder can lay out image
// tokens cheaply. The formulas follow the Python reference, including its Python-specific
// rounding: round() is half-to-even and int() truncates.
#pragma once

#include <cstdint>

namespace minicpmo {

struct SliceConfig {
    int scale_resolution = 448;  // target side of a ~square image (area S*S)
    int patch_size = 14;
    int max_slice_nums = 9;      // 1 = never slice
    float mean[3] = {0.5f, 0.5f, 0.5f};
    float std[3] = {0.5f, 0.5f, 0.5f};
};

// Throws invalid_argument naming the bad field (patch_size in [1, 256], scale_resolution in
// [patch_size, 4096], max_slice_nums in [1, 1024], std != 0 and finite mean/std).
void validate_slice_config(const SliceConfig & config);

struct ImageSize {
    int width = 0;
    int height = 0;
};

struct SliceGrid {
    int cols = 0;
    int rows = 0;
};

// max(round_half_even(length / multiple) * multiple, multiple)
int64_t ensure_divide(double length, int multiple);

// Size (multiples of patch_size) keeping the aspect ratio with area ~ S*S; images of area <= S*S
// keep their size (up to patch rounding) unless `allow_upscale`.
ImageSize find_best_resize(double width, double height, const SliceConfig & config, bool allow_upscale);

// Size of the image that is cut into `grid` equal cells of ~S*S area each.
ImageSize get_refine_size(int width, int height, SliceGrid grid, const SliceConfig & config);

// Grid [cols, rows] whose aspect ratio best matches the image among those with about
// ceil(area / S^2) cells (capped by max_slice_nums); cols == 0 when the image is not sliced.
SliceGrid get_sliced_grid(int width, int height, const SliceConfig & config);

// Everything the preprocessing produces, by size only.
struct SliceLayout {
    ImageSize source;    // resized whole image
    SliceGrid grid;      // {0, 0} when not sliced
    ImageSize refine;    // resized image the slices are cut from ({0, 0} when not sliced)
    ImageSize slice;     // one cell of the refine image ({0, 0} when not sliced)

    bool sliced() const { return grid.cols > 0; }
    int num_slices() const { return grid.cols * grid.rows; }
    // pixels of the resized images: source + refine (the slices are cut from the refine image)
    int64_t total_pixels() const;
};

// Most resized pixels (source + refine image) one image may produce: 16 Mpx, i.e. 200 MB of float
// patches. max_slice_nums = 9 needs at most ~8 Mpx (extreme aspect ratios), ~2 Mpx usually.
constexpr int64_t kMaxLayoutPixels = int64_t(1) << 24;

// Validates the image size (1..kMaxInputImageSide per side) and the config, and the layout's
// total pixel count against kMaxLayoutPixels; throws invalid_argument otherwise.
SliceLayout plan_slices(int width, int height, const SliceConfig & config);

}  // namespace minicpmo
