#include "core/compute_backend.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/error.h"
#include "core/llama_log.h"
#include "core/onednn_matmul.h"

namespace minicpmo {

namespace {

ggml_backend_dev_t gpu_device() {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
    return dev ? dev : ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_IGPU);
}

ggml_backend_dev_t cpu_device() {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) fail(Status::internal, "ggml has no CPU backend");
    return dev;
}

int resolve_threads(int n_threads) {
    if (n_threads > 0) return n_threads;
    const unsigned hw = std::thread::hardware_concurrency();
    return hw > 0 ? static_cast<int>(hw) : 4;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

}  // namespace

bool is_automatic_device(const std::string & name) {
    const std::string want = lower(name);
    return want.empty() || want == "auto";
}

ComputeDevice resolve_device(const std::string & name) {
    ensure_llama_initialized();
    std::string want = lower(name);
    if (is_automatic_device(want)) {
        const char * env = std::getenv("MINICPMO_DEVICE");
        if (!env || is_automatic_device(env)) return gpu_device();
        want = lower(env);
    }
    if (want == "cpu") return nullptr;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        if (lower(ggml_backend_dev_name(dev)) != want) continue;
        // the CPU device by its ggml name, or an accelerator
        return ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU ? nullptr : dev;
    }
    std::string known;
    for (const std::string & n : device_names()) known += (known.empty() ? "" : ", ") + n;
    fail(Status::invalid_argument, "unknown device '" + name + "': this build has auto, " + known);
}

std::vector<std::string> device_names() {
    ensure_llama_initialized();
    std::vector<std::string> out{"cpu"};
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        const auto type = ggml_backend_dev_type(dev);
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
            out.emplace_back(ggml_backend_dev_name(dev));
        }
    }
    return out;
}

std::string device_name(ComputeDevice device) { return device ? ggml_backend_dev_name(device) : "CPU"; }

std::vector<std::string> cpu_features() {
    ensure_llama_initialized();
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu_device());
    auto get = reinterpret_cast<ggml_backend_get_features_t>(ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"));
    std::vector<std::string> out;
    if (!get) return out;
    for (const ggml_backend_feature * f = get(reg); f && f->name; ++f) {
        // the flags set to "1" (instruction sets, and build facts such as OPENMP); others carry numbers
        if (std::string(f->value) == "1") out.emplace_back(f->name);
    }
    return out;
}

bool computes_nothing(ggml_op op) {
    return op == GGML_OP_NONE || op == GGML_OP_VIEW || op == GGML_OP_RESHAPE || op == GGML_OP_PERMUTE ||
           op == GGML_OP_TRANSPOSE;
}

bool is_weight(const ggml_tensor * t) {
    const ggml_backend_buffer_t buffer = storage_of(t)->buffer;
    return buffer && ggml_backend_buffer_get_usage(buffer) == GGML_BACKEND_BUFFER_USAGE_WEIGHTS;
}

ggml_backend_buffer_type_t weight_buffer_type(ComputeDevice device) {
    ensure_llama_initialized();
    return ggml_backend_dev_buffer_type(device ? device : cpu_device());
}

ComputeType resolve_compute_type(const std::string & name) {
    std::string want = lower(name);
    std::string origin = "compute_type '" + name + "'";
    if (want.empty() || want == "auto") {
        const char * env = std::getenv("MINICPMO_COMPUTE");
        if (!env || !*env || lower(env) == "auto") return onednn_bf16_native() ? ComputeType::bf16 : ComputeType::f32;
        want = lower(env);
        origin = std::string("MINICPMO_COMPUTE='") + env + "'";
    }
    if (want == "f32") return ComputeType::f32;
    if (want == "bf16") return ComputeType::bf16;
    if (want == "int8") return ComputeType::int8;
    fail(Status::invalid_argument, origin + ": expected auto, f32, bf16 or int8");
}

const char * compute_type_name(ComputeType compute) {
    switch (compute) {
        case ComputeType::bf16: return "bf16";
        case ComputeType::int8: return "int8";
        case ComputeType::f32: break;
    }
    return "f32";
}

