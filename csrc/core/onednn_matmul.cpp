#include "core/onednn_matmul.h"

#include "core/bf16_convert.h"
#include "core/compute_backend.h"
#include "core/error.h"
#include "core/gguf_weights.h"
#include "core/int8_quantize.h"
#include "core/onednn_attention.h"
#include "core/onednn_convolution.h"
#include "core/onednn_row_ops.h"

#include <string>

#ifdef MINICPMO_ONEDNN
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ggml-backend-impl.h"  // the backend and device interfaces a backend fills in (pinned ggml)
#include "ggml-impl.h"          // ggml_can_fuse_ext: which consumers of a product only it reads (pinned ggml)
#include "ggml.h"
#endif

namespace minicpmo {

#ifndef MINICPMO_ONEDNN

ggml_backend_t onednn_matmul_backend_new(int, const GgufWeights *, OnednnPrecision) {
    fail(Status::unsupported, "BF16 and int8 matrix products need oneDNN: this build has none (MINICPMO_ONEDNN=OFF, "
                              "or libdnnl was not found at configure time; Debian: apt-get install libdnnl-dev)");
}

void onednn_matmul_set_n_threads(ggml_backend_t, int) {}

void onednn_matmul_prepare(ggml_backend_t, ggml_cgraph *) {}

bool onednn_bf16_native() { return false; }

bool onednn_takes_attention(const ggml_tensor *) { return false; }

std::string onednn_matmul_take_error(ggml_backend_t) { return ""; }

#else

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// below this many rows a product is a few vector-matrix products: ggml's kernels read the F16 weights
// directly, and the activations' conversion to BF16 would cost more than it saves (see min_rows)
constexpr int64_t kMinRows = 32;
// the row count whose packed weight layout every product uses (oneDNN's layout for a given K x N does
// not depend on M for its BF16 kernels; a product whose preferred layout differs still runs, on this one)
constexpr int64_t kLayoutRows = 1024;

// One product shape: the matmul, the F32 activations as ggml holds them, the operand the kernel reads
// (BF16, rounded by the reorder; int8's bytes; for F32 products the activations themselves), and the
// result (F32, or the integer sums of int8 products)
struct Product {
    dnnl::matmul matmul;
    dnnl::reorder to_bf16;
    memory::desc src_f32, src_kernel, dst;
};

// One weight matrix in oneDNN's packed layout (the same on every engine of this CPU): BF16, F32, or
// int8 with its per-row scales and integer sums (core/int8_quantize)
struct PackedMatrix {
    memory::desc desc;
    std::unique_ptr<void, decltype(&std::free)> bytes{nullptr, &std::free};
    std::vector<float> int8_scale;
    std::vector<int32_t> int8_sum;
};

struct ActivationProduct {
    dnnl::matmul matmul;
    dnnl::reorder src_to_bf16, wei_to_bf16;
    memory::desc src_bf16, wei_bf16;
};

// An elementwise function (eltwise_algorithm) over n F32 values, in place or not: oneDNN's vectorised kernel
struct Activation {
    dnnl::eltwise_forward op;
    memory::desc desc;
};

// product shapes kept (each a few JIT kernels; image sizes vary): past this the caches start again
constexpr size_t kMaxShapes = 64;

struct Context {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    dnnl::stream stream{engine};
    int n_threads = 1;
    // F32 products (OnednnPrecision::f32): weights packed in F32, activations used as they are, and
    // nothing but products with weights taken; int8 products: those and the elementwise functions
    OnednnPrecision precision = OnednnPrecision::bf16;
    bool f32() const { return precision == OnednnPrecision::f32; }
    bool int8() const { return precision == OnednnPrecision::int8; }
    const GgufWeights * model = nullptr;                     // whose matrices are packed once, for every session
    // (data address, type, K, N) -> the packed BF16 copy and this engine's view of it
    std::map<std::array<int64_t, 4>, std::pair<std::shared_ptr<const PackedMatrix>, memory>> weights;
    std::map<std::array<int64_t, 2>, memory::desc> layouts;  // (K, N) -> packed weight layout
    std::map<std::array<int64_t, 4>, Product> products;      // (M, K, N, Epilogue::code)
    // activation products by the dims and element strides of their three F32 operands
    std::map<std::vector<int64_t>, ActivationProduct> activation_products;
    std::map<std::array<int64_t, 2>, Activation> activations;  // (elements, algorithm) -> eltwise
    std::vector<uint8_t> scratch_src, scratch_wei;           // the BF16 operands of the product running
    const ggml_tensor * scratch_of = nullptr;                // whose activations scratch_src holds, this graph
    std::vector<float> row_scale;                            // int8: the activation rows' scales
    std::vector<int32_t> row_zero;                           //       and zero points
    std::unique_ptr<OnednnAttention> attention;              // FLASH_ATTN_EXT (BF16 or F32 operands)
    std::unique_ptr<OnednnConvolutions> convolutions;        // conv1d nodes (F32)
    std::string last_error;                                  // why the last graph failed
    ggml_backend_reg reg{};
    ggml_backend_device device{};
};

// The data types a product's kernel reads and writes at each precision
struct KernelTypes {
    dt src, wei, dst;
};

KernelTypes kernel_types(OnednnPrecision precision) {
    switch (precision) {
        case OnednnPrecision::f32: return {dt::f32, dt::f32, dt::f32};
        case OnednnPrecision::int8: return {dt::u8, dt::s8, dt::s32};
        case OnednnPrecision::bf16: break;
    }
    return {dt::bf16, dt::bf16, dt::f32};
}

const memory::desc & layout(Context & c, int64_t K, int64_t N) {
    auto it = c.layouts.find({K, N});
    if (it != c.layouts.end()) return it->second;
    const KernelTypes t = kernel_types(c.precision);
    memory::desc src({kLayoutRows, K}, t.src, tag::ab), wei({K, N}, t.wei, tag::any),
        dst({kLayoutRows, N}, t.dst, tag::ab);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), c.engine);
    return c.layouts.emplace(std::array<int64_t, 2>{K, N}, pd.weights_desc()).first->second;
}

