// Helpers shared by the session bindings of _core (module.cpp) and _testing (testing/): float rows
// as numpy arrays and the audio attention mode by name.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "core/error.h"
#include "session/omni_session.h"

namespace minicpmo_py {

namespace py = pybind11;

// A (rows, cols) float32 numpy array holding a copy of `data`.
inline py::array_t<float> to_f32_rows(const float * data, size_t rows, size_t cols) {
    py::array_t<float> a({rows, cols});
    std::memcpy(a.mutable_data(), data, rows * cols * sizeof(float));
    return a;
}

inline minicpmo::AudioAttention attention_mode(const std::string & mode) {
    if (mode == "block") return minicpmo::AudioAttention::block_causal;
    if (mode == "full") return minicpmo::AudioAttention::full;
    minicpmo::fail(minicpmo::Status::invalid_argument, "audio attention mode must be 'block' or 'full', got '" + mode + "'");
}

}  // namespace minicpmo_py
