// Python bindings of the project's own vectorised CPU kernels, for tests against numpy: HiFT's
// sine (token2wav/hift_snake.h), and the exp and BF16 softmax of the oneDNN backend's attention
// (core/softmax_bf16.h), the F16 -> BF16 rounding that packs F16 weights (core/bf16_convert.h), and
// one matrix product with a weight through a session's CPU backends (core/compute_backend: ggml's
// kernels, or oneDNN's BF16 / int8 products of core/onednn_matmul).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/bf16_convert.h"
#include "core/compute_backend.h"
#include "core/error.h"
#include "core/softmax_bf16.h"
#include "python/numpy_arrays.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"
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

// x [M, K] times the transposed weight w [N, K] -> [M, N] as an encoder computes it: w in a weights
// buffer (F32, or rounded to F16 when `f16_weight`), one MUL_MAT, the backends of `compute_type`
py::array_t<float> matrix_product(const py::object & x_obj, const py::object & w_obj, const std::string & compute_type,
                                  bool f16_weight, int n_threads) {
    F32Array x = checked_f32(x_obj, 2, "x");
    F32Array w = checked_f32(w_obj, 2, "w");
    const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0);
    if (w.shape(1) != K) fail(Status::invalid_argument, "x and w must have the same number of columns");
    if (M < 1 || K < 1 || N < 1) fail(Status::invalid_argument, "x and w must not be empty");
    ComputeBackend backend(nullptr, n_threads, resolve_compute_type(compute_type));

    ggml_init_params wp{ggml_tensor_overhead(), nullptr, true};
    std::unique_ptr<ggml_context, decltype(&ggml_free)> wctx(ggml_init(wp), ggml_free);
    ggml_tensor * weight = ggml_new_tensor_2d(wctx.get(), f16_weight ? GGML_TYPE_F16 : GGML_TYPE_F32, K, N);
    std::unique_ptr<ggml_backend_buffer, decltype(&ggml_backend_buffer_free)> wbuf(
        ggml_backend_alloc_ctx_tensors_from_buft(wctx.get(), weight_buffer_type(nullptr)), ggml_backend_buffer_free);
    if (!wbuf) fail(Status::internal, "cannot allocate the weight");
    ggml_backend_buffer_set_usage(wbuf.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    if (f16_weight) {
        std::vector<ggml_fp16_t> half(static_cast<size_t>(K * N));
        ggml_fp32_to_fp16_row(w.data(), half.data(), K * N);
        ggml_backend_tensor_set(weight, half.data(), 0, ggml_nbytes(weight));
    } else {
        ggml_backend_tensor_set(weight, w.data(), 0, ggml_nbytes(weight));
    }

    GraphRunner runner(backend, 8);
    GraphContext gctx = runner.new_context("matrix product");
    ggml_tensor * input = ggml_new_tensor_2d(gctx.get(), GGML_TYPE_F32, K, M);
    ggml_set_input(input);
    ggml_tensor * out = ggml_mul_mat(gctx.get(), weight, input);
    ggml_set_output(out);
    ggml_cgraph * graph = gctx.new_graph();
    ggml_build_forward_expand(graph, out);
    runner.allocate(graph);
    ggml_backend_tensor_set(input, x.data(), 0, ggml_nbytes(input));
    runner.compute(graph);
    py::array_t<float> result({M, N});
    ggml_backend_tensor_get(out, result.mutable_data(), 0, ggml_nbytes(out));
    return result;
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
    m.def("matrix_product", &matrix_product, py::arg("x"), py::arg("w"), py::arg("compute_type") = "f32",
          py::arg("f16_weight") = false, py::arg("n_threads") = 1,
          "x (M x K) @ w.T (w: N x K) as an encoder's product with a weight: w stored in a weights buffer "
          "(F32, or F16 when f16_weight), computed by the CPU backends of compute_type (\"f32\": ggml; \"bf16\", "
          "\"int8\": oneDNN). Returns M x N float32.");
}
