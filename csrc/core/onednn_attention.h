// The oneDNN backend's fused attention: ggml's FLASH_ATTN_EXT (F32 queries, F32, F16 or BF16 keys and values,
// an optional additive F16 mask) as two matrix products through oneDNN around a softmax, one block of
// query rows of one head at a time, so the scores of a block stay in the core's cache instead of
// passing through memory as an Lq x Lk matrix per head (core/onednn_matmul runs the rest of the
// encoders' products). The products' operands are BF16 in BF16 sessions and F32 in int8 sessions
// (their products with weights are int8; the attention keeps F32, in oneDNN's kernels, which beat
// ggml's on these shapes where the CPU has no BF16).
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
    // bf16_operands: queries, keys, probabilities and values rounded to BF16; else all F32
    OnednnAttention(const dnnl::engine & engine, bool bf16_operands)
        : engine_(engine), operand_(bf16_operands ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32) {}

    // Whether `op` is an attention this class computes: FLASH_ATTN_EXT with F32 queries and F32, F16
    // or BF16 keys and values in any element strides, as many key/value heads as query heads, an F16
    // mask or none (one row per query, shared by the heads or one per head), no sinks, ALiBi or soft-capping.
    static bool supports(const ggml_tensor * op);

    // Computes `op` (supports(op)) on `n_threads` threads.
    void compute(ggml_tensor * op, int n_threads);

private:
    // Every head of a short attention at once (a streamed window's queries): each operand converted by
    // one reorder and each product one batched matmul over (batch, head), instead of five oneDNN calls
    // per head: 5 calls instead of 80 per layer of the flow's DiT in a streamed window (16 heads, 8 per
    // CFG branch, of 50 queries over 256 key slots), whose per-call overhead outweighed the arithmetic.
    struct Batched {
        dnnl::reorder query, key, value;
        dnnl::matmul scores, weighted;
        dnnl::memory::desc q_from, k_from, v_from;  // ggml's operands (F32, or a BF16 cache), in their strides
        dnnl::memory::desc q_desc, k_desc, v_desc, scores_desc, probs_desc, out_desc;  // the operands oneDNN reads and writes
    };
    // whether `compute_batched` takes an attention of these sizes: one block of queries, and every
    // head's scores small enough to stay in the cores' caches
    static bool batched_fits(int64_t B, int64_t H, int64_t Lq, int64_t Lk);
    const Batched & batched(const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v);
    // the mask's rows in F32 (mask_f32_), [ne3][ne2][Lq][Lk]: once for every head and batch sharing them
    void mask_to_f32(const ggml_tensor * mask, int64_t Lq, int64_t Lk, int n_threads);
    void compute_batched(ggml_tensor * op, const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v,
                         const ggml_tensor * mask, float scale, int n_threads);

    // matmul primitives of one block shape, with scratchpads of their own (one per thread)
    struct BlockProducts {
        dnnl::matmul scores, weighted;
        dnnl::memory::desc scores_pad, weighted_pad;  // their scratchpads
    };
    struct Layouts {
        dnnl::memory::desc key, value;  // per-head packed layouts of K^T (D x Lk) and V (Lk x Dv)
    };
    // the reorders that copy one head's Q as dense rows and its K and V into their packed layouts
    // (rounded to BF16 in BF16 sessions), for the operands' shapes and strides
    struct OperandReorders {
        dnnl::reorder query, key, value;
    };
    const Layouts & layouts(int64_t D, int64_t Lk, int64_t Dv);
    const OperandReorders & reorders(const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v,
                                     const Layouts & l);
    const BlockProducts & products(int64_t rows, int64_t D, int64_t Lk, int64_t Dv);

    dnnl::engine engine_;
    dnnl::memory::data_type operand_;  // of the products' operands: bf16 or f32
    std::map<std::array<int64_t, 3>, Layouts> layouts_;
    std::map<std::array<int64_t, 4>, BlockProducts> products_;
    std::map<std::array<int64_t, 13>, OperandReorders> reorders_;
    std::map<std::vector<int64_t>, Batched> batched_;        // by the operands' dims, strides and types
    std::vector<uint8_t> q_ops_, k_ops_, v_ops_;             // this call's operands, dense or packed (every batch)
    std::vector<float> mask_f32_;                            // its mask rows in F32
    std::vector<float> k_f32_, v_f32_;                       // F16 keys / values widened to F32
    std::vector<float> scores_;                              // compute_batched: every head's scores
    std::vector<uint8_t> probs_;                             //   probabilities
    std::vector<float> out_;                                 //   and outputs, (B, H, Lq, Dv)
    std::vector<dnnl::stream> streams_;                      // per thread of the parallel region
    std::vector<std::vector<uint8_t>> thread_scratch_;       // per thread: scores, BF16 probabilities, output rows, oneDNN scratchpad
};

}  // namespace minicpmo

#endif
