// The C++ image preprocessing (spec §1.2): slicing geometry for any size and configuration, then
// resize, slice and patches for those within a time budget. Sizes and configuration come from the
// first bytes, pixels from the rest (repeated). Bad sizes or configurations must fail with
// invalid_argument; accepted ones must give patch vectors of the planned sizes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "core/error.h"
#include "fuzz_input.h"
#include "vision/image_preprocess.h"
#include "vision/image_slicing.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    fuzz::Bytes in(data, size);
    const int width = int(in.take<uint16_t>() % 20000);    // past the 16384 limit too
    const int height = int(in.take<uint16_t>() % 20000);
    minicpmo::SliceConfig config;
    config.scale_resolution = int(in.take<uint16_t>() % 5000);
    config.patch_size = int(in.take<uint16_t>() % 300);
    config.max_slice_nums = int(in.take<uint16_t>() % 1100);
    if (in.take<uint8_t>() & 1) {
        for (int c = 0; c < 3; ++c) config.mean[c] = in.take<float>();
        for (int c = 0; c < 3; ++c) config.std[c] = in.take<float>();
    }
    minicpmo::SliceLayout layout;
    try {
        layout = minicpmo::plan_slices(width, height, config);
    } catch (const std::invalid_argument &) {
        return 0;
    } catch (const minicpmo::Error &) {
        return 0;
    }
    // the geometry above runs for every size; the pixel work below only for small ones (8 K pixels
    // in and out), which take the same code paths in milliseconds
    if (layout.total_pixels() > (int64_t(1) << 13) || int64_t(width) * height > (int64_t(1) << 13)) return 0;
    std::vector<uint8_t> pixels(size_t(width) * size_t(height) * 3, 0);
    for (size_t i = 0; i < pixels.size() && in.size() > 0; ++i) pixels[i] = in.data()[i % in.size()];
    try {
        const minicpmo::PreprocessedImage p = minicpmo::preprocess_image({pixels.data(), width, height}, config);
        const size_t want = layout.sliced() ? size_t(1 + layout.num_slices()) : 1;
        if (p.slices.size() != want) fuzz::violated("slice count differs from the plan");
        const size_t row = size_t(3) * size_t(config.patch_size) * size_t(config.patch_size);
        for (const auto & s : p.slices) {
            if (s.patches.size() != size_t(s.grid_h) * size_t(s.grid_w) * row) fuzz::violated("patch buffer size");
        }
    } catch (const std::invalid_argument &) {
    } catch (const minicpmo::Error &) {
    }
    return 0;
}
