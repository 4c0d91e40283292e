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
    minicpmo_cli::ImageFile img;
    try {
        // the CLI's limits (kMaxImagePixels: at most 268 MB of RGB, within libFuzzer's 2 GB limit)
        img = minicpmo_cli::load_image_file(path);
    } catch (const std::runtime_error &) {
        return 0;
    }
    if (img.width < 1 || img.height < 1 || img.rgb.size() != size_t(img.width) * size_t(img.height) * 3) {
        fuzz::violated("decoded image size does not match its pixels");
    }
    if (int64_t(img.width) * img.height > 512 * 512) return 0;  // preprocessing time, not coverage
    minicpmo::SliceConfig config;
    try {
        const minicpmo::PreprocessedImage p =
            minicpmo::preprocess_image({img.rgb.data(), img.width, img.height}, config);
        if (p.slices.empty()) fuzz::violated("preprocessing gave no source image");
    } catch (const std::invalid_argument &) {
    } catch (const minicpmo::Error &) {
    }
    return 0;
}
