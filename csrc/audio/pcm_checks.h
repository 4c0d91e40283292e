// The one check that audio samples are finite, for every entry point that takes PCM (the mel
// front ends, the resampler, the C API's audio inputs): a NaN or infinite sample would reach the
// encoder as garbage, so it is refused with its index.
#pragma once

#include <cstddef>
#include <string>

namespace minicpmo {

// Throws invalid_argument "<what>: sample <i> is NaN|infinite (audio samples must be finite numbers)"
// for the first offending sample.
void require_finite_pcm(const float * pcm, size_t n, const std::string & what);

}  // namespace minicpmo
