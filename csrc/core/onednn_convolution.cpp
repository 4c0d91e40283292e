#include "core/onednn_convolution.h"

#ifdef MINICPMO_ONEDNN

#include <algorithm>
#include <cstring>
#include <new>

#include "core/conv1d_node.h"
#include "ggml-backend.h"

namespace minicpmo {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// convolution shapes kept (HiFT has ~40 kernels, each with a few span lengths): past this the cache starts again
constexpr size_t kMaxShapes = 256;

// output steps per primitive call: a span's input and output stay in the core's L2 (64 channels x
// 256 steps = 64 KiB each at HiFT's last stage, ~7000 steps a second), it compiles in a few ms,
// and the calls' overhead stays small. HiFT streamed, AMD Zen 4, 2 threads: spans of 256 or 512
// ~1.05 s per 4 s of audio, 1024 ~1.2 s, 2048 ~1.3 s, one span for the whole length ~1.4 s.
constexpr int64_t kSpan = 256;

int64_t next_power_of_two(int64_t n) {
    int64_t p = 1;
    while (p < n) p *= 2;
    return p;
}

// in host memory, or not allocated yet (a graph's intermediate: the scheduler puts it in this
// backend's buffer type, the CPU's)
bool host_or_unallocated(const ggml_tensor * t) {
    const ggml_tensor * s = t->view_src ? t->view_src : t;
    return !s->buffer || ggml_backend_buffer_is_host(s->buffer);
}

}  // namespace

bool OnednnConvolutions::supports(const ggml_tensor * op) {
    if (!conv1d_node_shape(op)) return false;
    for (int i = 0; i < 3 && op->src[i]; ++i) {
        if (!host_or_unallocated(op->src[i])) return false;
    }
    return true;
}

// oneDNN's 1-D convolution sees (batch, channels, width). Our activations are ne (C, T), a step's
// channels adjacent: oneDNN's "nwc". Only the input steps the outputs read are described (stride
// may leave a tail unread). The kernel ne (C_in * K, C_out), tap-major, is (C_out, C_in, K) in
// order "acb".
const OnednnConvolutions::Primitive & OnednnConvolutions::primitive(const ggml_tensor * op, int64_t T_out) {
    const Conv1dShape & s = *conv1d_node_shape(op);
    const int64_t C_in = op->src[0]->ne[0], C_out = op->ne[0];
    const bool bias = op->src[2] != nullptr;
    const std::array<int64_t, 7> key{C_in, C_out, s.kernel, s.dilation, s.stride, T_out, bias};
    auto it = primitives_.find(key);
    if (it != primitives_.end()) return it->second;
    if (primitives_.size() >= kMaxShapes) primitives_.clear();
    Primitive p;
    p.src = memory::desc({1, C_in, conv1d_input_steps(s, T_out)}, dt::f32, tag::nwc);
    p.dst = memory::desc({1, C_out, T_out}, dt::f32, tag::nwc);
    if (bias) p.bias = memory::desc({C_out}, dt::f32, tag::a);
    const memory::desc any_weights({C_out, C_in, s.kernel}, dt::f32, tag::any);
    const memory::dims strides{s.stride}, dilates{s.dilation - 1}, pad{0};  // oneDNN counts dilation from 0
    const auto desc = bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                             dnnl::algorithm::convolution_direct, p.src, any_weights,
                                                             p.bias, p.dst, strides, dilates, pad, pad)
                           : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                             dnnl::algorithm::convolution_direct, p.src, any_weights,
                                                             p.dst, strides, dilates, pad, pad);
    const dnnl::convolution_forward::primitive_desc pd(desc, engine_);
    p.weights = pd.weights_desc();
    p.conv = dnnl::convolution_forward(pd);
    return primitives_.emplace(key, std::move(p)).first->second;
}

const memory & OnednnConvolutions::packed_kernel(const ggml_tensor * w, const Primitive & p, dnnl::stream & stream) {
    std::vector<std::pair<PackedKernel, memory>> & copies = kernels_[w->data];
    for (const auto & copy : copies) {
        if (copy.first.desc == p.weights) return copy.second;
    }
    const int64_t C_out = w->ne[1], C_in = p.src.dims()[1], K = w->ne[0] / C_in;
    PackedKernel packed;
    packed.desc = p.weights;
    const size_t size = (p.weights.get_size() + 63) / 64 * 64;  // aligned_alloc wants a multiple of the alignment
    packed.bytes.reset(std::aligned_alloc(64, size));
    if (!packed.bytes) throw std::bad_alloc();
    memory user(memory::desc({C_out, C_in, K}, dt::f32, tag::acb), engine_, w->data);
    memory dst(p.weights, engine_, packed.bytes.get());
    dnnl::reorder(user, dst).execute(stream, user, dst);
    stream.wait();
    copies.emplace_back(std::move(packed), dst);
    return copies.back().second;
}

void OnednnConvolutions::compute(ggml_tensor * op, dnnl::stream & stream) {
    const Conv1dShape & s = *conv1d_node_shape(op);
    const ggml_tensor * x = op->src[0];
    const int64_t C_in = x->ne[0], C_out = op->ne[0], T_out = op->ne[1];
    const int64_t span = T_out >= kSpan ? kSpan : next_power_of_two(T_out);
    const Primitive & p = primitive(op, span);
    const memory & weights = packed_kernel(op->src[1], p, stream);
    memory bias;
    if (op->src[2]) bias = memory(p.bias, engine_, op->src[2]->data);
    const auto run = [&](const float * in, float * out) {
        memory src(p.src, engine_, const_cast<float *>(in)), dst(p.dst, engine_, out);
        if (op->src[2]) {
            p.conv.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
        } else {
            p.conv.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
        }
        stream.wait();
    };
    const auto * in = static_cast<const float *>(x->data);
    auto * out = static_cast<float *>(op->data);
    if (T_out >= span) {
        // spans one after another (each on all the threads: measured faster than whole spans side by
        // side on single threads); the last one ends at T_out, over its predecessor's tail
        for (int64_t t = 0; t < T_out; t += span) {
            const int64_t t0 = std::min(t, T_out - span);
            run(in + t0 * s.stride * C_in, out + t0 * C_out);
        }
        return;
    }
    // fewer steps than the span: the input copied and zero-padded to the span's, the outputs copied back
    const int64_t steps_in = conv1d_input_steps(s, span), have = std::min(steps_in, x->ne[1]);
    padded_in_.assign(static_cast<size_t>(steps_in * C_in), 0.0f);
    std::memcpy(padded_in_.data(), in, static_cast<size_t>(have * C_in) * sizeof(float));
    padded_out_.resize(static_cast<size_t>(span * C_out));
    run(padded_in_.data(), padded_out_.data());
    std::memcpy(out, padded_out_.data(), static_cast<size_t>(T_out * C_out) * sizeof(float));
}

}  // namespace minicpmo

#endif