// The weight's values in F32, row by row (int8 products quantize from them)
std::vector<float> weight_f32(Context & c, const ggml_tensor * w) {
    const int64_t n = ggml_nelements(w);
    std::vector<float> out(static_cast<size_t>(n));
    constexpr int64_t kChunk = 1 << 16;
    switch (w->type) {
        case GGML_TYPE_F32: std::memcpy(out.data(), w->data, out.size() * sizeof(float)); break;
        case GGML_TYPE_F16:
#pragma omp parallel for num_threads(c.n_threads) schedule(static)
            for (int64_t i = 0; i < n; i += kChunk) {
                f16_to_f32(static_cast<const uint16_t *>(w->data) + i, out.data() + i, std::min(kChunk, n - i));
            }
            break;
        case GGML_TYPE_BF16: {
            const auto * bits = static_cast<const uint16_t *>(w->data);
            for (int64_t i = 0; i < n; ++i) {
                const uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
                std::memcpy(&out[static_cast<size_t>(i)], &u, sizeof u);
            }
            break;
        }
        default: fail(Status::internal, std::string("oneDNN products: unexpected weight type ") + ggml_type_name(w->type));
    }
    return out;
}

// An int8 weight: each of its N rows quantized to 7 bits (core/int8_quantize), then re-laid
std::shared_ptr<const PackedMatrix> pack_int8(Context & c, const ggml_tensor * w) {
    const int64_t K = w->ne[0], N = w->ne[1];
    auto packed = std::make_shared<PackedMatrix>();
    std::vector<int8_t> q(static_cast<size_t>(K * N));
    packed->int8_scale.resize(static_cast<size_t>(N));
    packed->int8_sum.resize(static_cast<size_t>(N));
    {
        const std::vector<float> values = weight_f32(c, w);
        quantize_weight_rows(values.data(), N, K, q.data(), packed->int8_scale.data(), packed->int8_sum.data());
    }
    packed->desc = layout(c, K, N);
    const size_t size = (packed->desc.get_size() + 63) / 64 * 64;  // aligned_alloc wants a multiple of the alignment
    packed->bytes.reset(std::aligned_alloc(64, size));
    if (!packed->bytes) throw std::bad_alloc();
    memory user(memory::desc({K, N}, dt::s8, tag::ba), c.engine, q.data());
    memory dst(packed->desc, c.engine, packed->bytes.get());
    dnnl::reorder(user, dst).execute(c.stream, user, dst);
    c.stream.wait();
    return packed;
}

// ggml's weight [N rows of K] is oneDNN's K x N matrix in "ba" order. F32 and BF16 weights are
// reordered straight from their data; F16 ones (oneDNN 2.6 has no F16 reorder) are first converted
// on the backend's threads: rounded to BF16 (as oneDNN's F32 -> BF16 reorder rounds), or exactly to
// F32 for F32 products.
std::shared_ptr<const PackedMatrix> pack(Context & c, const ggml_tensor * w) {
    if (c.int8()) return pack_int8(c, w);
    const int64_t K = w->ne[0], N = w->ne[1];
    const int64_t n = K * N;
    std::unique_ptr<uint16_t[]> bf16;  // an F16 weight in BF16 or F32 while it is packed
    std::vector<float> f32;
    memory::desc user_desc({K, N}, dt::f32, tag::ba);
    const void * user_data = w->data;
    switch (w->type) {
        case GGML_TYPE_F32: break;
        case GGML_TYPE_BF16: user_desc = memory::desc({K, N}, dt::bf16, tag::ba); break;
        case GGML_TYPE_F16: {
            const auto * src = static_cast<const uint16_t *>(w->data);
            constexpr int64_t kChunk = 1 << 16;
            if (c.f32()) {
                f32 = weight_f32(c, w);
                user_data = f32.data();
                break;
            }
            bf16.reset(new uint16_t[static_cast<size_t>(n)]);
#pragma omp parallel for num_threads(c.n_threads) schedule(static)
            for (int64_t i = 0; i < n; i += kChunk) f16_to_bf16(src + i, bf16.get() + i, std::min(kChunk, n - i));
            user_desc = memory::desc({K, N}, dt::bf16, tag::ba);
            user_data = bf16.get();
            break;
        }
        default: fail(Status::internal, std::string("oneDNN products: unexpected weight type ") + ggml_type_name(w->type));
    }
    auto packed = std::make_shared<PackedMatrix>();
    packed->desc = layout(c, K, N);
    const size_t size = (packed->desc.get_size() + 63) / 64 * 64;  // aligned_alloc wants a multiple of the alignment
    packed->bytes.reset(std::aligned_alloc(64, size));
    if (!packed->bytes) throw std::bad_alloc();
    memory user(user_desc, c.engine, const_cast<void *>(user_data));
    memory dst(packed->desc, c.engine, packed->bytes.get());
    dnnl::reorder(user, dst).execute(c.stream, user, dst);
    c.stream.wait();
    return packed;
}

