// Built with -ffp-contract=off (CMakeLists.txt): the tap positions and weights must be computed with
// the same double roundings as Pillow, which a fused multiply-add would change.
#include "vision/bicubic_resize.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace minicpmo {

namespace {

// Keys cubic convolution kernel with a = -0.5, written in the nested form Pillow evaluates so
// that the double results agree to the last bit.
double keys_cubic(double x) {
    constexpr double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

constexpr double kCubicSupport = 2.0;

// Round a normalised weight to fixed point, half away from zero (as Pillow does).
int32_t to_fixed(double w) {
    const double scaled = w * double(1 << kResamplePrecisionBits);
    return static_cast<int32_t>(w < 0.0 ? scaled - 0.5 : scaled + 0.5);
}

// Fixed-point accumulator -> uint8: floor division by 2^bits, clamped to [0, 255].
uint8_t fixed_to_u8(int32_t acc) {
    if (acc < 0) return 0;
    const int32_t v = acc >> kResamplePrecisionBits;
    return static_cast<uint8_t>(v > 255 ? 255 : v);
}

constexpr int32_t kRoundingBias = int32_t(1) << (kResamplePrecisionBits - 1);

void check_target_side(int side, const char * name) {
    if (side < 1 || side > kMaxResizeSide) {
        fail(Status::invalid_argument, std::string("resize_bicubic: target ") + name + " must be in [1, " +
                                           std::to_string(kMaxResizeSide) + "], got " + std::to_string(side));
    }
}

// Rows [row0, row1) of `src`, filtered horizontally to `taps.first.size()` columns.
void horizontal_pass(const RgbImageView & src, int row0, int row1, const ResampleTaps & taps, RgbImage & out) {
    const int out_w = out.width;
    for (int y = row0; y < row1; ++y) {
        const uint8_t * in_row = src.pixels + size_t(y) * size_t(src.width) * 3;
        uint8_t * out_row = out.pixels.data() + size_t(y - row0) * size_t(out_w) * 3;
        for (int x = 0; x < out_w; ++x) {
            const int32_t * w = &taps.weights[size_t(x) * size_t(taps.ksize)];
            const uint8_t * p = in_row + size_t(taps.first[x]) * 3;
            int32_t r = kRoundingBias, g = kRoundingBias, b = kRoundingBias;
            for (int k = 0; k < taps.count[x]; ++k, p += 3) {
                r += int32_t(p[0]) * w[k];
                g += int32_t(p[1]) * w[k];
                b += int32_t(p[2]) * w[k];
            }
            out_row[size_t(x) * 3 + 0] = fixed_to_u8(r);
            out_row[size_t(x) * 3 + 1] = fixed_to_u8(g);
            out_row[size_t(x) * 3 + 2] = fixed_to_u8(b);
        }
    }
}

// Vertical filtering of `src` whose row 0 is source row `row_offset` of the taps' coordinates.
void vertical_pass(const RgbImageView & src, int row_offset, const ResampleTaps & taps, RgbImage & out) {
    const size_t row_bytes = size_t(src.width) * 3;
    std::vector<int32_t> acc(row_bytes);
    for (int y = 0; y < out.height; ++y) {
        const int32_t * w = &taps.weights[size_t(y) * size_t(taps.ksize)];
        const uint8_t * first_row = src.pixels + size_t(taps.first[y] - row_offset) * row_bytes;
        std::fill(acc.begin(), acc.end(), kRoundingBias);
        // row by row over the taps: the same integer sums as per-pixel loops, in cache order
        for (int k = 0; k < taps.count[y]; ++k) {
            const uint8_t * row = first_row + size_t(k) * row_bytes;
            const int32_t wk = w[k];
            for (size_t i = 0; i < row_bytes; ++i) acc[i] += int32_t(row[i]) * wk;
        }
        uint8_t * out_row = out.pixels.data() + size_t(y) * row_bytes;
        for (size_t i = 0; i < row_bytes; ++i) out_row[i] = fixed_to_u8(acc[i]);
    }
}

}  // namespace

ResampleTaps bicubic_taps(int in_size, int out_size) {
    if (in_size < 1 || out_size < 1) {
        fail(Status::invalid_argument, "bicubic_taps: sizes must be >= 1, got " + std::to_string(in_size) + " -> " +
                                           std::to_string(out_size));
    }
    // source pixels per output pixel; the kernel is stretched only when shrinking
    const double scale = double(in_size) / double(out_size);
    const double stretch = std::max(scale, 1.0);
    const double support = kCubicSupport * stretch;
    const double inv_stretch = 1.0 / stretch;

    ResampleTaps taps;
    taps.ksize = int(std::ceil(support)) * 2 + 1;
    taps.first.resize(size_t(out_size));
    taps.count.resize(size_t(out_size));
    taps.weights.assign(size_t(out_size) * size_t(taps.ksize), 0);

    std::vector<double> w(size_t(taps.ksize));
    for (int i = 0; i < out_size; ++i) {
        const double center = (i + 0.5) * scale;
        // window [center - support, center + support) rounded to the nearest pixel edges; the
        // int conversion truncates towards zero like Pillow's cast
        int lo = static_cast<int>(center - support + 0.5);
        int hi = static_cast<int>(center + support + 0.5);
        lo = std::max(lo, 0);
        hi = std::min(hi, in_size);
        const int n = hi - lo;
        double sum = 0.0;
        for (int k = 0; k < n; ++k) {
            // distance from the centre of source pixel lo + k, in kernel units
            w[size_t(k)] = keys_cubic((double(k + lo) - center + 0.5) * inv_stretch);
            sum += w[size_t(k)];
        }
        int32_t * fixed = &taps.weights[size_t(i) * size_t(taps.ksize)];
        for (int k = 0; k < n; ++k) fixed[k] = to_fixed(sum != 0.0 ? w[size_t(k)] / sum : w[size_t(k)]);
        taps.first[size_t(i)] = lo;
        taps.count[size_t(i)] = n;
    }
    return taps;
}

RgbImage resize_bicubic(const RgbImageView & src, int new_width, int new_height) {
    validate_input_image(src, "resize_bicubic");
    check_target_side(new_width, "width");
    check_target_side(new_height, "height");
    RgbImage out = make_rgb_image(new_width, new_height, "resize_bicubic output");

    const bool resize_x = new_width != src.width;
    const bool resize_y = new_height != src.height;
    if (!resize_x && !resize_y) {
        out.pixels.assign(src.pixels, src.pixels + out.pixels.size());
        return out;
    }
    if (!resize_y) {
        horizontal_pass(src, 0, src.height, bicubic_taps(src.width, new_width), out);
        return out;
    }

    const ResampleTaps vtaps = bicubic_taps(src.height, new_height);
    if (!resize_x) {
        vertical_pass(src, 0, vtaps, out);
        return out;
    }
    const ResampleTaps htaps = bicubic_taps(src.width, new_width);
    // Horizontal pass first, always: the official stack pins Pillow 10.4.0 (minicpmo-utils), whose
    // resize never reorders the passes. (Pillow 13 filters vertically first when the height shrinks
    // much more than the width; the uint8 rounding between the passes then gives other pixels.)
    // Only the source rows the vertical taps touch are filtered horizontally.
    const int row0 = vtaps.first.front();
    const int row1 = vtaps.first.back() + vtaps.count.back();
    RgbImage tmp = make_rgb_image(new_width, row1 - row0, "resize_bicubic intermediate");
    horizontal_pass(src, row0, row1, htaps, tmp);
    vertical_pass(tmp.view(), row0, vtaps, out);
    return out;
}

}  // namespace minicpmo
