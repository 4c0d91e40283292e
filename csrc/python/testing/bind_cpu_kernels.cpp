// Python bindings of the project's own vectorised CPU kernels, for tests against numpy: HiFT's
// sine (token2wav/hift_snake.h), and the exp and BF16 / F32 softmax of the oneDNN backend's attention
// (core/softmax_rows.h), the F16 -> BF16 rounding that packs F16 weights (core/bf16_convert.h), and
// one matrix product with a weight, one conv1d node (core/conv1d_node) and one fused attention through a
// session's CPU backends (core/compute_backend: ggml's kernels, or oneDNN's of core/onednn_matmul,
// core/onednn_convolution and core/onednn_attention).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/bf16_convert.h"
#include "core/compute_backend.h"
#include "core/conv1d_node.h"
#include "core/error.h"
#include "core/graph_ops.h"
#include "core/q8_packed.h"
#include "core/softmax_rows.h"
#include "python/numpy_arrays.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "token2wav/hift_snake.h"
#include "tts/tts_attention.h"

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

// an F32 or F16 tensor's elements from F32 values (rounded to F16 for an F16 tensor)
void set_from_f32(ggml_tensor * t, const float * data) {
    if (t->type == GGML_TYPE_F32) {
        ggml_backend_tensor_set(t, data, 0, ggml_nbytes(t));
        return;
    }
    std::vector<uint16_t> half(static_cast<size_t>(ggml_nelements(t)));
    if (t->type == GGML_TYPE_BF16) {
        ggml_fp32_to_bf16_row(data, reinterpret_cast<ggml_bf16_t *>(half.data()), ggml_nelements(t));
    } else {
        ggml_fp32_to_fp16_row(data, reinterpret_cast<ggml_fp16_t *>(half.data()), ggml_nelements(t));
    }
    ggml_backend_tensor_set(t, half.data(), 0, ggml_nbytes(t));
}

// Runs a graph of one node on `backend`'s runner: `build(ctx, input)` makes the node from an F32
// input ne (ne0, ne1) set from `data`. Returns the node's values as [ne1, ne0] of its own ne and, in
// `placement`, where the graph ran.
template <typename Build>
py::array_t<float> run_one_node(ComputeBackend & backend, const char * name, int64_t ne0, int64_t ne1, const float * data,
                                Build build, GraphPlacement * placement = nullptr) {
    GraphRunner runner(backend, 8);
    GraphContext gctx = runner.new_context(name);
    ggml_tensor * input = ggml_new_tensor_2d(gctx.get(), GGML_TYPE_F32, ne0, ne1);
    ggml_set_input(input);
    ggml_tensor * out = build(gctx.get(), input);
    ggml_set_output(out);
    ggml_cgraph * graph = gctx.new_graph();
    ggml_build_forward_expand(graph, out);
    runner.allocate(graph);
    ggml_backend_tensor_set(input, data, 0, ggml_nbytes(input));
    runner.compute(graph);
    py::array_t<float> result({out->ne[1], out->ne[0]});
    ggml_backend_tensor_get(out, result.mutable_data(), 0, ggml_nbytes(out));
    if (placement) *placement = runner.placement();
    return result;
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
    set_from_f32(weight, w.data());

    return run_one_node(backend, "matrix product", K, M, x.data(),
                        [&](ggml_context * ctx, ggml_tensor * input) { return ggml_mul_mat(ctx, weight, input); });
}