// Whether `w` is, or views, one of the model's stored weights
bool of_model(const Context & c, const ggml_tensor * w) { return c.model && c.model->owns(storage_of(w)); }

// A matrix of the model's weights itself (not a view): packed once for every session, its original
// dropped (BF16 and int8 products: the model keeps one copy of each kind)
bool is_model_matrix(const Context & c, const ggml_tensor * w) { return !c.f32() && of_model(c, w) && !w->view_src; }

// the name under which the model keeps a matrix's packed copy of this backend's kind
const char * packed_kind(const Context & c) { return c.int8() ? "onednn-int8" : "onednn-bf16"; }

// The packed copy of weight `w` and this engine's view of it: the model's copy (GgufWeights::kernel_copy,
// shared by its sessions) for a matrix of the model's weights, else this backend's own
const std::pair<std::shared_ptr<const PackedMatrix>, memory> & packed_weight(Context & c, const ggml_tensor * w) {
    const std::array<int64_t, 4> key{reinterpret_cast<int64_t>(w->data), static_cast<int64_t>(w->type), w->ne[0], w->ne[1]};
    auto it = c.weights.find(key);
    if (it != c.weights.end()) return it->second;
    std::shared_ptr<const PackedMatrix> packed;
    if (is_model_matrix(c, w)) {
        packed = std::static_pointer_cast<const PackedMatrix>(
            c.model->kernel_copy(w, packed_kind(c), [&] { return pack(c, w); }));
    } else {
        packed = pack(c, w);
    }
    memory m(packed->desc, c.engine, packed->bytes.get());
    return c.weights.emplace(key, std::make_pair(std::move(packed), m)).first->second;
}

// What the consumers of a product with a weight do to its output, which the product's kernel can do
// as it writes it (oneDNN's bias and post-ops), BF16 sessions only: + a bias row, then an activation,
// or times a gate row and + a residual (the DiT's gated branches: h + gate (x W + b)). The nodes
// fused must read the product's output alone (ggml_can_fuse_ext: each intermediate used once, not an
// output, not viewed); the product then writes the last one's memory and the others are skipped.
struct Epilogue {
    const ggml_tensor *bias = nullptr, *gate = nullptr, *residual = nullptr;
    dnnl::algorithm activation = dnnl::algorithm::undef;
    ggml_tensor * out = nullptr;  // the last node fused (the product itself when none is)
    int last = -1;                // its index in the graph
    // the product at graph index i alone
    static Epilogue none(ggml_tensor * mm, int i) {
        Epilogue e;
        e.out = mm;
        e.last = i;
        return e;
    }
    int64_t code() const {
        return (bias ? 1 : 0) | (gate ? 2 : 0) | (residual ? 4 : 0) | (static_cast<int64_t>(activation) << 3);
    }
};

// the index of the first node after i that computes something (views skipped), or -1
int next_computing(ggml_cgraph * g, int i) {
    for (int j = i + 1; j < ggml_graph_n_nodes(g); ++j) {
        if (!computes_nothing(ggml_graph_node(g, j)->op)) return j;
    }
    return -1;
}

const ggml_tensor * other_source(const ggml_tensor * op, const ggml_tensor * prev) {
    return op->src[0] == prev ? op->src[1] : op->src[0];
}

bool eltwise_algorithm(const ggml_tensor * op, dnnl::algorithm * algo);

// whether the memory of a and b overlaps
bool overlaps(const ggml_tensor * a, const ggml_tensor * b) {
    const auto * a0 = static_cast<const char *>(a->data);
    const auto * b0 = static_cast<const char *>(b->data);
    return a0 < b0 + ggml_nbytes(b) && b0 < a0 + ggml_nbytes(a);
}

