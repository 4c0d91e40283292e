// The oneDNN backend's fused attention: ggml's FLASH_ATTN_EXT (F32 queries, F32 or F16 keys and values,
// an optional additive F16 mask)
// as BF16 matrix products through oneDNN around a softmax, one block of query rows of one head at a
// time, so the scores of a block stay in the core's cache instead of passing through memory as an
// Lq x Lk matrix per head (core/onednn_matmul runs the rest of the encoders' products).
//
// The blocks are spread over the backend's threads; each thread runs oneDNN's kernels on its own
// (oneDNN runs a primitive single-threaded inside an OpenMP parallel region) with its own scratch.
// Built only with MINICPMO_ONEDNN.
#pragma once

#ifdef MINICPMO_ONEDNN

#include <array>
#include <cstdint>
#include <map>
#include <vector>

#include <dnnl.hpp>

#include "ggml.h"

namespace minicpmo {

class OnednnAttention {
public:
    explicit OnednnAttention(const dnnl::engine & engine) : engine_(engine) {}

    // Whether `op` is an attention this class computes: FLASH_ATTN_EXT with F32 queries and F32 or
    // F16 keys and values in any element strides, as many key/value heads as query heads, an F16 mask or none (one row per
    // query, shared by the heads or one per head), no sinks, ALiBi or soft-capping.
    static bool supports(const ggml_tensor * op);

    // Computes `op` (supports(op)) on `n_threads` threads.
    void compute(ggml_tensor * op, int n_threads);

private:
    // matmul primitives of one block shape, with scratchpads of their own (one per thread)
    struct BlockProducts {
        dnnl::matmul scores, weighted;
        dnnl::memory::desc scores_pad, weighted_pad;  // their scratchpads
    };
    struct Layouts {
        dnnl::memory::desc key, value;  // per-head packed BF16 layouts of K^T (D x Lk) and V (Lk x Dv)
    };
    // the reorders that round one batch's Q (all heads) and one head's K and V to BF16, for the
    // operands' shapes and strides
    struct OperandReorders {
        dnnl::reorder query, key, value;
    };
    const Layouts & layouts(int64_t D, int64_t Lk, int64_t Dv);
    const OperandReorders & reorders(const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v,
                                     const Layouts & l);
    const BlockProducts & products(int64_t rows, int64_t D, int64_t Lk, int64_t Dv);

    dnnl::engine engine_;
    std::map<std::array<int64_t, 3>, Layouts> layouts_;
    std::map<std::array<int64_t, 4>, BlockProducts> products_;
    std::map<std::array<int64_t, 12>, OperandReorders> reorders_;
    std::vector<uint8_t> q_bf16_, k_bf16_, v_bf16_;          // this call's operands in BF16 (every batch)
    std::vector<float> mask_f32_;                            // its mask rows in F32
    std::vector<float> k_f32_, v_f32_;                       // F16 keys / values widened to F32
    std::vector<dnnl::stream> streams_;                      // per thread of the parallel region
    std::vector<std::vector<uint8_t>> thread_scratch_;       // per thread: scores, probabilities, output rows, oneDNN scratchpad
};

}  // namespace minicpmo

#endif