// The steps around an encoder's product as its graphs build them, on the backends of `compute_type`
// (the oneDNN backend runs them and fuses them into the product in bf16): kind "linear_gelu":
// gelu(x w^T + b); "linear_gated": residual + gate * (x w^T + b); "layer_norm": LayerNorm of x's rows
// times w (one row) plus b. w and b sit in a weights buffer; gate and residual are graph inputs.
// Returns (y [M, N], scheduler splits of the graph).
py::tuple fused_chain(const std::string & kind, const py::object & x_obj, const py::object & w_obj,
                      const py::object & b_obj, const py::object & gate_obj, const py::object & residual_obj, float eps,
                      const std::string & compute_type, int n_threads) {
    F32Array x = checked_f32(x_obj, 2, "x");
    F32Array w = checked_f32(w_obj, 2, "w");
    F32Array b = checked_f32(b_obj, 1, "b");
    const bool norm = kind == "layer_norm", gated = kind == "linear_gated";
    if (!norm && !gated && kind != "linear_gelu") fail(Status::invalid_argument, "unknown kind " + kind);
    const int64_t M = x.shape(0), K = x.shape(1), N = norm ? K : w.shape(0);
    if (M < 1 || K < 1 || w.shape(1) != K || (norm && w.shape(0) != 1) || b.shape(0) != N) {
        fail(Status::invalid_argument, "x [M, K], w [N, K] (layer_norm: [1, K]) and b [N] do not fit");
    }
    F32Array gate, residual;
    if (gated) {
        gate = checked_f32(gate_obj, 1, "gate");
        residual = checked_f32(residual_obj, 2, "residual");
        if (gate.shape(0) != N || residual.shape(0) != M || residual.shape(1) != N) {
            fail(Status::invalid_argument, "gate [N] and residual [M, N] do not fit");
        }
    }
    ComputeBackend backend(nullptr, n_threads, resolve_compute_type(compute_type));
    ggml_init_params wp{2 * ggml_tensor_overhead(), nullptr, true};
    std::unique_ptr<ggml_context, decltype(&ggml_free)> wctx(ggml_init(wp), ggml_free);
    ggml_tensor * weight = ggml_new_tensor_2d(wctx.get(), GGML_TYPE_F32, K, norm ? 1 : N);
    ggml_tensor * bias = ggml_new_tensor_1d(wctx.get(), GGML_TYPE_F32, N);
    std::unique_ptr<ggml_backend_buffer, decltype(&ggml_backend_buffer_free)> wbuf(
        ggml_backend_alloc_ctx_tensors_from_buft(wctx.get(), weight_buffer_type(nullptr)), ggml_backend_buffer_free);
    if (!wbuf) fail(Status::internal, "cannot allocate the weights");
    ggml_backend_buffer_set_usage(wbuf.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    set_from_f32(weight, w.data());
    set_from_f32(bias, b.data());

    GraphRunner runner(backend, 16);
    GraphContext gctx = runner.new_context("fused chain");
    ggml_context * ctx = gctx.get();
    ggml_tensor * in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, M);
    ggml_tensor * g = gated ? ggml_new_tensor_1d(ctx, GGML_TYPE_F32, N) : nullptr;
    ggml_tensor * r = gated ? ggml_new_tensor_2d(ctx, GGML_TYPE_F32, N, M) : nullptr;
    for (ggml_tensor * t : {in, g, r}) {
        if (t) ggml_set_input(t);
    }
    ggml_tensor * out = nullptr;
    if (norm) {
        out = layer_norm(ctx, in, ggml_reshape_1d(ctx, weight, K), bias, eps);
    } else if (gated) {
        out = ggml_add(ctx, r, ggml_mul(ctx, linear(ctx, in, weight, bias), g));
    } else {
        out = ggml_gelu(ctx, linear(ctx, in, weight, bias));
    }
    ggml_set_output(out);
    ggml_cgraph * graph = gctx.new_graph();
    ggml_build_forward_expand(graph, out);
    runner.allocate(graph);
    ggml_backend_tensor_set(in, x.data(), 0, ggml_nbytes(in));
    if (gated) {
        ggml_backend_tensor_set(g, gate.data(), 0, ggml_nbytes(g));
        ggml_backend_tensor_set(r, residual.data(), 0, ggml_nbytes(r));
    }
    runner.compute(graph);
    py::array_t<float> result({M, N});
    ggml_backend_tensor_get(out, result.mutable_data(), 0, ggml_nbytes(out));
    return py::make_tuple(result, runner.placement().splits);
}

