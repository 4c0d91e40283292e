#include "core/compute_backend.h"

#include <string>
#include <thread>

#include "core/error.h"
#include "core/llama_log.h"

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

}  // namespace

ggml_backend_buffer_type_t weight_buffer_type(bool use_gpu) {
    ensure_llama_initialized();
    ggml_backend_dev_t dev = use_gpu ? gpu_device() : nullptr;
    return ggml_backend_dev_buffer_type(dev ? dev : cpu_device());
}

ComputeBackend::ComputeBackend(bool use_gpu, int n_threads) {
    ensure_llama_initialized();
    if (use_gpu) {
        if (ggml_backend_dev_t dev = gpu_device()) {
            gpu_ = ggml_backend_dev_init(dev, nullptr);
            if (!gpu_) fail(Status::internal, std::string("cannot start GPU backend ") + ggml_backend_dev_name(dev));
        }
    }
    cpu_ = ggml_backend_dev_init(cpu_device(), nullptr);
    if (!cpu_) {
        if (gpu_) ggml_backend_free(gpu_);
        fail(Status::internal, "cannot start the ggml CPU backend");
    }
    set_n_threads(n_threads);
}

ComputeBackend::~ComputeBackend() {
    if (gpu_) ggml_backend_free(gpu_);
    if (cpu_) ggml_backend_free(cpu_);
}

void ComputeBackend::set_n_threads(int n_threads) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(cpu_));
    auto set = reinterpret_cast<ggml_backend_set_n_threads_t>(
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads"));
    if (set) set(cpu_, resolve_threads(n_threads));
}

std::vector<ggml_backend_t> ComputeBackend::backends() const {
    std::vector<ggml_backend_t> out;
    if (gpu_) out.push_back(gpu_);
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
    : max_nodes_(max_nodes),
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
        fail(Status::internal, std::string("ggml graph compute failed: ") + ggml_status_to_string(st));
    }
}

}  // namespace minicpmo
