// The ggml backends one component computes on: the CPU backend (always, with its thread count) and,
// when one was chosen, an accelerator device (GPU, integrated GPU, Vulkan/Metal/CUDA) whose memory
// holds the weights. Each session owns its own instance, so thread counts and scratch buffers are
// never shared between sessions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/conv1d_node.h"
#include "core/onednn_matmul.h"
#include "ggml-backend.h"

namespace minicpmo {

class GgufWeights;

// The accelerator a component computes on; nullptr means the CPU.
using ComputeDevice = ggml_backend_dev_t;

// A user's device choice: "" or "auto" = the device named by the environment variable
// MINICPMO_DEVICE when set, else the first GPU ggml lists (the CPU when there is none); "cpu"; or a
// ggml device name as `device_names()` lists it ("Vulkan0", "CUDA0", "MTL0", ...; any case). Throws
// invalid_argument naming the choices for an unknown name.
ComputeDevice resolve_device(const std::string & name);
// Whether `name` asks for the automatic choice ("" or "auto", any case).
bool is_automatic_device(const std::string & name);
// The names of the devices this build can compute on, the CPU first.
std::vector<std::string> device_names();
// The name shown to users: the ggml device name, or "CPU".
std::string device_name(ComputeDevice device);
// The features ggml's CPU kernels in this process were compiled with ("AVX2", "AVX512_BF16",
// "AMX_INT8", ..., and build facts such as "OPENMP"): a portable build's fixed set, or, with
// MINICPMO_CPU_VARIANTS, that of the CPU module ggml chose for this machine at load.
std::vector<std::string> cpu_features();

// Ops that only re-describe their source's memory (views, reshapes, permutes): no backend computes them.
bool computes_nothing(ggml_op op);

// The tensor whose memory `t` describes: its source when it is a view, else t. The scheduler asks
// backends about a graph's nodes before views get their buffers, so a view's storage is its source's.
inline const ggml_tensor * storage_of(const ggml_tensor * t) { return t->view_src ? t->view_src : t; }

// A tensor in a weights buffer, or a view of one (a convolution's kernel reshaped to a matrix).
bool is_weight(const ggml_tensor * t);

// Where weights are stored: the device's buffer type, or the CPU's.
ggml_backend_buffer_type_t weight_buffer_type(ComputeDevice device);

// How a session's CPU components compute their matrix products: f32 (ggml's kernels on the stored
// F16/F32 weights, the exact path the tests compare), bf16 (oneDNN in BF16, core/onednn_matmul) or
// int8 (oneDNN's byte products, core/int8_quantize: about twice the F32 rate on AVX2 CPUs, which have
// no BF16 instructions, at about ten times BF16's rounding error; only asked for, never automatic).
// bf16 and int8 exist only in builds with MINICPMO_ONEDNN. Only the encoders and the flow take them
// (GEMM-bound, smooth outputs); the TTS decoder (memory-bound one-row products whose logits pick
// tokens) and HiFT (its F0 is integrated into a phase, which turns small errors into sample-level
// waveform changes) stay F32.
enum class ComputeType { f32, bf16, int8 };
// A user's choice: "" or "auto" = the environment variable MINICPMO_COMPUTE when set, else bf16
// where oneDNN has native BF16 kernels for this CPU (AMX, AVX-512 BF16: onednn_bf16_native) and f32
// elsewhere; "f32"; "bf16"; "int8" (any case). Throws invalid_argument naming the choices for another value.
ComputeType resolve_compute_type(const std::string & name);
// "f32", "bf16" or "int8"
const char * compute_type_name(ComputeType compute);

class ComputeBackend {
public:
    // compute bf16 or int8 adds the oneDNN products on the CPU (a device computes as before); throws
    // unsupported when this build or CPU has none. `model`: the component's weights, whose matrices
    // the oneDNN products pack once for every session (may be null; must outlive this).
    // `f32_products`: oneDNN's products stay F32 whatever the compute type (HiFT: its convolutions run
    // faster in oneDNN's F32 kernels than in ggml's where AVX-512 is present, and stay F32).
    ComputeBackend(ComputeDevice device, int n_threads, ComputeType compute = ComputeType::f32,
                   const GgufWeights * model = nullptr, bool f32_products = false);
    ~ComputeBackend();
    ComputeBackend(const ComputeBackend &) = delete;
    ComputeBackend & operator=(const ComputeBackend &) = delete;