// the product at graph index i of g and the consumers it fuses
Epilogue product_epilogue(const Context & c, ggml_cgraph * g, int i) {
    ggml_tensor * mm = ggml_graph_node(g, i);
    Epilogue e = Epilogue::none(mm, i);
    if (c.precision != OnednnPrecision::bf16) return e;
    const int64_t N = mm->ne[0];
    int idx[4] = {i, next_computing(g, i), -1, -1};
    if (idx[1] < 0) return e;
    ggml_tensor * add = ggml_graph_node(g, idx[1]);
    const ggml_op with_bias[2] = {GGML_OP_MUL_MAT, GGML_OP_ADD};
    if (!ggml_can_fuse_ext(g, idx, with_bias, 2) || add->src[0] != mm || !is_f32_row(add->src[1], N)) return e;
    e.bias = add->src[1];
    e.out = add;
    e.last = idx[1];
    if ((idx[2] = next_computing(g, idx[1])) < 0) return e;
    ggml_tensor * third = ggml_graph_node(g, idx[2]);
    const ggml_op activated[3] = {GGML_OP_MUL_MAT, GGML_OP_ADD, GGML_OP_UNARY};
    if (dnnl::algorithm algo; eltwise_algorithm(third, &algo) && ggml_can_fuse_ext(g, idx, activated, 3)) {
        e.activation = algo;
        e.out = third;
        e.last = idx[2];
        return e;
    }
    const ggml_op gated[4] = {GGML_OP_MUL_MAT, GGML_OP_ADD, GGML_OP_MUL, GGML_OP_ADD};
    if (!ggml_can_fuse_ext(g, idx, gated, 3) || !is_f32_row(other_source(third, add), N)) return e;
    e.gate = other_source(third, add);
    e.out = third;
    e.last = idx[2];
    if ((idx[3] = next_computing(g, idx[2])) < 0) return e;
    ggml_tensor * fourth = ggml_graph_node(g, idx[3]);
    const ggml_tensor * residual = other_source(fourth, third);
    if (!ggml_can_fuse_ext(g, idx, gated, 4) || residual->type != GGML_TYPE_F32 || !ggml_is_contiguous(residual) ||
        !ggml_are_same_shape(residual, fourth)) {
        return e;
    }
    e.residual = residual;
    e.out = fourth;
    e.last = idx[3];
    return e;
}

Product & product(Context & c, int64_t M, int64_t K, int64_t N, const Epilogue & e) {
    const std::array<int64_t, 4> key{M, K, N, e.code()};
    auto it = c.products.find(key);
    if (it != c.products.end()) return it->second;
    if (c.products.size() >= kMaxShapes) c.products.clear();
    Product p;
    const KernelTypes t = kernel_types(c.precision);
    p.src_f32 = memory::desc({M, K}, dt::f32, tag::ab);
    p.src_kernel = memory::desc({M, K}, t.src, tag::ab);
    p.dst = memory::desc({M, N}, t.dst, tag::ab);
    dnnl::post_ops ops;
    if (e.activation != dnnl::algorithm::undef) ops.append_eltwise(1.0f, e.activation, 0.0f, 0.0f);
    if (e.gate) ops.append_binary(dnnl::algorithm::binary_mul, memory::desc({1, N}, dt::f32, tag::ab));
    if (e.residual) ops.append_binary(dnnl::algorithm::binary_add, memory::desc({M, N}, dt::f32, tag::ab));
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    const auto desc = e.bias ? dnnl::matmul::desc(p.src_kernel, layout(c, K, N), memory::desc({1, N}, dt::f32, tag::ab), p.dst)
                             : dnnl::matmul::desc(p.src_kernel, layout(c, K, N), p.dst);
    dnnl::matmul::primitive_desc pd(desc, attr, c.engine);
    p.matmul = dnnl::matmul(pd);
    if (c.precision == OnednnPrecision::bf16) {
        p.to_bf16 = dnnl::reorder(dnnl::reorder::primitive_desc(c.engine, p.src_f32, c.engine, p.src_kernel));
    }
    return c.products.emplace(key, std::move(p)).first->second;
}

// a memory object for `desc` over one of the context's scratch buffers, grown as needed
memory scratch(Context & c, std::vector<uint8_t> & buffer, const memory::desc & desc) {
    if (buffer.size() < desc.get_size()) buffer.resize(desc.get_size());
    return memory(desc, c.engine, buffer.data());
}

// ggml's [ne0, ne1, ne2, ne3] F32 tensor with byte strides nb as oneDNN dims {ne3, ne2, rows, cols}
// with element strides, where (rows, cols) = (ne1, ne0), or (ne0, ne1) when `transposed`
memory::desc strided_f32(const ggml_tensor * t, bool transposed) {
    const auto e = [&](int d) { return static_cast<memory::dim>(t->nb[d] / sizeof(float)); };
    const int r = transposed ? 0 : 1, k = transposed ? 1 : 0;
    return memory::desc({t->ne[3], t->ne[2], t->ne[r], t->ne[k]}, dt::f32, memory::dims{e(3), e(2), e(r), e(k)});
}

// activation x activation (attention scores and weighted sums): both operands rounded to BF16 per
// call, in whatever layout oneDNN's kernel prefers
void mul_mat_activations(Context & c, ggml_tensor * node) {
    const ggml_tensor * a = node->src[0];  // [K, N, ne2, ne3]
    const ggml_tensor * b = node->src[1];  // [K, M, ne2, ne3]
    const memory::desc src_f32 = strided_f32(b, false), wei_f32 = strided_f32(a, true), dst_f32 = strided_f32(node, false);
    std::vector<int64_t> key;
    for (const ggml_tensor * t : {b, a, static_cast<const ggml_tensor *>(node)}) {
        key.insert(key.end(), t->ne, t->ne + GGML_MAX_DIMS);
        key.insert(key.end(), t->nb, t->nb + GGML_MAX_DIMS);
    }
    auto it = c.activation_products.find(key);
    if (it == c.activation_products.end()) {
        if (c.activation_products.size() >= kMaxShapes) c.activation_products.clear();
        ActivationProduct p;
        memory::desc src({b->ne[3], b->ne[2], b->ne[1], b->ne[0]}, dt::bf16, tag::any);
        memory::desc wei({a->ne[3], a->ne[2], a->ne[0], a->ne[1]}, dt::bf16, tag::any);
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst_f32), c.engine);
        p.matmul = dnnl::matmul(pd);
        p.src_bf16 = pd.src_desc();
        p.wei_bf16 = pd.weights_desc();
        p.src_to_bf16 = dnnl::reorder(dnnl::reorder::primitive_desc(c.engine, src_f32, c.engine, pd.src_desc()));
        p.wei_to_bf16 = dnnl::reorder(dnnl::reorder::primitive_desc(c.engine, wei_f32, c.engine, pd.weights_desc()));
        it = c.activation_products.emplace(std::move(key), std::move(p)).first;
    }
    ActivationProduct & p = it->second;
    memory src(src_f32, c.engine, b->data), wei(wei_f32, c.engine, a->data), dst(dst_f32, c.engine, node->data);
    memory src_bf16 = scratch(c, c.scratch_src, p.src_bf16), wei_bf16 = scratch(c, c.scratch_wei, p.wei_bf16);
    p.src_to_bf16.execute(c.stream, src, src_bf16);
    p.wei_to_bf16.execute(c.stream, wei, wei_bf16);
    p.matmul.execute(c.stream, {{DNNL_ARG_SRC, src_bf16}, {DNNL_ARG_WEIGHTS, wei_bf16}, {DNNL_ARG_DST, dst}});
    c.stream.wait();
}

