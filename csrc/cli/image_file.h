// Image files for the CLI, decoded with the stb_image decoder of the llama.cpp tree (PNG, JPEG,
// BMP, GIF first frame, TGA, PSD, HDR, PNM) into RGB8.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minicpmo_cli {

// Limits on encoded images, shared with the Python loader (minicpmo_cpp.media reads them from
// _core.IMAGE_MAX_SIDE / IMAGE_MAX_PIXELS): far above anything the model uses (about 448x448 per
// slice, at most 9 slices), low enough that a hostile header cannot make us allocate gigabytes.
constexpr int kMaxImageSide = 16384;
// PIL's default decompression-bomb limit (Image.MAX_IMAGE_PIXELS = 2^30 / 4 / 3), which the Python
// path applied before the limit lived here: 89.5 M pixels, 268 MB of RGB.
constexpr int64_t kMaxImagePixels = 89478485;

// The limits load_image_file applies (the defaults above; a caller may ask for lower ones, e.g. the
// fuzz target, whose runs must stay short).
struct ImageLimits {
    int max_side = kMaxImageSide;
    int64_t max_pixels = kMaxImagePixels;
};

struct ImageFile {
    std::string path;
    int width = 0;
    int height = 0;
    std::vector<uint8_t> rgb;  // height rows of width * 3 bytes
};

// Throws std::runtime_error naming the file ("image file 'x.png' ..."): missing, empty, not an
// image, truncated, or larger than the limits above (checked from the header before decoding), with
// the messages of minicpmo_cpp.media.
ImageFile load_image_file(const std::string & path, const ImageLimits & limits = {});

}  // namespace minicpmo_cli