// x [M, K] times a Q8_0 matrix given as ggml's blocks (uint8 [N, K / 32 * 34]) -> [M, N] by the TTS's
// packed kernels (core/q8_packed.h) on instruction set `isa`, as the TTS graph runs them: one custom node
// whose `n_threads` threads split the row groups
py::array_t<float> q8_packed_product_py(const py::object & x_obj, const py::object & blocks_obj, const std::string & isa_name,
                                        int n_threads, const py::object & residual_obj, bool gated,
                                        const py::object & rms_obj, float rms_eps) {
    F32Array x = checked_f32(x_obj, 2, "x");
    using Bytes = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
    Bytes blocks = blocks_obj.cast<Bytes>();
    const int64_t M = x.shape(0), K = x.shape(1);
    if (blocks.ndim() != 2 || K % 32 != 0 || blocks.shape(1) != K / 32 * 34) {
        fail(Status::invalid_argument, "blocks must be N x (K / 32 * 34) bytes of Q8_0 blocks, K a multiple of 32");
    }
    const int64_t N = blocks.shape(0);
    if (M < 1 || N < 1) fail(Status::invalid_argument, "x and the matrix must not be empty");
    Q8Isa isa;
    if (isa_name == "avx2") {
        isa = Q8Isa::avx2;
    } else if (isa_name == "avx512_vnni") {
        isa = Q8Isa::avx512_vnni;
    } else {
        fail(Status::invalid_argument, "isa must be \"avx2\" or \"avx512_vnni\", got \"" + isa_name + "\"");
    }
    if (!q8_isa_supported(isa)) fail(Status::unsupported, "this CPU cannot run the " + isa_name + " kernel");
    if (gated && (N % 32 != 0 || !residual_obj.is_none())) {
        fail(Status::invalid_argument, "a gated product needs a multiple of 32 rows and no residual");
    }
    F32Array residual;
    if (!residual_obj.is_none()) {
        residual = checked_f32(residual_obj, 2, "residual");
        if (residual.shape(0) != M || residual.shape(1) != N) fail(Status::invalid_argument, "residual must be M x N");
    }
    F32Array rms;
    if (!rms_obj.is_none()) {
        rms = checked_f32(rms_obj, 1, "rms_weight");
        if (rms.shape(0) != K || !residual_obj.is_none()) {
            fail(Status::invalid_argument, "rms_weight must hold K values, without a residual");
        }
    }
    const PackedQ8Matrix packed({{blocks.data(), N}}, K, isa, rms_eps);
    ComputeBackend backend(nullptr, n_threads);
    GraphRunner runner(backend, 8);
    GraphContext gctx = runner.new_context("packed Q8_0 product");
    ggml_tensor * input = ggml_new_tensor_2d(gctx.get(), GGML_TYPE_F32, K, M);
    ggml_set_input(input);
    ggml_tensor * res = nullptr;
    if (!residual_obj.is_none()) {
        res = ggml_new_tensor_2d(gctx.get(), GGML_TYPE_F32, N, M);
        ggml_set_input(res);
    }
    ggml_tensor * norm = nullptr;
    if (!rms_obj.is_none()) {
        norm = ggml_new_tensor_1d(gctx.get(), GGML_TYPE_F32, K);
        ggml_set_input(norm);
    }
    ggml_tensor * out = gated  ? q8_packed_gated_node(gctx.get(), packed, input, norm)
                        : norm ? q8_packed_normed_product_node(gctx.get(), packed, input, norm)
                               : q8_packed_product_node(gctx.get(), packed, input, res);
    ggml_set_output(out);
    ggml_cgraph * graph = gctx.new_graph();
    ggml_build_forward_expand(graph, out);
    runner.allocate(graph);
    ggml_backend_tensor_set(input, x.data(), 0, ggml_nbytes(input));
    if (res) ggml_backend_tensor_set(res, residual.data(), 0, ggml_nbytes(res));
    if (norm) ggml_backend_tensor_set(norm, rms.data(), 0, ggml_nbytes(norm));
    runner.compute(graph);
    const int64_t n_out = gated ? N / 2 : N;
    py::array_t<float> result({M, n_out});
    ggml_backend_tensor_get(out, result.mutable_data(), 0, ggml_nbytes(out));
    return result;
}

