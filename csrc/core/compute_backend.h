// The ggml backends one component computes on: the CPU backend (always, with its thread count) and,
// when asked for and present, a GPU device whose memory holds the weights. Each session owns its
// own instance, so thread counts and scratch buffers are never shared between sessions.
#pragma once

#include <cstdint>
#include <vector>

#include "ggml-backend.h"

namespace minicpmo {

// Where weights are stored: the GPU device's buffer type when `use_gpu` and a GPU exists, else CPU.
ggml_backend_buffer_type_t weight_buffer_type(bool use_gpu);

class ComputeBackend {
public:
    ComputeBackend(bool use_gpu, int n_threads);
    ~ComputeBackend();
    ComputeBackend(const ComputeBackend &) = delete;
    ComputeBackend & operator=(const ComputeBackend &) = delete;

    void set_n_threads(int n_threads);
    bool has_gpu() const { return gpu_ != nullptr; }
    // Backends in scheduler priority order (GPU first when present, CPU last).
    std::vector<ggml_backend_t> backends() const;

private:
    ggml_backend_t gpu_ = nullptr;
    ggml_backend_t cpu_ = nullptr;
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

private:
    ggml_backend_sched_t sched_ = nullptr;
    size_t max_nodes_;
    std::vector<uint8_t> meta_;
};

}  // namespace minicpmo
