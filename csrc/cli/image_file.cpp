#include "cli/image_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <sys/stat.h>

#include "stb_image.h"  // the implementation: stb_image_impl.cpp

namespace minicpmo_cli {

namespace {

std::vector<uint8_t> read_file(const std::string & path, const std::string & label) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) {
        throw std::runtime_error(label + (errno == ENOENT ? " does not exist" : " cannot be read: " + std::string(std::strerror(errno))));
    }
    if (S_ISDIR(st.st_mode)) throw std::runtime_error(label + " is a directory, not an image file");
    if (st.st_size == 0) throw std::runtime_error(label + " is empty (0 bytes)");
    std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw std::runtime_error(label + " cannot be read: " + std::strerror(errno));
    std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
    if (std::fread(data.data(), 1, data.size(), f.get()) != data.size()) {
        throw std::runtime_error(label + " cannot be read completely");
    }
    return data;
}

}  // namespace

ImageFile load_image_file(const std::string & path, const ImageLimits & limits) {
    const std::string label = "image file '" + path + "'";
    const std::vector<uint8_t> data = read_file(path, label);
    if (data.size() > static_cast<size_t>(INT32_MAX)) throw std::runtime_error(label + " is too large (over 2 GB)");
    const auto * bytes = data.data();
    const int size = static_cast<int>(data.size());
    int w = 0, h = 0, channels = 0;
    // the header alone: dimensions are checked before anything is allocated for the pixels
    if (!stbi_info_from_memory(bytes, size, &w, &h, &channels)) {
        throw std::runtime_error(label + " is not an image that can be read (unknown format or corrupt header: " +
                                 stbi_failure_reason() + ")");
    }
    if (w <= 0 || h <= 0) {
        throw std::runtime_error(label + " has zero size (" + std::to_string(w) + "x" + std::to_string(h) + ")");
    }
    const std::string dims = std::to_string(w) + "x" + std::to_string(h);
    if (w > limits.max_side || h > limits.max_side) {
        throw std::runtime_error(label + " is too large (" + dims + " pixels; at most " +
                                 std::to_string(limits.max_side) + " pixels per side are accepted)");
    }
    const int64_t pixels = static_cast<int64_t>(w) * h;
    if (pixels > limits.max_pixels) {
        throw std::runtime_error(label + " is too large to decode safely (" + dims + " = " + std::to_string(pixels) +
                                 " pixels; at most " + std::to_string(limits.max_pixels) +
                                 " are decoded); downscale it first");
    }
    std::unique_ptr<stbi_uc, void (*)(void *)> rgb(stbi_load_from_memory(bytes, size, &w, &h, &channels, 3),
                                                   &stbi_image_free);
    if (!rgb) {
        throw std::runtime_error(label + " could not be decoded (truncated or corrupt image data?): " +
                                 stbi_failure_reason());
    }
    ImageFile out;
    out.path = path;
    out.width = w;
    out.height = h;
    out.rgb.assign(rgb.get(), rgb.get() + static_cast<size_t>(w) * h * 3);
    return out;
}

}  // namespace minicpmo_cli
