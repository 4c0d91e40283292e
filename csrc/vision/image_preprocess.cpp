#include "vision/image_preprocess.h"

#include <string>

#include "core/error.h"
#include "vision/bicubic_resize.h"

namespace minicpmo {

std::vector<RgbImage> resize_and_slice(const RgbImageView & image, const SliceConfig & config, SliceLayout * layout) {
    validate_input_image(image, "image preprocessing");
    const SliceLayout plan = plan_slices(image.width, image.height, config);
    if (layout != nullptr) *layout = plan;

    std::vector<RgbImage> out;
    out.reserve(size_t(1 + plan.num_slices()));
    out.push_back(resize_bicubic(image, plan.source.width, plan.source.height));
    if (plan.sliced()) {
        // both the source and the refine image are resized from the original
        const RgbImage refine = resize_bicubic(image, plan.refine.width, plan.refine.height);
        for (int r = 0; r < plan.grid.rows; ++r) {
            for (int c = 0; c < plan.grid.cols; ++c) {
                out.push_back(crop(refine.view(), c * plan.slice.width, r * plan.slice.height, plan.slice.width,
                                   plan.slice.height));
            }
        }
    }
    return out;
}

PreprocessedSlice to_patches(const RgbImageView & image, const SliceConfig & config) {
    validate_slice_config(config);
    const int p = config.patch_size;
    if (image.width < p || image.height < p || image.width % p != 0 || image.height % p != 0) {
        fail(Status::invalid_argument, "to_patches: image " + std::to_string(image.width) + "x" +
                                           std::to_string(image.height) + " is not a whole number of " +
                                           std::to_string(p) + "-pixel patches");
    }
    PreprocessedSlice out;
    out.grid_h = image.height / p;
    out.grid_w = image.width / p;
    const size_t patch_len = size_t(3) * size_t(p) * size_t(p);
    out.patches.resize(size_t(out.grid_h) * size_t(out.grid_w) * patch_len);

    // the reference's float32 steps: x = u8 / 255, then (x - mean) / std
    float lut[3][256];
    for (int c = 0; c < 3; ++c) {
        for (int v = 0; v < 256; ++v) lut[c][v] = (static_cast<float>(v) / 255.0f - config.mean[c]) / config.std[c];
    }

    float * dst = out.patches.data();
    for (int gy = 0; gy < out.grid_h; ++gy) {
        for (int gx = 0; gx < out.grid_w; ++gx) {
            for (int c = 0; c < 3; ++c) {
                for (int ky = 0; ky < p; ++ky) {
                    const uint8_t * row =
                        image.pixels + (size_t(gy * p + ky) * size_t(image.width) + size_t(gx * p)) * 3 + c;
                    for (int kx = 0; kx < p; ++kx) *dst++ = lut[c][row[size_t(kx) * 3]];
                }
            }
        }
    }
    return out;
}

PreprocessedImage preprocess_image(const RgbImageView & image, const SliceConfig & config) {
    SliceLayout layout;
    const std::vector<RgbImage> resized = resize_and_slice(image, config, &layout);
    PreprocessedImage out;
    out.grid_cols = layout.grid.cols;
    out.grid_rows = layout.grid.rows;
    out.slices.reserve(resized.size());
    for (const RgbImage & im : resized) out.slices.push_back(to_patches(im.view(), config));
    return out;
}

}  // namespace minicpmo
