// Python binding of the Pillow-exact bicubic resize (csrc/vision/bicubic_resize.h) that
// minicpmo_cpp.video uses for frames. The other preprocessing steps are bound for the tests in
// _testing (csrc/python/testing/bind_image_preprocess.cpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "core/error.h"
#include "python/image_args.h"
#include "vision/bicubic_resize.h"

namespace py = pybind11;
using namespace minicpmo;
using minicpmo_py::as_rgb_array;
using minicpmo_py::to_numpy;
using minicpmo_py::U8Array;
using minicpmo_py::view_of;

void bind_image_resize(py::module_ & m) {
    m.def(
        "resize_bicubic",
        [](const py::object & rgb, int width, int height) {
            const U8Array a = as_rgb_array(rgb, "resize_bicubic");
            RgbImage out;
            {
                py::gil_scoped_release release;
                out = resize_bicubic(view_of(a), width, height);
            }
            return to_numpy(out);
        },
        py::arg("rgb"), py::arg("width"), py::arg("height"),
        "Pillow-exact Image.resize((width, height), BICUBIC) of an (H, W, 3) uint8 array");
}
