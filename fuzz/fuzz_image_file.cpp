// The CLI's image decoding (stb_image: PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PNM) and then the C++
// preprocessing of what it decoded, as minicpmo-cli --image does. Any input must decode or fail
// with std::runtime_error; a decoded image must have the size it says.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "cli/image_file.h"
#include "core/error.h"
#include "fuzz_input.h"
#include "vision/image_preprocess.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static const fuzz::ScratchFile file(".img");
    const std::string & path = file.write(data, size);
    // The CLI's code with a lower pixel limit (256 x 256): the header check is the same code, and a
    // run stays in milliseconds (at the CLI's 89 M pixels a truncated BMP header alone makes stb fill
    // 268 MB, a second per run under ASan)
    minicpmo_cli::ImageLimits limits;
    limits.max_pixels = int64_t(256) * 256;
    minicpmo_cli::ImageFile img;
    try {
        img = minicpmo_cli::load_image_file(path, limits);
    } catch (const std::runtime_error &) {
        return 0;
    }
    if (img.width < 1 || img.height < 1 || int64_t(img.width) * img.height > limits.max_pixels ||
        img.rgb.size() != size_t(img.width) * size_t(img.height) * 3) {
        fuzz::violated("decoded image size does not match its pixels or the limit");
    }
    // then the preprocessing of what was decoded, on a small grid (56-pixel slices of 14-pixel
    // patches) so its cost follows the decoded image, not the model's 448-pixel resize; the geometry
    // at the model's sizes is fuzz_image_preprocess's
    minicpmo::SliceConfig config;
    config.scale_resolution = 56;
    config.patch_size = 14;
    try {
        const minicpmo::PreprocessedImage p =
            minicpmo::preprocess_image({img.rgb.data(), img.width, img.height}, config);
        if (p.slices.empty()) fuzz::violated("preprocessing gave no source image");
    } catch (const std::invalid_argument &) {
    } catch (const minicpmo::Error &) {
    }
    return 0;
}