    void set_n_threads(int n_threads);
    ComputeDevice device() const { return device_; }
    // whether the oneDNN backend takes the encoders' fused attention (FLASH_ATTN_EXT on F32 operands)
    // and their GELU, tanh and softplus (compute bf16 or int8 on the CPU): graphs then build those ops
    bool onednn_attention() const { return matmul_ != nullptr && precision_ != OnednnPrecision::f32; }
    // The element type of an encoder's key / value cache read by the fused attention: BF16 where that
    // attention rounds keys and values to BF16 anyway (compute bf16: rounded once, read without
    // conversion), else F32 for an F32 model (exact) and F16 where the weights are already rounded to
    // F16 or coarser (half the memory)
    ggml_type attention_cache_type(bool weights_f32) const {
        if (matmul_ != nullptr && precision_ == OnednnPrecision::bf16) return GGML_TYPE_BF16;
        return weights_f32 ? GGML_TYPE_F32 : GGML_TYPE_F16;
    }
    // whether the oneDNN backend is there (compute bf16 or int8 on the CPU): graphs may then use the
    // nodes only it computes fast (core/conv1d_node)
    bool onednn_products() const { return matmul_ != nullptr; }
    // packs the weights of the graph's oneDNN products and makes their kernels, computing nothing
    // (nothing to do on a device or at compute f32): a graph of the same shapes then starts at full speed
    void prepare_products(ggml_cgraph * graph);
    // why oneDNN's products failed in the last graph ("" when they did not)
    std::string take_products_error() const;
    // the CPU backend or the CPU's oneDNN matrix products
    bool is_cpu(ggml_backend_t backend) const { return backend == cpu_ || (matmul_ && backend == matmul_); }
    // whether a graph node computed on `backend` is a product with a weight (or a conv1d node) that
    // oneDNN's products, present in this session, left to ggml's CPU kernels
    bool is_ggml_weight_product(ggml_backend_t backend, const ggml_tensor * node) const {
        return matmul_ && backend == cpu_ &&
               ((node->op == GGML_OP_MUL_MAT && is_weight(node->src[0])) || conv1d_node_shape(node));
    }
    // Backends in scheduler priority order (the device first when there is one, then the oneDNN matrix
    // products of a CPU backend in compute bf16 or int8, CPU last).
    std::vector<ggml_backend_t> backends() const;

private:
    ComputeDevice device_ = nullptr;
    ggml_backend_t gpu_ = nullptr;
    ggml_backend_t cpu_ = nullptr;
    ggml_backend_t matmul_ = nullptr;  // core/onednn_matmul, CPU only, compute bf16 or int8
    OnednnPrecision precision_ = OnednnPrecision::bf16;  // what matmul_ computes in
};

// Where the nodes of a GraphRunner's graphs ran, summed over the graphs it computed: a graph wholly on
// the device is one split with no CPU node.
struct GraphPlacement {
    int64_t graphs = 0;       // graphs computed
    int64_t splits = 0;       // scheduler splits, summed over them
    int64_t device_nodes = 0; // nodes computed on the device
    int64_t cpu_nodes = 0;    // nodes computed on the CPU (with a device: ops it cannot run)
    // products with a weight matrix left to ggml's CPU kernels in a session whose products run on
    // oneDNN (compute bf16 or int8, and HiFT's F32 products): each one a product not sped up
    int64_t ggml_weight_products = 0;
    void add(const GraphPlacement & o) {
        graphs += o.graphs; splits += o.splits; device_nodes += o.device_nodes; cpu_nodes += o.cpu_nodes;
        ggml_weight_products += o.ggml_weight_products;
    }
};

// A no_alloc ggml context holding one graph's tensor and graph metadata, in memory its GraphRunner
// owns and reuses for every graph; freed when it goes out of scope. One at a time per runner.
class GraphContext {
public:
    ~GraphContext();
    GraphContext(const GraphContext &) = delete;
    GraphContext & operator=(const GraphContext &) = delete;

    ggml_context * get() const { return ctx_; }
    // A graph with room for the runner's max_nodes.
    ggml_cgraph * new_graph() const;

private:
    friend class GraphRunner;
    GraphContext(std::vector<uint8_t> & meta, size_t max_nodes, const char * what);
    ggml_context * ctx_ = nullptr;
    size_t max_nodes_;
};

// A ggml scheduler over a ComputeBackend's backends, with graph-size headroom for one encoder, and
// the metadata memory of its graphs (`tensors_per_node` tensors per graph node: leaves and views
// beyond the nodes).
class GraphRunner {
public:
    GraphRunner(ComputeBackend & backend, size_t max_nodes, size_t tensors_per_node = 1);
    ~GraphRunner();
    GraphRunner(const GraphRunner &) = delete;
    GraphRunner & operator=(const GraphRunner &) = delete;

    size_t max_nodes() const { return max_nodes_; }
    // The context for the next graph; `what` names the component in the error when ggml refuses.
    GraphContext new_context(const char * what) { return GraphContext(meta_, max_nodes_, what); }
    // Allocates the graph's tensors (reusing the scheduler's buffers when they are big enough).
    void allocate(ggml_cgraph * graph);
    void compute(ggml_cgraph * graph);
    // Where the nodes of every graph computed so far ran (summed).
    const GraphPlacement & placement() const { return placement_; }

private:
    const ComputeBackend & backend_;
    ggml_backend_sched_t sched_ = nullptr;
    GraphPlacement placement_;
    size_t max_nodes_;
    std::vector<uint8_t> meta_;
};

}  // namespace minicpmo
