// (H, W, 3) uint8 image arguments of the image-preprocessing bindings (_core.resize_bicubic and the
// _testing preprocessing steps): dtype, shape and size checked before any conversion.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "core/error.h"
#include "python/numpy_arrays.h"
#include "vision/rgb_image.h"

namespace minicpmo_py {

namespace py = pybind11;

// Checks dtype and shape *before* any conversion: a forcecast would silently turn floats into
// bytes, and a huge non-contiguous view would be copied.
inline py::array checked_rgb_shape(const py::object & obj, const char * fn) {
    const std::string expected = std::string(fn) + ": rgb must be a numpy uint8 array of shape (H, W, 3)";
    if (!py::isinstance<py::array>(obj)) {
        minicpmo::fail(minicpmo::Status::invalid_argument, expected + ", got " + std::string(py::str(py::type::of(obj))));
    }
    const py::array arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.dtype().kind() != 'u' || arr.itemsize() != 1) {
        minicpmo::fail(minicpmo::Status::invalid_argument, expected + ", got dtype " + std::string(py::str(arr.dtype())));
    }
    if (arr.ndim() != 3 || arr.shape(2) != 3) {
        minicpmo::fail(minicpmo::Status::invalid_argument, expected + ", got shape " + shape_text(arr));
    }
    if (arr.shape(0) > minicpmo::kMaxInputImageSide || arr.shape(1) > minicpmo::kMaxInputImageSide) {
        minicpmo::fail(minicpmo::Status::invalid_argument, std::string(fn) + ": image of shape " + shape_text(arr) +
                                           " is too large (at most " + std::to_string(minicpmo::kMaxInputImageSide) +
                                           " pixels per side)");
    }
    minicpmo::validate_input_size(int(arr.shape(1)), int(arr.shape(0)), fn);
    return arr;
}

// A C-contiguous uint8 array of a checked (H, W, 3) array (a copy only when the input is strided).
inline U8Array contiguous(const py::array & checked) {
    U8Array a = U8Array::ensure(checked);
    if (!a) minicpmo::fail(minicpmo::Status::internal, "could not make the image array C-contiguous");
    return a;
}

inline U8Array as_rgb_array(const py::object & obj, const char * fn) { return contiguous(checked_rgb_shape(obj, fn)); }

inline minicpmo::RgbImageView view_of(const U8Array & a) { return {a.data(), int(a.shape(1)), int(a.shape(0))}; }

inline py::array_t<uint8_t> to_numpy(const minicpmo::RgbImage & im) {
    py::array_t<uint8_t> a({py::ssize_t(im.height), py::ssize_t(im.width), py::ssize_t(3)});
    std::memcpy(a.mutable_data(), im.pixels.data(), im.pixels.size());
    return a;
}

}  // namespace minicpmo_py
