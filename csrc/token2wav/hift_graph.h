// ggml graph builders of the HiFT vocoder (spec §5.2.5): pure functions of (weights, hparams,
// input tensors). Activations are channel-major, ne (C, T): the inputs of a convolution's output
// step are then K runs of whole channel vectors, gathered by row copies, and Snake reads its
// per-channel parameters along rows. The mel input and col2im_1d's output are time-major and
// transposed once each.
#pragma once

#include "ggml.h"
#include "token2wav/hift_model.h"

namespace minicpmo {

// `conv_nodes`: the convolutions as conv1d nodes (core/conv1d_node), for a session whose oneDNN backend
// runs them (ComputeBackend::onednn_products); else gathered taps and a matrix product (any device).

// mel: ne (T, n_mel) F32. Returns the frame-rate F0 ne (1, T): |Linear(n x [conv k3 -> ELU](mel))|.
ggml_tensor * build_hift_f0(ggml_context * ctx, const HiftModel & m, ggml_tensor * mel, bool conv_nodes);

struct HiftDecoderOutputs {
    ggml_tensor * audio = nullptr;   // ne (T * hop_samples): the waveform, clamped to +-audio_limit
    ggml_tensor * source = nullptr;  // ne (T * hop_samples): the NSF source after the cache overwrite
};

// mel: ne (T, n_mel) F32; sines: ne (H+1, T * hop_samples) F32, the host-made sine excitation
// (hift_source.h); cache_source: ne (n) F32 with n <= T * hop_samples, or null: it replaces the
// first n source samples (streaming). Source = tanh(Linear(H+1 -> 1)(sines)), then the 16-point
// STFT, the decoder, the magnitude/phase head and the iSTFT.
HiftDecoderOutputs build_hift_decoder(ggml_context * ctx, const HiftModel & m, ggml_tensor * mel, ggml_tensor * sines,
                                      ggml_tensor * cache_source, bool conv_nodes);

// Graph nodes the decoder of `m` needs (headroom included).
size_t hift_graph_nodes(const HiftModel & m);

}  // namespace minicpmo
