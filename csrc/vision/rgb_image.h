// 8-bit RGB images as the vision preprocessing sees them: row-major, 3 bytes per pixel, no padding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace minicpmo {

// Inputs larger than this per side are refused (the caller's buffer would already be ~800 MB).
constexpr int kMaxInputImageSide = 16384;
// Upper bound on any image this module allocates (resize output, the resize's intermediate,
// the resized source + slices of one preprocess call): 64 Mpx = 192 MB of RGB.
constexpr int64_t kMaxWorkPixels = int64_t(1) << 26;

// Borrowed pixels of width*height*3 bytes.
struct RgbImageView {
    const uint8_t * pixels = nullptr;
    int width = 0;
    int height = 0;
};

struct RgbImage {
    int width = 0;
    int height = 0;
    std::vector<uint8_t> pixels;

    RgbImageView view() const { return {pixels.data(), width, height}; }
};

// Throws invalid_argument naming `what` unless both sides are in [1, kMaxInputImageSide].
void validate_input_size(int width, int height, const char * what);

// validate_input_size plus a non-null pixel pointer.
void validate_input_image(const RgbImageView & image, const char * what);

// Allocates a zero-filled image; throws invalid_argument when a side is < 1 or the pixel count
// exceeds kMaxWorkPixels.
RgbImage make_rgb_image(int width, int height, const char * what);

// Copies the rectangle [x0, x0+w) x [y0, y0+h) (must lie inside `image`).
RgbImage crop(const RgbImageView & image, int x0, int y0, int w, int h);

}  // namespace minicpmo