// One conv1d node (core/conv1d_node) as HiFT's graph holds it: x [T, C_in] (a step's channels
// adjacent), the kernel w [C_out, C_in, K] in PyTorch's order (re-laid tap-major, in a weights
// buffer), bias b [C_out] or None, no padding -> (y [T_out, C_out], the nodes that ran on ggml's CPU
// backend in a session with oneDNN products). compute_type "f32" has no oneDNN backend: the CPU
// backend's own loop runs the node; "bf16" / "int8" sessions give it to oneDNN's convolution.
py::tuple conv1d_py(const py::object & x_obj, const py::object & w_obj, const py::object & b_obj, int dilation, int stride,
                    const std::string & compute_type, int n_threads) {
    F32Array x = checked_f32(x_obj, 2, "x");
    F32Array w = checked_f32(w_obj, 3, "w");
    const int64_t T = x.shape(0), C_in = x.shape(1), C_out = w.shape(0), K = w.shape(2);
    if (w.shape(1) != C_in || T < 1 || C_in < 1 || C_out < 1 || K < 1 || dilation < 1 || stride < 1 ||
        T < static_cast<int64_t>(dilation) * (K - 1) + 1) {
        fail(Status::invalid_argument, "x [T, C_in], w [C_out, C_in, K], dilation and stride >= 1, T >= dilation (K - 1) + 1");
    }
    F32Array b;
    if (!b_obj.is_none()) {
        b = checked_f32(b_obj, 1, "b");
        if (b.shape(0) != C_out) fail(Status::invalid_argument, "b must hold C_out values");
    }
    ComputeBackend backend(nullptr, n_threads, resolve_compute_type(compute_type));
    ggml_init_params wp{ggml_tensor_overhead() * 2, nullptr, true};
    std::unique_ptr<ggml_context, decltype(&ggml_free)> wctx(ggml_init(wp), ggml_free);
    ggml_tensor * weight = ggml_new_tensor_2d(wctx.get(), GGML_TYPE_F32, C_in * K, C_out);
    ggml_tensor * bias = b_obj.is_none() ? nullptr : ggml_new_tensor_1d(wctx.get(), GGML_TYPE_F32, C_out);
    std::unique_ptr<ggml_backend_buffer, decltype(&ggml_backend_buffer_free)> wbuf(
        ggml_backend_alloc_ctx_tensors_from_buft(wctx.get(), weight_buffer_type(nullptr)), ggml_backend_buffer_free);
    if (!wbuf) fail(Status::internal, "cannot allocate the weights");
    ggml_backend_buffer_set_usage(wbuf.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    std::vector<float> tap_major(static_cast<size_t>(C_in * K * C_out));
    tap_major_kernel(w.data(), tap_major.data(), K, C_in, C_out, sizeof(float));
    ggml_backend_tensor_set(weight, tap_major.data(), 0, ggml_nbytes(weight));
    if (bias) ggml_backend_tensor_set(bias, b.data(), 0, ggml_nbytes(bias));

    const Conv1dShape shape{static_cast<int>(K), dilation, stride};
    GraphPlacement placement;
    py::array_t<float> y = run_one_node(
        backend, "conv1d", C_in, T, x.data(),
        [&](ggml_context * ctx, ggml_tensor * input) { return conv1d_node(ctx, input, weight, bias, &shape); }, &placement);
    return py::make_tuple(y, placement.ggml_weight_products);
}

// The TTS decoder's attention node (tts/tts_attention.h) on caches of `capacity` slots laid out as the
// decoder's (keys a row per slot, values transposed; F16 or F32) holding `old_k` / `old_v` [n_cached,
// Hkv, hd] in their first slots: q [n, H, hd], k and v [n, Hkv, hd] of new rows at positions `pos`,
// mask [n, n_cached + n] -> (output [n, H * hd], the keys and values of every filled slot [S, Hkv * hd]
// read back from the caches)
py::tuple tts_attention_py(const py::object & q_obj, const py::object & k_obj, const py::object & v_obj,
                           const std::vector<int32_t> & pos, const py::object & old_k_obj, const py::object & old_v_obj,
                           const py::object & mask_obj, bool f16_cache, int64_t capacity, float rope_theta, int n_threads) {
    F32Array q = checked_f32(q_obj, 3, "q"), k = checked_f32(k_obj, 3, "k"), v = checked_f32(v_obj, 3, "v");
    F32Array old_k = checked_f32(old_k_obj, 3, "old_k"), old_v = checked_f32(old_v_obj, 3, "old_v");
    F32Array mask = checked_f32(mask_obj, 2, "mask");
    const int64_t n = q.shape(0), H = q.shape(1), hd = q.shape(2), Hkv = k.shape(1), n_cached = old_k.shape(0);
    const int64_t S = n_cached + n, width = Hkv * hd;
    if (capacity == 0) capacity = S;
    const bool ok = k.shape(0) == n && k.shape(2) == hd && v.shape(0) == n && v.shape(1) == Hkv && v.shape(2) == hd &&
                    old_v.shape(0) == n_cached && old_k.shape(1) == Hkv && old_v.shape(1) == Hkv &&
                    old_k.shape(2) == hd && old_v.shape(2) == hd && static_cast<int64_t>(pos.size()) == n &&
                    mask.shape(0) == n && mask.shape(1) == S && Hkv >= 1 && H % Hkv == 0 && capacity >= S && n >= 1 &&
                    hd >= 2 && hd % 2 == 0;
    if (!ok) {
        fail(Status::invalid_argument, "q [n, H, hd], k and v [n, Hkv, hd], pos [n], old_k and old_v [n_cached, Hkv, hd], "
                                       "mask [n, n_cached + n], H a multiple of Hkv, hd even, capacity >= n_cached + n");
    }
    if (!tts_cached_attention_supported()) fail(Status::unsupported, "this CPU cannot run the TTS attention node");
    const ggml_type type = f16_cache ? GGML_TYPE_F16 : GGML_TYPE_F32;
    ggml_init_params cp{ggml_tensor_overhead() * 2, nullptr, true};
    std::unique_ptr<ggml_context, decltype(&ggml_free)> cctx(ggml_init(cp), ggml_free);
    ggml_tensor * cache_k = ggml_new_tensor_2d(cctx.get(), type, width, capacity);
    ggml_tensor * cache_v = ggml_new_tensor_2d(cctx.get(), type, capacity, width);
    std::unique_ptr<ggml_backend_buffer, decltype(&ggml_backend_buffer_free)> cbuf(
        ggml_backend_alloc_ctx_tensors_from_buft(cctx.get(), weight_buffer_type(nullptr)), ggml_backend_buffer_free);
    if (!cbuf) fail(Status::internal, "cannot allocate the caches");
    std::vector<float> ks(static_cast<size_t>(width * capacity), 0.0f), vs(static_cast<size_t>(width * capacity), 0.0f);
    for (int64_t j = 0; j < n_cached; ++j) {
        for (int64_t c = 0; c < width; ++c) {
            ks[static_cast<size_t>(j * width + c)] = old_k.data()[j * width + c];
            vs[static_cast<size_t>(c * capacity + j)] = old_v.data()[j * width + c];
        }
    }
    set_from_f32(cache_k, ks.data());
    set_from_f32(cache_v, vs.data());

    ComputeBackend backend(nullptr, n_threads);
    GraphRunner runner(backend, 8);
    GraphContext gctx = runner.new_context("TTS attention");
    ggml_context * ctx = gctx.get();
    ggml_tensor * qt = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, H, n);
    ggml_tensor * kt = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, Hkv, n);
    ggml_tensor * vt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, width, n);
    ggml_tensor * pt = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
    ggml_tensor * mt = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, S, n);
    for (ggml_tensor * t : {qt, kt, vt, pt, mt}) ggml_set_input(t);
    ggml_tensor * out = tts_cached_attention(ctx, qt, kt, vt, pt, mt, TtsAttentionCache{cache_k, cache_v, n_cached}, rope_theta);
    ggml_set_output(out);
    ggml_cgraph * graph = gctx.new_graph();
    ggml_build_forward_expand(graph, out);
    runner.allocate(graph);
    ggml_backend_tensor_set(qt, q.data(), 0, ggml_nbytes(qt));
    ggml_backend_tensor_set(kt, k.data(), 0, ggml_nbytes(kt));
    ggml_backend_tensor_set(vt, v.data(), 0, ggml_nbytes(vt));
    ggml_backend_tensor_set(pt, pos.data(), 0, ggml_nbytes(pt));
    ggml_backend_tensor_set(mt, mask.data(), 0, ggml_nbytes(mt));
    runner.compute(graph);
    py::array_t<float> result({n, H * hd});
    ggml_backend_tensor_get(out, result.mutable_data(), 0, ggml_nbytes(out));
    // the caches back as F32 rows per slot
    std::vector<float> k_all(static_cast<size_t>(width * capacity)), v_all(static_cast<size_t>(width * capacity));
    for (auto [t, dst] : {std::make_pair(cache_k, &k_all), std::make_pair(cache_v, &v_all)}) {
        if (f16_cache) {
            std::vector<ggml_fp16_t> half(static_cast<size_t>(width * capacity));
            ggml_backend_tensor_get(t, half.data(), 0, ggml_nbytes(t));
            ggml_fp16_to_fp32_row(half.data(), dst->data(), ggml_nelements(t));
        } else {
            ggml_backend_tensor_get(t, dst->data(), 0, ggml_nbytes(t));
        }
    }
    py::array_t<float> keys({S, width}), values({S, width});
    for (int64_t j = 0; j < S; ++j) {
        for (int64_t c = 0; c < width; ++c) {
            keys.mutable_data()[j * width + c] = k_all[static_cast<size_t>(j * width + c)];
            values.mutable_data()[j * width + c] = v_all[static_cast<size_t>(c * capacity + j)];
        }
    }
    return py::make_tuple(result, keys, values);
}

