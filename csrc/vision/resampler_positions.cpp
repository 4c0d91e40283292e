#include "vision/resampler_positions.h"

#include <cmath>

namespace minicpmo {

std::vector<float> resampler_key_positions(int grid_h, int grid_w, int embd) {
    const int quarter = embd / 4;
    std::vector<float> omega(quarter);
    for (int i = 0; i < quarter; ++i) {
        // numpy: omega = arange(q, float32) / q; omega = 1 / 10000**omega (float32 throughout)
        const float e = static_cast<float>(i) / static_cast<float>(quarter);
        omega[i] = static_cast<float>(1.0 / std::pow(10000.0, static_cast<double>(e)));
    }
    std::vector<float> out(static_cast<size_t>(grid_h) * grid_w * embd);
    float * row = out.data();
    for (int r = 0; r < grid_h; ++r) {
        for (int c = 0; c < grid_w; ++c, row += embd) {
            for (int i = 0; i < quarter; ++i) {
                const float ac = static_cast<float>(c) * omega[i];
                const float ar = static_cast<float>(r) * omega[i];
                row[i] = std::sin(ac);
                row[quarter + i] = std::cos(ac);
                row[2 * quarter + i] = std::sin(ar);
                row[3 * quarter + i] = std::cos(ar);
            }
        }
    }
    return out;
}

}  // namespace minicpmo
