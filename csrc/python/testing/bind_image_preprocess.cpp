// _testing bindings of the image preprocessing steps (csrc/vision): slicing layout, patches and NaViT
// position ids, so tests can compare each step with Pillow / numpy (the resize is _core.resize_bicubic).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "python/image_args.h"
#include "vision/image_preprocess.h"
#include "vision/image_slicing.h"
#include "vision/navit_positions.h"

namespace py = pybind11;
using namespace minicpmo;
using minicpmo_py::checked_rgb_shape;
using minicpmo_py::contiguous;
using minicpmo_py::to_numpy;
using minicpmo_py::U8Array;
using minicpmo_py::view_of;

namespace {

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

void bind_testing_image_preprocess(py::module_ & m) {
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