// the attention softmax (core/softmax_rows.h) of 2-D scores and an optional mask of their shape,
// into BF16 (returned widened) or F32 (computed in place in the returned array)
py::array_t<float> softmax(const py::object & scores, float scale, const py::object & mask, bool bf16) {
    F32Array a = checked_f32(scores, 2, "scores");
    const int64_t rows = a.shape(0), cols = a.shape(1);
    F32Array m;
    if (!mask.is_none()) {
        m = checked_f32(mask, 2, "mask");
        if (m.shape(0) != rows || m.shape(1) != cols) fail(Status::invalid_argument, "mask must have the scores' shape");
    }
    const float * mask_data = mask.is_none() ? nullptr : m.data();
    py::array_t<float> out({rows, cols});
    float * o = out.mutable_data();
    if (!bf16) {
        std::memcpy(o, a.data(), static_cast<size_t>(rows * cols) * sizeof(float));
        softmax_rows_to_f32(o, cols, mask_data, cols, o, cols, rows, cols, scale);
        return out;
    }
    std::vector<uint16_t> bits(static_cast<size_t>(rows * cols));
    softmax_rows_to_bf16(a.data(), cols, mask_data, cols, bits.data(), cols, rows, cols, scale);
    for (size_t i = 0; i < bits.size(); ++i) {
        const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
        std::memcpy(o + i, &u, sizeof(float));
    }
    return out;
}