// An int8 product: the activations quantized row by row into the scratch bytes, oneDNN's integer
// sums written into the F32 result's own slots, then turned into F32 there (core/int8_quantize)
void mul_mat_int8(Context & c, Product & p, const PackedMatrix & packed, const memory & wp, const ggml_tensor * x,
                  ggml_tensor * node, int64_t M, int64_t K, int64_t N) {
    c.scratch_of = nullptr;
    memory src_u8 = scratch(c, c.scratch_src, p.src_kernel);
    c.row_scale.resize(static_cast<size_t>(M));
    c.row_zero.resize(static_cast<size_t>(M));
    auto * q = static_cast<uint8_t *>(src_u8.get_data_handle());
    const auto * xs = static_cast<const float *>(x->data);
#pragma omp parallel for num_threads(c.n_threads) schedule(static)
    for (int64_t m = 0; m < M; ++m) {
        quantize_activation_rows(xs, K, K, m, m + 1, q, c.row_scale.data(), c.row_zero.data());
    }
    memory dst(p.dst, c.engine, node->data);
    p.matmul.execute(c.stream, {{DNNL_ARG_SRC, src_u8}, {DNNL_ARG_WEIGHTS, wp}, {DNNL_ARG_DST, dst}});
    c.stream.wait();
#pragma omp parallel for num_threads(c.n_threads) schedule(static)
    for (int64_t m = 0; m < M; ++m) {
        dequantize_products(node->data, N, m, m + 1, c.row_scale.data(), c.row_zero.data(), packed.int8_scale.data(),
                            packed.int8_sum.data());
    }
}

// The product at graph index i and the consumers it fuses (product_epilogue); returns the index of
// the last node it computed
int mul_mat(Context & c, ggml_cgraph * g, int i) {
    ggml_tensor * node = ggml_graph_node(g, i);
    if (!is_weight(node->src[0])) {
        mul_mat_activations(c, node);
        c.scratch_of = nullptr;
        return i;
    }
    const ggml_tensor * w = node->src[0];
    const ggml_tensor * x = node->src[1];
    const int64_t K = w->ne[0], N = w->ne[1], M = ggml_nrows(x);
    const auto & [packed, wp] = packed_weight(c, w);
    Epilogue e = product_epilogue(c, g, i);
    if (overlaps(e.out, x)) e = Epilogue::none(node, i);  // the allocator gave the last node x's memory
    Product & p = product(c, M, K, N, e);
    if (c.int8()) {
        mul_mat_int8(c, p, *packed, wp, x, node, M, K, N);
        return i;
    }
    memory src(p.src_f32, c.engine, x->data);
    memory dst(p.dst, c.engine, e.out->data);
    std::unordered_map<int, memory> args{{DNNL_ARG_WEIGHTS, wp}, {DNNL_ARG_DST, dst}};
    if (e.bias) args[DNNL_ARG_BIAS] = memory(memory::desc({1, N}, dt::f32, tag::ab), c.engine, e.bias->data);
    int post_op = e.activation != dnnl::algorithm::undef ? 1 : 0;
    if (e.gate) {
        args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(post_op++) | DNNL_ARG_SRC_1] =
            memory(memory::desc({1, N}, dt::f32, tag::ab), c.engine, e.gate->data);
    }
    if (e.residual) {
        args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(post_op++) | DNNL_ARG_SRC_1] =
            memory(memory::desc({M, N}, dt::f32, tag::ab), c.engine, e.residual->data);
    }
    if (c.f32()) {
        args[DNNL_ARG_SRC] = src;
    } else {
        // the activations in BF16 once for the products that read them one after another (an
        // attention's q, k and v): the tensor keeps its values while products still read it
        memory src_bf16 = scratch(c, c.scratch_src, p.src_kernel);
        if (c.scratch_of != x) p.to_bf16.execute(c.stream, src, src_bf16);
        c.scratch_of = x;
        args[DNNL_ARG_SRC] = src_bf16;
    }
    p.matmul.execute(c.stream, args);
    c.stream.wait();
    return e.last;
}