ComputeBackend::ComputeBackend(ComputeDevice device, int n_threads, ComputeType compute, const GgufWeights * model,
                               bool f32_products)
    : device_(device),
      precision_(f32_products                    ? OnednnPrecision::f32
                 : compute == ComputeType::int8 ? OnednnPrecision::int8
                                                 : OnednnPrecision::bf16) {
    ensure_llama_initialized();
    // before any backend exists, so that a refusal leaks nothing
    if (!device && compute != ComputeType::f32) {
        matmul_ = onednn_matmul_backend_new(resolve_threads(n_threads), model, precision_);
    }
    if (device) {
        gpu_ = ggml_backend_dev_init(device, nullptr);
        if (!gpu_) fail(Status::internal, std::string("cannot start the backend of device ") + ggml_backend_dev_name(device));
    }
    cpu_ = ggml_backend_dev_init(cpu_device(), nullptr);
    if (!cpu_) {
        if (gpu_) ggml_backend_free(gpu_);
        if (matmul_) ggml_backend_free(matmul_);
        fail(Status::internal, "cannot start the ggml CPU backend");
    }
    set_n_threads(n_threads);
}

ComputeBackend::~ComputeBackend() {
    if (gpu_) ggml_backend_free(gpu_);
    if (matmul_) ggml_backend_free(matmul_);
    if (cpu_) ggml_backend_free(cpu_);
}

void ComputeBackend::set_n_threads(int n_threads) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(cpu_));
    auto set = reinterpret_cast<ggml_backend_set_n_threads_t>(
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads"));
    if (set) set(cpu_, resolve_threads(n_threads));
    if (matmul_) onednn_matmul_set_n_threads(matmul_, resolve_threads(n_threads));
}

void ComputeBackend::prepare_products(ggml_cgraph * graph) {
    if (matmul_) onednn_matmul_prepare(matmul_, graph);
}

std::string ComputeBackend::take_products_error() const {
    return matmul_ ? onednn_matmul_take_error(matmul_) : std::string();
}

std::vector<ggml_backend_t> ComputeBackend::backends() const {
    std::vector<ggml_backend_t> out;
    if (gpu_) out.push_back(gpu_);
    if (matmul_) out.push_back(matmul_);
    out.push_back(cpu_);
    return out;
}

GraphContext::GraphContext(std::vector<uint8_t> & meta, size_t max_nodes, const char * what) : max_nodes_(max_nodes) {
    ggml_init_params ip{};
    ip.mem_size = meta.size();
    ip.mem_buffer = meta.data();
    ip.no_alloc = true;  // tensor data lives in the scheduler's buffers
    ctx_ = ggml_init(ip);
    if (!ctx_) fail(Status::internal, std::string("cannot create the ") + what + " graph context");
}

GraphContext::~GraphContext() { ggml_free(ctx_); }

ggml_cgraph * GraphContext::new_graph() const { return ggml_new_graph_custom(ctx_, max_nodes_, false); }

GraphRunner::GraphRunner(ComputeBackend & backend, size_t max_nodes, size_t tensors_per_node)
    : backend_(backend),
      max_nodes_(max_nodes),
      meta_(ggml_tensor_overhead() * max_nodes * tensors_per_node + ggml_graph_overhead_custom(max_nodes, false)) {
    std::vector<ggml_backend_t> list = backend.backends();
    sched_ = ggml_backend_sched_new(list.data(), nullptr, static_cast<int>(list.size()), max_nodes, false, true);
    if (!sched_) fail(Status::internal, "cannot create a ggml scheduler");
}

GraphRunner::~GraphRunner() {
    if (sched_) ggml_backend_sched_free(sched_);
}

void GraphRunner::allocate(ggml_cgraph * graph) {
    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, graph)) {
        fail(Status::internal, "out of memory allocating a compute graph");
    }
}

void GraphRunner::compute(ggml_cgraph * graph) {
    const ggml_status st = ggml_backend_sched_graph_compute(sched_, graph);
    if (st != GGML_STATUS_SUCCESS) {
        const std::string why = backend_.take_products_error();
        fail(Status::internal, std::string("ggml graph compute failed: ") + ggml_status_to_string(st) +
                                   (why.empty() ? "" : " (oneDNN products: " + why + ")"));
    }
    GraphPlacement g;
    g.graphs = 1;
    g.splits = ggml_backend_sched_get_n_splits(sched_);
    for (int i = 0; i < ggml_graph_n_nodes(graph); ++i) {
        // views compute nothing (the scheduler may file one under the CPU without a split)
        ggml_tensor * node = ggml_graph_node(graph, i);
        if (computes_nothing(node->op)) continue;
        if (ggml_backend_t b = ggml_backend_sched_get_tensor_backend(sched_, node)) {
            (backend_.is_cpu(b) ? g.cpu_nodes : g.device_nodes) += 1;
            if (backend_.is_ggml_weight_product(b, node)) g.ggml_weight_products += 1;
        }
    }
    placement_.add(g);
}

}  // namespace minicpmo
