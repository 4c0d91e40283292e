// The oneDNN backend's 1-D convolutions: conv1d nodes (core/conv1d_node) run as oneDNN's F32
// convolution primitive on the channel-major activations as they lie (oneDNN's "nwc"), the bias
// added in the same pass. On AVX-512 its kernel (brgconv) beats gathering the taps and one matrix
// product: it skips the K-fold copy of the input and runs ~10 % faster than the product itself on
// HiFT's shapes (AMD Zen 4).
//
// A primitive is compiled for one output length, in 15-30 ms at HiFT's lengths. So that every new
// utterance length does not compile its own, the outputs are computed in spans of a fixed length
// (256 steps, the last span overlapping the one before it), or, when there are fewer steps, in one
// span of the next power of two over zero-padded copies: a few primitives per kernel serve every
// length. Each kernel is re-laid into oneDNN's layout once per backend and primitive layout.
// Built only with MINICPMO_ONEDNN.
#pragma once

#ifdef MINICPMO_ONEDNN

#include <array>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <vector>

#include <dnnl.hpp>

#include "ggml.h"

namespace minicpmo {

class OnednnConvolutions {
public:
    explicit OnednnConvolutions(const dnnl::engine & engine) : engine_(engine) {}

    // Whether `op` is a conv1d node this class computes: operands in host memory (or not yet allocated).
    static bool supports(const ggml_tensor * op);

    // Computes `op` (supports(op)) on `stream` (the caller sets OpenMP's team size).
    void compute(ggml_tensor * op, dnnl::stream & stream);

private:
    struct Primitive {
        dnnl::convolution_forward conv;
        dnnl::memory::desc src, weights, bias, dst;
    };
    // one kernel in oneDNN's layout for its convolutions (which, by shape, may differ: re-laid then)
    struct PackedKernel {
        dnnl::memory::desc desc;
        std::unique_ptr<void, decltype(&std::free)> bytes{nullptr, &std::free};
    };
    // the primitive of node `op`'s convolution for `T_out` output steps
    const Primitive & primitive(const ggml_tensor * op, int64_t T_out);
    const dnnl::memory & packed_kernel(const ggml_tensor * w, const Primitive & p, dnnl::stream & stream);

    dnnl::engine engine_;
    // (C_in, C_out, K, dilation, stride, T_out, bias) -> primitive
    std::map<std::array<int64_t, 7>, Primitive> primitives_;
    // by the kernel's data: its packed copies (one per layout its primitives chose), with this engine's views
    std::map<const void *, std::vector<std::pair<PackedKernel, dnnl::memory>>> kernels_;
    std::vector<float> padded_in_, padded_out_;  // a short convolution's zero-padded input and its output
};

}  // namespace minicpmo

#endif