// The oneDNN eltwise algorithm computing ggml unary op `op` (GELU in its tanh or erf form, tanh,
// softplus), or none. ggml's CPU kernels compute GELU from an F16 table and tanh and softplus one
// scalar libm call per element; oneDNN's kernels are vectorised F32. Only BF16 and int8 sessions give
// them to this backend: their products already round far more than either.
bool eltwise_algorithm(const ggml_tensor * op, dnnl::algorithm * algo) {
    if (op->op != GGML_OP_UNARY) return false;
    switch (ggml_get_unary_op(op)) {
        case GGML_UNARY_OP_GELU: *algo = dnnl::algorithm::eltwise_gelu_tanh; return true;
        case GGML_UNARY_OP_GELU_ERF: *algo = dnnl::algorithm::eltwise_gelu_erf; return true;
        case GGML_UNARY_OP_TANH: *algo = dnnl::algorithm::eltwise_tanh; return true;
        case GGML_UNARY_OP_SOFTPLUS: *algo = dnnl::algorithm::eltwise_soft_relu; return true;  // log(1 + e^x)
        default: return false;
    }
}

void eltwise(Context & c, ggml_tensor * node, dnnl::algorithm algo) {
    const int64_t n = ggml_nelements(node);
    const std::array<int64_t, 2> key{n, static_cast<int64_t>(algo)};
    auto it = c.activations.find(key);
    if (it == c.activations.end()) {
        if (c.activations.size() >= kMaxShapes) c.activations.clear();
        Activation a;
        a.desc = memory::desc({n}, dt::f32, tag::a);
        a.op = dnnl::eltwise_forward(dnnl::eltwise_forward::primitive_desc(
            dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_inference, algo, a.desc, 0.0f, 0.0f), c.engine));
        it = c.activations.emplace(key, std::move(a)).first;
    }
    memory src(it->second.desc, c.engine, node->src[0]->data), dst(it->second.desc, c.engine, node->data);
    it->second.op.execute(c.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
    c.stream.wait();
}

// The NORM at graph index i, with the MUL and ADD of rows that follow it when they read its output
// alone (LayerNorm's weight and bias, adaLN's scale and shift) in the same pass; returns the index of
// the last node computed
int norm(Context & c, ggml_cgraph * g, int i) {
    ggml_tensor * node = ggml_graph_node(g, i);
    float eps = 0.0f;
    std::memcpy(&eps, node->op_params, sizeof eps);
    const int64_t width = node->ne[0];
    const ggml_tensor *scale = nullptr, *shift = nullptr;
    ggml_tensor * out = node;
    int last = i;
    int idx[3] = {i, next_computing(g, i), -1};
    const ggml_op scaled[3] = {GGML_OP_NORM, GGML_OP_MUL, GGML_OP_ADD};
    const ggml_op shifted[2] = {GGML_OP_NORM, GGML_OP_ADD};
    if (idx[1] >= 0) {
        ggml_tensor * next = ggml_graph_node(g, idx[1]);
        const ggml_tensor * row = other_source(next, node);
        if (ggml_can_fuse_ext(g, idx, scaled, 2) && next->src[0] == node && is_f32_row(row, width)) {
            scale = row;
            out = next;
            last = idx[1];
            if ((idx[2] = next_computing(g, idx[1])) >= 0) {
                ggml_tensor * add = ggml_graph_node(g, idx[2]);
                if (ggml_can_fuse_ext(g, idx, scaled, 3) && add->src[0] == next && is_f32_row(add->src[1], width)) {
                    shift = add->src[1];
                    out = add;
                    last = idx[2];
                }
            }
        } else if (ggml_can_fuse_ext(g, idx, shifted, 2) && next->src[0] == node && is_f32_row(row, width)) {
            shift = row;
            out = next;
            last = idx[1];
        }
    }
    compute_row_norm(node->src[0], eps, scale, shift, out, c.n_threads);
    return last;
}

// ---- backend interface ----

const char * backend_name(ggml_backend_t) { return "oneDNN"; }

void backend_free(ggml_backend_t backend) {
    delete static_cast<Context *>(backend->context);
    delete backend;
}

ggml_status graph_compute(ggml_backend_t backend, ggml_cgraph * graph) {
    Context & c = *static_cast<Context *>(backend->context);
    // oneDNN's OpenMP runtime takes the calling thread's team size (ggml names its own per region)
    omp_set_num_threads(c.n_threads);
    c.scratch_of = nullptr;
    try {
        for (int i = 0; i < ggml_graph_n_nodes(graph); ++i) {
            ggml_tensor * node = ggml_graph_node(graph, i);
            if ((node->flags & GGML_TENSOR_FLAG_COMPUTE) == 0 || computes_nothing(node->op)) continue;
            if (node->op == GGML_OP_MUL_MAT) {
                i = mul_mat(c, graph, i);
            } else if (node->op == GGML_OP_NORM) {
                i = norm(c, graph, i);
            } else if (node->op == GGML_OP_ADD || node->op == GGML_OP_MUL) {
                compute_row_binary(node, c.n_threads);
            } else if (node->op == GGML_OP_FLASH_ATTN_EXT) {
                c.attention->compute(node, c.n_threads);
            } else if (OnednnConvolutions::supports(node)) {
                c.convolutions->compute(node, c.stream);
            } else if (dnnl::algorithm algo; eltwise_algorithm(node, &algo)) {
                eltwise(c, node, algo);
            } else {
                return GGML_STATUS_FAILED;
            }
        }
    } catch (const std::bad_alloc &) {
        c.last_error = "out of memory";
        return GGML_STATUS_ALLOC_FAILED;
    } catch (const std::exception & e) {  // dnnl::error, or ours: nothing may cross ggml's C code
        c.last_error = e.what();
        return GGML_STATUS_FAILED;
    }
    return GGML_STATUS_SUCCESS;
}

