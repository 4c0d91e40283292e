// MiniCPM-o image preprocessing (spec §1.2): an RGB8 image becomes a resized source image plus,
// for large images, a grid of slices; each is normalised and cut into patch vectors in the order
// the vision tower's patch embedding consumes them.
#pragma once

#include <vector>

#include "vision/image_slicing.h"
#include "vision/rgb_image.h"

namespace minicpmo {

// One image (source or slice) as patch vectors.
struct PreprocessedSlice {
    int grid_h = 0;  // patches per column (height / patch_size)
    int grid_w = 0;  // patches per row (width / patch_size)
    // grid_h * grid_w rows, row-major over the patch grid, of C*P*P floats in (c, ky, kx) order
    // (the patch conv weight's order); values (x / 255 - mean[c]) / std[c] in float32
    std::vector<float> patches;
};

struct PreprocessedImage {
    int grid_cols = 0;  // 0 when the image is not sliced
    int grid_rows = 0;
    std::vector<PreprocessedSlice> slices;  // source first, then the slices row by row
};

// Resized uint8 images, source first, then the slices row by row (left to right), before
// normalisation. `layout` (optional) receives the sizes. Throws invalid_argument for bad input.
std::vector<RgbImage> resize_and_slice(const RgbImageView & image, const SliceConfig & config,
                                       SliceLayout * layout = nullptr);

// Normalised patch vectors of one resized image whose sides are multiples of patch_size.
PreprocessedSlice to_patches(const RgbImageView & image, const SliceConfig & config);

PreprocessedImage preprocess_image(const RgbImageView & image, const SliceConfig & config);

}  // namespace minicpmo
