// A ggml backend of this project that runs the encoders' matrix products with weights (MUL_MAT whose
// first operand lives in a weights buffer) through oneDNN in BF16: AMX tiles on Intel Sapphire Rapids
// and later, AVX-512 BF16 dot products on AMD Zen 4 and Intel Cooper Lake, oneDNN's own choice at run
// time (CPUID); or in int8 (compute_type "int8"): byte dot products on every CPU with AVX2 (VNNI and
// AMX where present), about twice the F32 rate. It also takes more ops of those encoders: FLASH_ATTN_EXT on F32 operands (BF16
// products around a softmax, block by block, in int8 sessions F32 ones: core/onednn_attention), and GELU, tanh and softplus
// (oneDNN's vectorised eltwise kernels in place of ggml's F16 table and scalar libm calls), and, at
// every precision, conv1d nodes (core/conv1d_node, in F32: core/onednn_convolution). Everything else stays on ggml's CPU backend; a
// ComputeBackend puts this one before the CPU in its schedulers, so the graphs stay plain ggml (CUDA,
// Metal and Vulkan run them unchanged).
//
// Each weight matrix is converted to BF16 (or quantized to int8) and re-laid into oneDNN's packed
// layout the first time a product uses it. A matrix of the model's weights (`model`) is packed once for every session of the
// model (GgufWeights::kernel_copy), and its F16/F32 original, mapped from the file, leaves memory;
// other weights are packed per backend instance.
//
// Built only with MINICPMO_ONEDNN (oneDNN found at configure time).
#pragma once

#include <string>

#include "ggml-backend.h"

namespace minicpmo {

class GgufWeights;

// What the products compute in: BF16 (the encoders of BF16 sessions), F32 (HiFT in BF16 and int8
// sessions: oneDNN's F32 kernels, faster than ggml's at its convolutions' shapes on AVX-512; F32
// arithmetic, only the summation order differs), or int8 (the encoders of int8 sessions: weights per
// row in 7 bits, activations per row in unsigned bytes, exact integer sums: core/int8_quantize). F32
// backends take nothing but products with weights (and conv1d nodes), int8 ones those, the fused
// attention (F32) and GELU, tanh and softplus.
enum class OnednnPrecision { bf16, f32, int8 };

// A new backend (free with ggml_backend_free) computing on `n_threads` threads, or throws
// unsupported naming the build option when the build has none. `model` (may be null) must outlive it.
ggml_backend_t onednn_matmul_backend_new(int n_threads, const GgufWeights * model,
                                         OnednnPrecision precision = OnednnPrecision::bf16);

// Whether oneDNN computes BF16 products on this CPU with its own BF16 instructions (AMX tiles or
// AVX-512 BF16), not emulated or in reference code: where compute_type "auto" takes bf16. False
// in a build without oneDNN.
bool onednn_bf16_native();

// Whether the backend computes this FLASH_ATTN_EXT node (core/onednn_attention); false in a build
// without oneDNN. Graphs whose operands only this backend reads correctly check it.
bool onednn_takes_attention(const ggml_tensor * op);

// Packs the weights of the graph's products that this backend will take and makes their kernels,
// without computing: a later graph of the same shapes starts at full speed (a duplex conversation
// prepares its frames' vision products before the first frame). The graph need not be allocated.
void onednn_matmul_prepare(ggml_backend_t backend, ggml_cgraph * graph);

// Sets its thread count (the CPU backend's, kept in step by ComputeBackend).
void onednn_matmul_set_n_threads(ggml_backend_t backend, int n_threads);

// Why its last graph failed (oneDNN's message), cleared by the call; "" when nothing failed.
std::string onednn_matmul_take_error(ggml_backend_t backend);

}  // namespace minicpmo