ggml_guid_t backend_guid() {
    // a fixed identity for this backend kind (random bytes, chosen once)
    static ggml_guid guid = {0x6d, 0x63, 0x70, 0x6d, 0x6f, 0x2d, 0x64, 0x6e, 0x6e, 0x6c, 0x2d, 0x62, 0x66, 0x31, 0x36, 0x01};
    return &guid;
}

// ---- device interface ----

const char * device_name(ggml_backend_dev_t) { return "oneDNN"; }
const char * device_description(ggml_backend_dev_t) { return "oneDNN matrix products (CPU)"; }
void device_memory(ggml_backend_dev_t, size_t * free, size_t * total) { *free = *total = 0; }
enum ggml_backend_dev_type device_type(ggml_backend_dev_t) { return GGML_BACKEND_DEVICE_TYPE_ACCEL; }

void device_props(ggml_backend_dev_t dev, ggml_backend_dev_props * props) {
    props->name = device_name(dev);
    props->description = device_description(dev);
    props->type = device_type(dev);
    device_memory(dev, &props->memory_free, &props->memory_total);
    props->caps = {};  // synchronous, no buffers or events of its own
}

ggml_backend_t device_init(ggml_backend_dev_t, const char *) { return nullptr; }  // made by onednn_matmul_backend_new only
ggml_backend_buffer_type_t device_buffer_type(ggml_backend_dev_t) { return ggml_backend_cpu_buffer_type(); }
bool device_supports_buft(ggml_backend_dev_t, ggml_backend_buffer_type_t buft) { return ggml_backend_buft_is_host(buft); }

// Products with a model matrix run here at any row count: its packed copy replaced the original in
// memory, which ggml's kernels would fault back in. Another weight's short products stay on ggml's F16,
// except in int8 sessions, whose products with weights are all int8 (the same arithmetic whatever
// the row count: a result does not change precision with the length of its input).
int64_t min_rows(const Context & c, const ggml_tensor * w) {
    return of_model(c, w) || c.int8() ? 1 : kMinRows;
}

// element strides of an F32 tensor (oneDNN's descriptors count elements)
bool f32_strided(const ggml_tensor * t) {
    if (t->type != GGML_TYPE_F32) return false;
    for (int d = 0; d < GGML_MAX_DIMS; ++d) {
        if (t->nb[d] % sizeof(float) != 0) return false;
    }
    return true;
}

bool device_supports_op(ggml_backend_dev_t dev, const ggml_tensor * op) {
    const Context & c = *static_cast<const Context *>(dev->context);
    if (computes_nothing(op->op)) return true;
    if (OnednnConvolutions::supports(op)) return true;  // every precision: conv1d nodes are F32
    if (c.f32() && (op->op != GGML_OP_MUL_MAT || !is_weight(op->src[0]))) return false;
    // int8 sessions: the products with weights, the fused attention (in F32) and the elementwise
    // functions; an attention's separate products stay on ggml
    if (c.int8() && op->op == GGML_OP_MUL_MAT && !is_weight(op->src[0])) return false;
    if (op->op == GGML_OP_FLASH_ATTN_EXT) return OnednnAttention::supports(op);
    if (dnnl::algorithm algo; eltwise_algorithm(op, &algo)) {
        return op->type == GGML_TYPE_F32 && op->src[0]->type == GGML_TYPE_F32 && ggml_is_contiguous(op) &&
               ggml_is_contiguous(op->src[0]);
    }
    if (onednn_row_op_supported(op)) return true;
    if (op->op != GGML_OP_MUL_MAT) return false;
    const ggml_tensor * w = op->src[0];
    const ggml_tensor * x = op->src[1];
    if (op->type != GGML_TYPE_F32 || !ggml_is_contiguous(op) || x->type != GGML_TYPE_F32) return false;
    if (is_weight(w)) {
        return ggml_backend_buffer_is_host(storage_of(w)->buffer) &&
               (w->type == GGML_TYPE_F32 || w->type == GGML_TYPE_F16 || w->type == GGML_TYPE_BF16) &&
               ggml_is_contiguous(w) && w->ne[2] == 1 && w->ne[3] == 1 && ggml_is_contiguous(x) &&
               ggml_nrows(x) >= min_rows(c, w) && (!c.int8() || w->ne[0] <= kInt8MaxRowLength);
    }
    // activation x activation (attention): same batch dims (no broadcast), F32 in any element strides,
    // and big enough products (scores of >= 32 queries and keys)
    return f32_strided(w) && f32_strided(x) && w->ne[2] == x->ne[2] && w->ne[3] == x->ne[3] &&
           x->ne[1] >= kMinRows && w->ne[1] >= kMinRows && w->ne[0] >= 16;
}

