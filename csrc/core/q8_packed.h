// Products of Q8_0 weight matrices with a few F32 activation rows, the memory-bound step of the TTS
// decode (one row per speech token). ggml's x86 kernels read a Q8_0 matrix row by row through a
// 32-value dot product with a scale multiply per block; here the matrix is repacked once at load into
// groups of 16 rows whose 32-value blocks interleave, so that one byte dot-product instruction
// (AVX-512 VNNI `vpdpbusd`, or AVX2 `vpmaddubsw`) advances 16 rows at once. The arithmetic is ggml's:
// each activation row is quantized per 32 values as Q8_0 (scale rounded to F16) and every block's
// integer sum is exact, so only the F32 summation order of the blocks differs from ggml's mul_mat.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "ggml.h"

namespace minicpmo {

// The instruction sets the kernels are written for.
enum class Q8Isa { avx2, avx512_vnni };
const char * q8_isa_name(Q8Isa isa);

// The best kernel ggml's CPU kernels in this process may also use: the instruction sets both this CPU
// and the loaded ggml CPU module have (so MINICPMO_CPU_VARIANT=haswell pins these to AVX2 too); none
// (use ggml's mul_mat) on a CPU or module without AVX2, FMA and F16C, and on non-x86 builds.
std::optional<Q8Isa> best_q8_isa();
// Whether this CPU runs `isa`'s kernel (tests force each one that is present).
bool q8_isa_supported(Q8Isa isa);

// A Q8_0 matrix of `rows` rows of `cols` values (cols a multiple of 32) in the kernels' layout: for each
// group of 16 rows (the last padded with zero rows) and each 32-value block, the 16 x 32 weights as
// unsigned bytes (w + 128), 4 consecutive values of one row per 32-bit lane, rows fastest; then the 16
// rows' F16 scales. The same bytes per value as Q8_0.
class PackedQ8Matrix {
public:
    // ggml's Q8_0 blocks of `rows` rows, row after row (a tensor's data)
    struct Part {
        const void * q8_0;
        int64_t rows;
    };
    // The parts' rows stacked in order (one product then computes several matrices that read the same
    // activations); `isa`: the kernel its graph nodes run; `rms_eps`: the epsilon of the RMS norm its
    // nodes apply to their input when given the norm's weight. Throws invalid_argument for a shape
    // that is not a Q8_0 matrix.
    PackedQ8Matrix(const std::vector<Part> & parts, int64_t cols, Q8Isa isa, float rms_eps = 1e-6f);
    int64_t rows() const { return rows_; }
    int64_t cols() const { return cols_; }
    int64_t groups() const { return (rows_ + 15) / 16; }
    size_t bytes() const { return bytes_; }
    const uint8_t * group(int64_t g) const;
    Q8Isa isa() const { return isa_; }
    float rms_eps() const { return rms_eps_; }

private:
    int64_t rows_, cols_;
    size_t bytes_;
    Q8Isa isa_;
    float rms_eps_;
    std::unique_ptr<uint8_t, void (*)(void *)> data_;
};

// The ggml nodes below are CPU custom ops on w.isa()'s kernel whose threads split the row groups; x
// is F32 with w.cols() values per row; `w` must outlive the graph. `rms_weight` (F32 [w.cols()]): the
// rows are first RMS-normalised, x / sqrt(mean(x^2) + w.rms_eps()) * rms_weight (the norm ahead of a
// block's products, without a node of its own).

// w . x (+ residual): F32 [w.rows(), x's rows]; `residual`: null, or F32 rows of the output's shape
// added to it (a block's skip connection).
ggml_tensor * q8_packed_product_node(ggml_context * ctx, const PackedQ8Matrix & w, ggml_tensor * x,
                                     ggml_tensor * residual = nullptr);
// w . rms_norm(x) * rms_weight
ggml_tensor * q8_packed_normed_product_node(ggml_context * ctx, const PackedQ8Matrix & w, ggml_tensor * x,
                                            ggml_tensor * rms_weight);

// silu(gate . x') * (up . x') for w stacked from a gate and an up matrix of w.rows() / 2 rows each (a
// multiple of 16), x' = x or its RMS norm: F32 [w.rows() / 2, x's rows], a SwiGLU block's input.
ggml_tensor * q8_packed_gated_node(ggml_context * ctx, const PackedQ8Matrix & w, ggml_tensor * x,
                                   ggml_tensor * rms_weight = nullptr);

}  // namespace minicpmo
