// numpy argument checks shared by the binding files: arrays are checked for dtype and rank before
// any conversion (a forcecast would silently turn float64 or integers into float32).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"

namespace minicpmo_py {

namespace py = pybind11;

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

// "(2, 3)" / "(5,)": an array's shape as numpy prints it, for error messages.
inline std::string shape_text(const py::array & a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// A C-contiguous float32 array of `ndim` dimensions, or an invalid_argument error naming `what`.
inline F32Array checked_f32(const py::object & obj, int ndim, const std::string & what) {
    using minicpmo::fail;
    using minicpmo::Status;
    const std::string expected = what + " must be a numpy float32 array with " + std::to_string(ndim) + " dimension" +
                                 (ndim == 1 ? "" : "s");
    if (!py::isinstance<py::array>(obj)) {
        fail(Status::invalid_argument, expected + ", got " + std::string(py::str(py::type::of(obj))));
    }
    const py::array arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.dtype().kind() != 'f' || arr.itemsize() != 4) {
        fail(Status::invalid_argument, expected + ", got dtype " + std::string(py::str(arr.dtype())));
    }
    if (arr.ndim() != ndim) fail(Status::invalid_argument, expected + ", got shape " + shape_text(arr));
    F32Array a = F32Array::ensure(arr);
    if (!a) fail(Status::internal, "could not make " + what + " C-contiguous");
    return a;
}

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

// An RGB frame / image: exactly uint8 (H, W, 3) with H, W > 0; other dtypes are refused rather than
// rescaled. `what` names it in the error ("frame 2").
inline U8Array checked_rgb8(const py::handle & obj, const std::string & what) {
    using minicpmo::fail;
    using minicpmo::Status;
    if (!py::isinstance<py::array>(obj)) {
        fail(Status::invalid_argument, what + " must be a numpy uint8 array of shape (H, W, 3), got " +
                                           std::string(py::str(py::type::of(obj))));
    }
    const py::array a = py::reinterpret_borrow<py::array>(obj);
    if (!a.dtype().is(py::dtype::of<uint8_t>())) {
        fail(Status::invalid_argument, what + " must have dtype uint8, got " + std::string(py::str(a.dtype())));
    }
    if (a.ndim() != 3 || a.shape(2) != 3 || a.shape(0) == 0 || a.shape(1) == 0) {
        fail(Status::invalid_argument, what + " must have shape (H, W, 3) with H, W > 0, got " + shape_text(a));
    }
    return U8Array::ensure(a);
}

// A 1-D float32 numpy array holding a copy of `v` (an empty vector gives shape (0,)).
inline py::array_t<float> to_f32_array(const std::vector<float> & v) {
    py::array_t<float> a(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
    return a;
}

// A Python list of 1-D float32 arrays, one per chunk (waveform chunks of a stream).
inline py::list to_f32_arrays(const std::vector<std::vector<float>> & chunks) {
    py::list out;
    for (const auto & c : chunks) out.append(to_f32_array(c));
    return out;
}

}  // namespace minicpmo_py
