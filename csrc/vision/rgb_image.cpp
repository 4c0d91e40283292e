#include "vision/rgb_image.h"

#include <cstring>
#include <string>

#include "core/error.h"

namespace minicpmo {

namespace {

std::string size_text(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }

}  // namespace

void validate_input_size(int width, int height, const char * what) {
    if (width < 1 || height < 1) {
        fail(Status::invalid_argument,
             std::string(what) + ": image width and height must be >= 1, got " + size_text(width, height));
    }
    if (width > kMaxInputImageSide || height > kMaxInputImageSide) {
        fail(Status::invalid_argument, std::string(what) + ": image " + size_text(width, height) +
                                           " is too large (at most " + std::to_string(kMaxInputImageSide) +
                                           " pixels per side)");
    }
}

void validate_input_image(const RgbImageView & image, const char * what) {
    validate_input_size(image.width, image.height, what);
    if (image.pixels == nullptr) fail(Status::invalid_argument, std::string(what) + ": null pixel buffer");
}

RgbImage make_rgb_image(int width, int height, const char * what) {
    if (width < 1 || height < 1) {
        fail(Status::invalid_argument,
             std::string(what) + ": image sides must be >= 1, got " + size_text(width, height));
    }
    if (int64_t(width) * height > kMaxWorkPixels) {
        fail(Status::invalid_argument, std::string(what) + ": a " + size_text(width, height) +
                                           " image exceeds the limit of " + std::to_string(kMaxWorkPixels) +
                                           " pixels");
    }
    RgbImage out;
    out.width = width;
    out.height = height;
    out.pixels.assign(size_t(width) * size_t(height) * 3, 0);
    return out;
}

RgbImage crop(const RgbImageView & image, int x0, int y0, int w, int h) {
    if (x0 < 0 || y0 < 0 || w < 1 || h < 1 || int64_t(x0) + w > image.width || int64_t(y0) + h > image.height) {
        fail(Status::internal, "crop " + size_text(w, h) + " at (" + std::to_string(x0) + ", " + std::to_string(y0) +
                                   ") is outside the " + size_text(image.width, image.height) + " image");
    }
    RgbImage out = make_rgb_image(w, h, "crop");
    const size_t row_bytes = size_t(w) * 3;
    for (int y = 0; y < h; ++y) {
        const uint8_t * src = image.pixels + (size_t(y0 + y) * size_t(image.width) + size_t(x0)) * 3;
        std::memcpy(out.pixels.data() + size_t(y) * row_bytes, src, row_bytes);
    }
    return out;
}

}  // namespace minicpmo