const char * reg_name(ggml_backend_reg_t) { return "oneDNN"; }
size_t reg_device_count(ggml_backend_reg_t) { return 1; }
ggml_backend_dev_t reg_device(ggml_backend_reg_t reg, size_t) { return static_cast<ggml_backend_dev_t>(reg->context); }
void * reg_proc_address(ggml_backend_reg_t, const char *) { return nullptr; }

// oneDNN's name for the kernel of a BF16 product on this CPU: "brg:avx512_core_amx_bf16" (AMX),
// "brg:avx512_core_bf16" (AVX-512 BF16), "brg:avx512_core" (BF16 emulated in F32 FMAs), "ref:...";
// or of an int8 (u8 x s8) product: "gemm:jit" (AVX2 or AVX-512 byte products), "brg:..._vnni" or
// "brg:avx512_core_amx" (VNNI, AMX), "ref:..." (a CPU without AVX2)
std::string product_kernel(const dnnl::engine & engine, OnednnPrecision precision) {
    const KernelTypes t = kernel_types(precision);
    try {
        memory::desc src({64, 64}, t.src, tag::ab), wei({64, 64}, t.wei, tag::any), dst({64, 64}, t.dst, tag::ab);
        return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), engine).impl_info_str();
    } catch (const dnnl::error & e) {
        return std::string("ref (") + e.what() + ")";
    }
}

}  // namespace

bool onednn_bf16_native() {
    const std::string impl = product_kernel(dnnl::engine(dnnl::engine::kind::cpu, 0), OnednnPrecision::bf16);
    return impl.find("amx") != std::string::npos || impl.find("bf16") != std::string::npos;
}

ggml_backend_t onednn_matmul_backend_new(int n_threads, const GgufWeights * model, OnednnPrecision precision) {
    auto c = std::make_unique<Context>();
    c->model = model;
    c->precision = precision;
    // oneDNN falls back to its reference code ("ref:...", orders of magnitude slower) on CPUs without
    // AVX-512 (BF16) or AVX2 (int8): refuse those at once rather than run the encoders slower than the f32 path
    if (precision != OnednnPrecision::f32) {
        const std::string impl = product_kernel(c->engine, precision);
        if (impl.compare(0, 3, "ref") == 0) {
            const bool int8 = precision == OnednnPrecision::int8;
            fail(Status::unsupported, std::string("compute_type ") + (int8 ? "int8" : "bf16") + ": oneDNN has no fast " +
                                          (int8 ? "int8" : "BF16") + " matrix product for this CPU (it needs " +
                                          (int8 ? "AVX2" : "AVX-512") + "; oneDNN offers '" + impl +
                                          "'): use compute_type f32 (MINICPMO_COMPUTE=f32)");
        }
    }
    c->n_threads = n_threads > 0 ? n_threads : 1;
    c->attention = std::make_unique<OnednnAttention>(c->engine, precision == OnednnPrecision::bf16);
    c->convolutions = std::make_unique<OnednnConvolutions>(c->engine);
    // device and registry entries of this instance only: not in ggml's process-wide registry
    c->reg.api_version = GGML_BACKEND_API_VERSION;
    c->reg.iface = {reg_name, reg_device_count, reg_device, reg_proc_address};
    c->reg.context = &c->device;
    ggml_backend_device_i di{};
    di.get_name = device_name;
    di.get_description = device_description;
    di.get_memory = device_memory;
    di.get_type = device_type;
    di.get_props = device_props;
    di.init_backend = device_init;
    di.get_buffer_type = device_buffer_type;
    di.supports_op = device_supports_op;
    di.supports_buft = device_supports_buft;
    c->device.iface = di;
    c->device.reg = &c->reg;
    c->device.context = c.get();
    ggml_backend_i bi{};
    bi.get_name = backend_name;
    bi.free = backend_free;
    bi.graph_compute = graph_compute;
    Context * raw = c.release();
    return new ggml_backend{backend_guid(), bi, &raw->device, raw};
}

bool onednn_takes_attention(const ggml_tensor * op) { return OnednnAttention::supports(op); }

void onednn_matmul_set_n_threads(ggml_backend_t backend, int n_threads) {
    static_cast<Context *>(backend->context)->n_threads = n_threads > 0 ? n_threads : 1;
}

void onednn_matmul_prepare(ggml_backend_t backend, ggml_cgraph * graph) {
    Context & c = *static_cast<Context *>(backend->context);
    omp_set_num_threads(c.n_threads);  // the packing's F16 conversion runs on the backend's threads
    for (int i = 0; i < ggml_graph_n_nodes(graph); ++i) {
        ggml_tensor * node = ggml_graph_node(graph, i);
        if (node->op != GGML_OP_MUL_MAT || !is_weight(node->src[0]) || !device_supports_op(&c.device, node)) continue;
        const ggml_tensor * w = node->src[0];
        packed_weight(c, w);
        // the kernel the product will run (its epilogue read from the graph, as graph_compute reads it)
        product(c, ggml_nrows(node->src[1]), w->ne[0], w->ne[1], product_epilogue(c, graph, i));
    }
}

std::string onednn_matmul_take_error(ggml_backend_t backend) {
    std::string e;
    e.swap(static_cast<Context *>(backend->context)->last_error);
    return e;
}

#endif

}  // namespace minicpmo
