#include "cli/image_file.h"

#include <cstdio>
#include <memory>
#include <stdexcept>

#define STB_IMAGE_IMPLEMENTATION
#include "stb_image.h"

namespace minicpmo_cli {

ImageFile load_image_file(const std::string & path, int max_side) {
    std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw std::runtime_error("cannot open image file '" + path + "'");
    int w = 0, h = 0, channels = 0;
    if (!stbi_info_from_file(f.get(), &w, &h, &channels)) {
        throw std::runtime_error("'" + path + "' is not a readable image (" + stbi_failure_reason() + ")");
    }
    if (w <= 0 || h <= 0 || w > max_side || h > max_side) {
        throw std::runtime_error("image '" + path + "' is " + std::to_string(w) + "x" + std::to_string(h) +
                                 " pixels; at most " + std::to_string(max_side) + " per side is accepted");
    }
    std::unique_ptr<stbi_uc, void (*)(void *)> data(stbi_load_from_file(f.get(), &w, &h, &channels, 3), &stbi_image_free);
    if (!data) throw std::runtime_error("cannot decode image '" + path + "' (" + stbi_failure_reason() + ")");
    ImageFile out;
    out.path = path;
    out.width = w;
    out.height = h;
    out.rgb.assign(data.get(), data.get() + static_cast<size_t>(w) * h * 3);
    return out;
}

}  // namespace minicpmo_cli