// q [H, Lq, D], k [H, Lk, D], v [H, Lk, Dv], mask [Lq, Lk] (additive, rounded to F16) or None ->
// [H, Lq, Dv]: one FLASH_ATTN_EXT as the encoders build it, on the CPU backends of `compute_type`
// (f32: ggml's kernel; bf16 / int8: the oneDNN backend's, core/onednn_attention); keys and values
// stored in F16 when `f16_kv`, in BF16 when `bf16_kv` (a cache). `cache_layout`: they are read through views of caches as the
// encoders lay them out: the keys as rows holding every head ([D * H, Lk], the DiT's and Whisper's),
// the values transposed ([Lk, Dv * H], keys fastest: Whisper's)
py::array_t<float> fused_attention(const py::object & q_obj, const py::object & k_obj, const py::object & v_obj,
                                   const py::object & mask_obj, float scale, const std::string & compute_type,
                                   bool f16_kv, int n_threads, bool cache_layout, bool bf16_kv) {
    F32Array q = checked_f32(q_obj, 3, "q"), k = checked_f32(k_obj, 3, "k"), v = checked_f32(v_obj, 3, "v");
    const int64_t H = q.shape(0), Lq = q.shape(1), D = q.shape(2), Lk = k.shape(1), Dv = v.shape(2);
    if (k.shape(0) != H || v.shape(0) != H || k.shape(2) != D || v.shape(1) != Lk) {
        fail(Status::invalid_argument, "q, k, v must be [H, Lq, D], [H, Lk, D], [H, Lk, Dv]");
    }
    if (H < 1 || Lq < 1 || D < 1 || Lk < 1 || Dv < 1) fail(Status::invalid_argument, "q, k, v must not be empty");
    F32Array mask;
    if (!mask_obj.is_none()) {
        mask = checked_f32(mask_obj, 2, "mask");
        if (mask.shape(0) != Lq || mask.shape(1) != Lk) fail(Status::invalid_argument, "mask must be [Lq, Lk]");
    }
    ComputeBackend backend(nullptr, n_threads, resolve_compute_type(compute_type));
    GraphRunner runner(backend, 16);
    GraphContext gctx = runner.new_context("fused attention");
    ggml_context * ctx = gctx.get();
    const ggml_type kv_type = bf16_kv ? GGML_TYPE_BF16 : f16_kv ? GGML_TYPE_F16 : GGML_TYPE_F32;
    ggml_tensor * qt = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, D, Lq, H);
    ggml_tensor *kt, *vt, *k_op, *v_op;  // what is stored, and the operands read from it
    if (cache_layout) {
        kt = ggml_new_tensor_2d(ctx, kv_type, D * H, Lk);
        vt = ggml_new_tensor_2d(ctx, kv_type, Lk, Dv * H);
        k_op = ggml_permute(ctx, ggml_reshape_3d(ctx, kt, D, H, Lk), 0, 2, 1, 3);                  // [D, Lk, H]
        v_op = ggml_permute(ctx, ggml_view_3d(ctx, vt, Lk, Dv, H, vt->nb[1], Dv * vt->nb[1], 0), 1, 0, 2, 3);  // [Dv, Lk, H]
    } else {
        k_op = kt = ggml_new_tensor_3d(ctx, kv_type, D, Lk, H);
        v_op = vt = ggml_new_tensor_3d(ctx, kv_type, Dv, Lk, H);
    }
    ggml_tensor * mt = mask_obj.is_none() ? nullptr : ggml_new_tensor_2d(ctx, GGML_TYPE_F16, Lk, Lq);
    for (ggml_tensor * t : {qt, kt, vt, mt}) {
        if (t) ggml_set_input(t);
    }
    ggml_tensor * out = ggml_flash_attn_ext(ctx, qt, k_op, v_op, mt, scale, 0.0f, 0.0f);  // [Dv, H, Lq]
    out = ggml_cont(ctx, ggml_permute(ctx, out, 0, 2, 1, 3));                          // [Dv, Lq, H]
    ggml_set_output(out);
    ggml_cgraph * graph = gctx.new_graph();
    ggml_build_forward_expand(graph, out);
    runner.allocate(graph);
    set_from_f32(qt, q.data());
    if (cache_layout) {  // [H, Lk, D] -> [Lk][H][D];  [H, Lk, Dv] -> [H][Dv][Lk]
        std::vector<float> ks(static_cast<size_t>(H * Lk * D)), vs(static_cast<size_t>(H * Lk * Dv));
        for (int64_t h = 0; h < H; ++h) {
            for (int64_t j = 0; j < Lk; ++j) {
                for (int64_t d = 0; d < D; ++d) ks[(j * H + h) * D + d] = k.data()[(h * Lk + j) * D + d];
                for (int64_t d = 0; d < Dv; ++d) vs[(h * Dv + d) * Lk + j] = v.data()[(h * Lk + j) * Dv + d];
            }
        }
        set_from_f32(kt, ks.data());
        set_from_f32(vt, vs.data());
    } else {
        set_from_f32(kt, k.data());
        set_from_f32(vt, v.data());
    }
    if (mt) set_from_f32(mt, mask.data());
    runner.compute(graph);
    py::array_t<float> result({H, Lq, Dv});
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
              return softmax(scores, scale, mask, true);
          }, py::arg("scores"), py::arg("scale"), py::arg("mask") = py::none(),
          "Row softmax of scale * scores + mask (float32, 2-D; mask optional, additive) rounded to BF16, returned "
          "widened to float32.");
    m.def("softmax_f32", [](const py::object & scores, float scale, const py::object & mask) {
              return softmax(scores, scale, mask, false);
          }, py::arg("scores"), py::arg("scale"), py::arg("mask") = py::none(),
          "Row softmax of scale * scores + mask (float32, 2-D; mask optional, additive) in float32, computed in "
          "place as the int8 sessions' attention does.");
    m.def("matrix_product", &matrix_product, py::arg("x"), py::arg("w"), py::arg("compute_type") = "f32",
          py::arg("f16_weight") = false, py::arg("n_threads") = 1,
          "x (M x K) @ w.T (w: N x K) as an encoder's product with a weight: w stored in a weights buffer "
          "(F32, or F16 when f16_weight), computed by the CPU backends of compute_type (\"f32\": ggml; \"bf16\", "
          "\"int8\": oneDNN). Returns M x N float32.");
    m.def("fused_chain", &fused_chain, py::arg("kind"), py::arg("x"), py::arg("w"), py::arg("b"),
          py::arg("gate") = py::none(), py::arg("residual") = py::none(), py::arg("eps") = 1e-5f,
          py::arg("compute_type") = "f32", py::arg("n_threads") = 1,
          "an encoder's product with the steps around it, as its graphs build them, on the CPU backends of "
          "compute_type: kind 'linear_gelu' gelu(x @ w.T + b), 'linear_gated' residual + gate * (x @ w.T + b), "
          "'layer_norm' LayerNorm(x) * w[0] + b (w: 1 x K). Returns (y, scheduler splits).");
    m.def("q8_packed_product", &q8_packed_product_py, py::arg("x"), py::arg("blocks"), py::arg("isa"),
          py::arg("n_threads") = 1, py::arg("residual") = py::none(), py::arg("gated") = false,
          py::arg("rms_weight") = py::none(), py::arg("rms_eps") = 1e-6f,
          "x (M x K float32) @ w.T (+ residual, M x N) for a Q8_0 matrix w given as ggml's blocks (uint8, N x K/32*34: "
          "an F16 scale and 32 int8 per block) by the TTS's packed kernels on isa (\"avx2\", \"avx512_vnni\"), as "
          "one graph node on n_threads threads. Returns M x N float32; gated: silu(x @ w[:N/2].T) * (x @ w[N/2:].T), "
          "M x N/2; rms_weight (K values): x replaced by x / sqrt(mean(x^2) + rms_eps) * rms_weight first.");
    m.def("conv1d", &conv1d_py, py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("dilation") = 1,
          py::arg("stride") = 1, py::arg("compute_type") = "f32", py::arg("n_threads") = 1,
          "one conv1d node (core/conv1d_node): (y [T_out, C_out], nodes left to ggml's CPU backend)");
    m.def("tts_attention", &tts_attention_py, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("pos"),
          py::arg("old_k"), py::arg("old_v"), py::arg("mask"), py::arg("f16_cache") = true, py::arg("capacity") = 0,
          py::arg("rope_theta") = 10000.0f, py::arg("n_threads") = 1,
          "The TTS decoder's attention node: q (n x H x hd), k, v (n x Hkv x hd) of new rows at positions pos, caches "
          "of capacity slots (0: just enough) holding old_k, old_v (n_cached x Hkv x hd) laid out as the decoder's, F16 "
          "when f16_cache; mask n x (n_cached + n) additive. RoPE (NEOX, base rope_theta) on q and k, k and v stored, "
          "softmax(q . k / sqrt(hd) + mask) . v per head (query heads in groups of H / Hkv per key head). Returns "
          "(output n x H*hd, keys, values: every filled slot's row read back from the caches, (n_cached + n) x Hkv*hd).");
    m.def("q8_isas", [] {
              std::vector<std::string> out;
              for (Q8Isa isa : {Q8Isa::avx2, Q8Isa::avx512_vnni}) {
                  if (q8_isa_supported(isa)) out.emplace_back(q8_isa_name(isa));
              }
              return out;
          }, "The packed Q8_0 kernels this CPU runs (\"avx2\", \"avx512_vnni\").");
    m.def("q8_best_isa", [] {
              const std::optional<Q8Isa> isa = best_q8_isa();
              return isa ? py::object(py::str(q8_isa_name(*isa))) : py::object(py::none());
          }, "The packed Q8_0 kernel the TTS's matrices use in this process (None: ggml's mul_mat).");
    m.def("fused_attention", &fused_attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(),
          py::arg("scale") = 1.0f, py::arg("compute_type") = "f32", py::arg("f16_kv") = false, py::arg("n_threads") = 1,
          py::arg("cache_layout") = false, py::arg("bf16_kv") = false,
          "softmax(scale * q @ k.T + mask) @ v per head (q: H x Lq x D, k: H x Lk x D, v: H x Lk x Dv; mask: Lq x Lk "
          "additive, stored in F16) as one fused attention op on the CPU backends of compute_type (\"f32\": ggml; "
          "\"bf16\", \"int8\": oneDNN, F32 products in int8); keys and values stored in F16 when f16_kv (BF16 when "
          "bf16_kv), and read "
          "through views of caches laid out as the encoders' (keys' rows holding every head, values transposed) "
          "when cache_layout. Returns H x Lq x Dv float32.");
}
