// Image files for the CLI, decoded with the stb_image decoder of the llama.cpp tree (PNG, JPEG,
// BMP, GIF first frame, TGA, PSD, HDR, PNM) into RGB8.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minicpmo_cli {

struct ImageFile {
    std::string path;
    int width = 0;
    int height = 0;
    std::vector<uint8_t> rgb;  // height rows of width * 3 bytes
};

// Throws std::runtime_error naming the file: missing, not an image, truncated, or larger than
// `max_side` pixels on a side (checked from the header before decoding).
ImageFile load_image_file(const std::string & path, int max_side = 16384);

}  // namespace minicpmo_cli
