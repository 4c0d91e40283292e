// Python bindings of the image preprocessing (csrc/vision): resize, slicing layout, patches and
// NaViT position ids, so tests can compare each step with Pillow / numpy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "vision/bicubic_resize.h"
#include "vision/image_preprocess.h"
#include "vision/image_slicing.h"
#include "vision/navit_positions.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

std::string shape_text(const py::array & a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// Checks dtype and shape *before* any conversion: a forcecast would silently turn floats into
// bytes, and a huge non-contiguous view would be copied.
py::array checked_rgb_shape(const py::object & obj, const char * fn) {
    const std::string expected = std::string(fn) + ": rgb must be a numpy uint8 array of shape (H, W, 3)";
    if (!py::isinstance<py::array>(obj)) {
        fail(Status::invalid_argument, expected + ", got " + std::string(py::str(py::type::of(obj))));
    }
    const py::array arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.dtype().kind() != 'u' || arr.itemsize() != 1) {
        fail(Status::invalid_argument, expected + ", got dtype " + std::string(py::str(arr.dtype())));
    }
    if (arr.ndim() != 3 || arr.shape(2) != 3) {
        fail(Status::invalid_argument, expected + ", got shape " + shape_text(arr));
    }
    if (arr.shape(0) > kMaxInputImageSide || arr.shape(1) > kMaxInputImageSide) {
        fail(Status::invalid_argument, std::string(fn) + ": image of shape " + shape_text(arr) +
                                           " is too large (at most " + std::to_string(kMaxInputImageSide) +
                                           " pixels per side)");
    }
    validate_input_size(int(arr.shape(1)), int(arr.shape(0)), fn);
    return arr;
}

// A C-contiguous uint8 array of a checked (H, W, 3) array (a copy only when the input is strided).
U8Array contiguous(const py::array & checked) {
    U8Array a = U8Array::ensure(checked);
    if (!a) fail(Status::internal, "could not make the image array C-contiguous");
    return a;
}

U8Array as_rgb_array(const py::object & obj, const char * fn) { return contiguous(checked_rgb_shape(obj, fn)); }

RgbImageView view_of(const U8Array & a) { return {a.data(), int(a.shape(1)), int(a.shape(0))}; }

py::array_t<uint8_t> to_numpy(const RgbImage & im) {
    py::array_t<uint8_t> a({py::ssize_t(im.height), py::ssize_t(im.width), py::ssize_t(3)});
    std::memcpy(a.mutable_data(), im.pixels.data(), im.pixels.size());
    return a;
}

py::array_t<float> to_numpy(const PreprocessedSlice & s, int patch_len) {
    py::array_t<float> a({py::ssize_t(s.grid_h) * s.grid_w, py::ssize_t(patch_len)});
    std::memcpy(a.mutable_data(), s.patches.data(), s.patches.size() * sizeof(float));
    return a;
}

SliceConfig make_config(int max_slice_nums, int scale_resolution, int patch_size, const std::vector<float> & mean,
                        const std::vector<float> & std_) {
    if (mean.size() != 3 || std_.size() != 3) fail(Status::invalid_argument, "mean and std need 3 values each");
    SliceConfig c;
    c.max_slice_nums = max_slice_nums;
    c.scale_resolution = scale_resolution;
    c.patch_size = patch_size;
    for (int i = 0; i < 3; ++i) {
        c.mean[i] = mean[size_t(i)];
        c.std[i] = std_[size_t(i)];
    }
    validate_slice_config(c);
    return c;
}

py::object size_or_none(const ImageSize & s) {
    if (s.width == 0) return py::none();
    return py::make_tuple(s.width, s.height);
}

}  // namespace

void bind_image_preprocess(py::module_ & m) {
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

    m.def(
        "image_slice_layout",
        [](int width, int height, int max_slice_nums, int scale_resolution, int patch_size) {
            const SliceConfig c = make_config(max_slice_nums, scale_resolution, patch_size, {0.5f, 0.5f, 0.5f},
                                              {0.5f, 0.5f, 0.5f});
            const SliceLayout l = plan_slices(width, height, c);
            py::dict d;
            d["source"] = size_or_none(l.source);
            d["grid"] = l.sliced() ? py::object(py::make_tuple(l.grid.cols, l.grid.rows)) : py::object(py::none());
            d["refine"] = size_or_none(l.refine);
            d["slice"] = size_or_none(l.slice);
            return d;
        },
        py::arg("width"), py::arg("height"), py::arg("max_slice_nums"), py::arg("scale_resolution") = 448,
        py::arg("patch_size") = 14,
        "sizes only: {'source': (w, h), 'grid': (cols, rows) or None, 'refine': (w, h) or None, "
        "'slice': (w, h) or None}");

    m.def(
        "preprocess_image",
        [](const py::object & rgb, int max_slice_nums, int scale_resolution, int patch_size,
           const std::vector<float> & mean, const std::vector<float> & std_) {
            const SliceConfig c = make_config(max_slice_nums, scale_resolution, patch_size, mean, std_);
            const py::array shape_only = checked_rgb_shape(rgb, "preprocess_image");
            // refuse over-budget layouts before a non-contiguous input gets copied
            plan_slices(int(shape_only.shape(1)), int(shape_only.shape(0)), c);
            const U8Array a = contiguous(shape_only);
            SliceLayout layout;
            std::vector<RgbImage> images;
            std::vector<PreprocessedSlice> slices;
            {
                py::gil_scoped_release release;
                images = resize_and_slice(view_of(a), c, &layout);
                for (const RgbImage & im : images) slices.push_back(to_patches(im.view(), c));
            }
            const int patch_len = 3 * patch_size * patch_size;
            py::list py_images, py_patches, tgt_sizes;
            for (size_t i = 0; i < images.size(); ++i) {
                py_images.append(to_numpy(images[i]));
                py_patches.append(to_numpy(slices[i], patch_len));
                tgt_sizes.append(py::make_tuple(slices[i].grid_h, slices[i].grid_w));
            }
            py::dict d;
            d["grid"] = layout.sliced() ? py::object(py::make_tuple(layout.grid.cols, layout.grid.rows))
                                        : py::object(py::none());
            d["images"] = py_images;
            d["patches"] = py_patches;
            d["tgt_sizes"] = tgt_sizes;
            return d;
        },
        py::arg("rgb"), py::arg("max_slice_nums"), py::arg("scale_resolution") = 448, py::arg("patch_size") = 14,
        py::arg("mean") = std::vector<float>{0.5f, 0.5f, 0.5f}, py::arg("std") = std::vector<float>{0.5f, 0.5f, 0.5f},
        "MiniCPM-o slicing + normalisation: {'grid': (cols, rows) or None, 'images': [uint8 (h, w, 3)], "
        "'patches': [float32 (L, 3*P*P)], 'tgt_sizes': [(h, w) in patches]}, source first then slices row by row");

    m.def(
        "navit_position_ids",
        [](int h, int w, int side) {
            const std::vector<int32_t> ids = navit_position_ids(h, w, side);
            py::array_t<int32_t> a(py::ssize_t(ids.size()));
            std::memcpy(a.mutable_data(), ids.data(), ids.size() * sizeof(int32_t));
            return a;
        },
        py::arg("h"), py::arg("w"), py::arg("side") = 70,
        "bucketized NaViT position ids of an h x w patch grid (torch float32 semantics), int32 (h*w,)");
}
