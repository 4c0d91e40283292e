#include "audio/pcm_checks.h"

#include <cmath>

#include "core/error.h"

namespace minicpmo {

void require_finite_pcm(const float * pcm, size_t n, const std::string & what) {
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(pcm[i])) {
            fail(Status::invalid_argument, what + ": sample " + std::to_string(i) + " is " +
                                               (std::isnan(pcm[i]) ? "NaN" : "infinite") +
                                               " (audio samples must be finite numbers)");
        }
    }
}

}  // namespace minicpmo
