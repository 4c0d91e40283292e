// Python bindings of the project's own vectorised CPU kernels, for tests against numpy: HiFT's
// sine (token2wav/hift_snake.h), and the exp and BF16 softmax of the oneDNN backend's attention
// (core/softmax_bf16.h), and the F16 -> BF16 rounding that packs F16 weights (core/bf16_convert.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/bf16_convert.h"
#include "core/error.h"
#include "core/softmax_bf16.h"
#include "python/numpy_arrays.h"
#include "token2wav/hift_snake.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

using minicpmo_py::F32Array;
using minicpmo_py::checked_f32;
using minicpmo_py::to_f32_array;

using HalfBits = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>;

// a binding of one F16 conversion (core/bf16_convert.h): 1-D half bits in, the converted values out
template <typename Out>
auto half_converter(void (*convert)(const uint16_t *, Out *, int64_t)) {
    return [convert](HalfBits bits) {
        if (bits.ndim() != 1) fail(Status::invalid_argument, "bits must be 1-D");
        py::array_t<Out> out(bits.shape(0));
        convert(bits.data(), out.mutable_data(), bits.shape(0));
        return out;
    };
}

}  // namespace

void bind_cpu_kernels(py::module_ & m) {
    m.def("hift_sine", [](const py::object & x) {
              F32Array a = checked_f32(x, 1, "x");
              std::vector<float> out(static_cast<size_t>(a.shape(0)));
              hift_sine(a.data(), out.data(), a.shape(0));
              return to_f32_array(out);
          }, py::arg("x"), "sin(x) elementwise by the vectorised sine of HiFT's Snake on the CPU (float32, 1-D).");
    m.def("vector_exp", [](const py::object & x) {
              F32Array a = checked_f32(x, 1, "x");
              std::vector<float> out(static_cast<size_t>(a.shape(0)));
              vector_exp(a.data(), out.data(), a.shape(0));
              return to_f32_array(out);
          }, py::arg("x"), "exp(x) elementwise by the vectorised exp of the BF16 attention softmax (float32, 1-D).");
    m.def("f16_to_bf16", half_converter<uint16_t>(f16_to_bf16), py::arg("bits"),
          "IEEE half bits (uint16, 1-D) -> BF16 bits (uint16) by the converter that packs F16 weights.");
    m.def("f16_to_f32", half_converter<float>(f16_to_f32), py::arg("bits"),
          "IEEE half bits (uint16, 1-D) -> float32 by the converter that widens F16 keys and values.");
    m.def("softmax_bf16", [](const py::object & scores, float scale, const py::object & mask) {
              F32Array a = checked_f32(scores, 2, "scores");
              const int64_t rows = a.shape(0), cols = a.shape(1);
              F32Array m;
              if (!mask.is_none()) {
                  m = checked_f32(mask, 2, "mask");
                  if (m.shape(0) != rows || m.shape(1) != cols) fail(Status::invalid_argument, "mask must have the scores' shape");
              }
              std::vector<uint16_t> bits(static_cast<size_t>(rows * cols));
              softmax_rows_to_bf16(a.data(), cols, mask.is_none() ? nullptr : m.data(), cols, bits.data(), cols, rows,
                                   cols, scale);
              py::array_t<float> out({rows, cols});
              float * o = out.mutable_data();
              for (size_t i = 0; i < bits.size(); ++i) {
                  const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
                  std::memcpy(o + i, &u, sizeof(float));
              }
              return out;
          }, py::arg("scores"), py::arg("scale"), py::arg("mask") = py::none(),
          "Row softmax of scale * scores + mask (float32, 2-D; mask optional, additive) rounded to BF16, returned "
          "widened to float32.");
}
