// Speech-side argument checks shared by the binding files: speech-token lists, injected HiFT source
// randomness and the uniform draws of the TTS sampler. Everything is checked before it reaches C++.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/uniform_random.h"
#include "python/numpy_arrays.h"
#include "sampling/tts_sampler.h"
#include "token2wav/hift_source.h"

namespace minicpmo_py {

namespace py = pybind11;

// Token ids checked against the vocabulary before narrowing to int32 (a 2**32 + 5 must not wrap to 5);
// `what` names the list in the error ("tokens[3] = ...").
inline std::vector<int32_t> checked_speech_tokens(const std::vector<int64_t> & ids, int vocab, const std::string & what) {
    std::vector<int32_t> out;
    out.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= vocab) {
            minicpmo::fail(minicpmo::Status::invalid_argument,
                           what + "[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                               " is not a speech token: ids must be in [0, " + std::to_string(vocab) + ")");
        }
        out.push_back(static_cast<int32_t>(ids[i]));
    }
    return out;
}

// Injected NSF source randomness for one HiFT pass of `n_samples`: phases (H+1,) and noise
// (n_samples, H+1), both float32. `pass` says which pass in the error ("this call").
inline minicpmo::HiftSourceRandom checked_source_random(const py::object & phases, const py::object & noise,
                                                        int n_harmonics, int64_t n_samples, const std::string & pass) {
    using minicpmo::fail;
    using minicpmo::Status;
    F32Array p = checked_f32(phases, 1, "phases");
    F32Array n = checked_f32(noise, 2, "noise");
    if (p.shape(0) != n_harmonics) {
        fail(Status::invalid_argument,
             "phases must have shape (" + std::to_string(n_harmonics) + ",), got " + shape_text(p));
    }
    if (n.shape(0) != n_samples || n.shape(1) != n_harmonics) {
        fail(Status::invalid_argument, "noise must have shape (" + std::to_string(n_samples) + ", " +
                                           std::to_string(n_harmonics) + ") for " + pass + ", got " + shape_text(n));
    }
    minicpmo::HiftSourceRandom r;
    r.phases.assign(p.data(), p.data() + n_harmonics);
    r.noise.assign(n.data(), n.data() + n.size());
    return r;
}

// Uniform draws for the TTS sampler: a given list (consumed in order), else a seed, else none (greedy).
inline minicpmo::UniformDraw make_uniform_draw(const std::optional<std::vector<double>> & draws,
                                               const std::optional<uint64_t> & seed = std::nullopt) {
    if (draws) {
        auto list = std::make_shared<std::vector<double>>(*draws);
        auto next = std::make_shared<size_t>(0);
        return [list, next]() {
            if (*next >= list->size()) {
                minicpmo::fail(minicpmo::Status::invalid_argument,
                               "ran out of uniform draws after " + std::to_string(list->size()));
            }
            return (*list)[(*next)++];
        };
    }
    if (seed) {
        return minicpmo::seeded_uniform_draws(*seed);
    }
    return {};
}

}  // namespace minicpmo_py
