// The sample-rate converter and channel mixer with any rates (valid or not), channel counts and
// samples (NaN and Inf included). Bad arguments must fail with minicpmo::Error; good ones must give
// resampled_length() finite samples.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "audio/resample.h"
#include "core/error.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    fuzz::Bytes in(data, size);
    const uint8_t mode = in.take<uint8_t>();
    // any int now and then, any rate up to a little past 768 kHz, mostly a common rate +- a little
    static const int kCommon[] = {1, 2, 8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000, 192000, 768000};
    auto rate = [&](uint32_t raw) {
        if (mode & 2) return int(raw);
        if (mode & 8) return int(raw % 800000);
        return kCommon[(raw >> 8) % (sizeof kCommon / sizeof kCommon[0])] + int(int8_t(raw & 0xff)) * ((mode & 16) != 0);
    };
    const int in_rate = rate(in.take<uint32_t>());
    const int out_rate = rate(in.take<uint32_t>());
    const int channels = (mode & 4) ? int(in.take<int16_t>()) : 1 + int(in.take<uint8_t>() % 8);
    std::vector<float> pcm(in.size() / sizeof(float));
    if (!pcm.empty()) std::memcpy(pcm.data(), in.data(), pcm.size() * sizeof(float));
    try {
        const size_t frames = channels > 0 ? pcm.size() / size_t(channels) : pcm.size();
        const std::vector<float> mono = minicpmo::mix_to_mono(pcm.data(), frames, channels);
        const size_t n_out = minicpmo::resampled_length(mono.size(), in_rate, out_rate);
        if (n_out > (size_t(1) << 16)) return 0;  // legitimately long work: time, not coverage
        // A table of many coefficients (an odd ratio such as 44101 -> 16000: 4097 rows of >= 142
        // taps, the interpolated path) takes 0.1 - 0.5 s to compute under ASan, the same arithmetic
        // for any input: the fuzzer would spend its time there (46 runs/s). Such tables are built only
        // with MINICPMO_FUZZ_LARGE_TABLES=1 (a separate run; the replay test sets it); every rate pair
        // passes the planning (resample_table_coeffs) either way.
        static const bool large_tables = std::getenv("MINICPMO_FUZZ_LARGE_TABLES") != nullptr;
        const size_t coeffs = minicpmo::resample_table_coeffs(in_rate, out_rate);
        if (coeffs > (size_t(1) << 14) && !large_tables) return 0;
        const std::vector<float> out = minicpmo::resample_pcm(mono.data(), mono.size(), in_rate, out_rate);
        if (out.size() != n_out) fuzz::violated("output length differs from resampled_length");
        // finite in, finite out -- for audio-like magnitudes: samples near FLT_MAX (3e38, found by the
        // fuzzer) overflow any weighted sum to inf, which is float arithmetic, not a bug
        float peak = 0.0f;
        for (float v : mono) peak = std::max(peak, std::fabs(v));
        for (float v : out) {
            if (!std::isfinite(v) && peak <= 1e30f) fuzz::violated("non-finite output from finite input");
        }
    } catch (const minicpmo::Error &) {
    }
    return 0;
}
