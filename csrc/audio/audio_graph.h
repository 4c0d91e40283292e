// ggml graph builders of the audio path (spec §3.2, §3.3): pure functions of (weights, hparams,
// input tensors). The caller owns the graph and, for streaming, the key/value cache tensors.
#pragma once

#include <vector>

#include "audio/audio_model.h"
#include "ggml.h"

namespace minicpmo {

// mel: [n_frames, n_mel] F32 (time fastest). Conv stem: conv1 + GELU, stride-2 conv2 + GELU, then
// `drop_front` / `drop_back` output frames removed (the duplex conv-context frames). Returns
// [n_embd, T'] with T' = (n_frames - 1) / 2 + 1 - drop_front - drop_back.
ggml_tensor * build_audio_stem(ggml_context * ctx, const AudioModel & m, ggml_tensor * mel, int drop_front,
                               int drop_back);

// Key counts are padded up to a multiple of this and the padded keys masked, so the weighted sum
// over keys runs in ggml's GEMM kernels (they need a multiple of 16).
constexpr int64_t kAudioKeyAlign = 32;
inline int64_t audio_padded_keys(int64_t n_keys) {
    return (n_keys + kAudioKeyAlign - 1) / kAudioKeyAlign * kAudioKeyAlign;
}

// Where one layer's keys/values of the current frames are written and what attention reads. The
// value cache is stored transposed (one row per channel, positions along it), the layout the
// attention's second product reads. `store_k` is a [n_embd, T'] view of the key cache at the chunk's
// offset and `store_vt` the [T', n_embd] view of the value cache there; `all_k` [n_embd, Lk] and
// `all_vt` [Lk, n_embd] read from position 0, Lk = audio_padded_keys(C + T') (the cache has room
// for the padding; its padded positions hold finite values). The copies into the cache are added
// to `graph` before the attention reads.
struct AudioLayerCache {
    ggml_tensor * store_k = nullptr;
    ggml_tensor * store_vt = nullptr;
    ggml_tensor * all_k = nullptr;
    ggml_tensor * all_vt = nullptr;
};

// Query frames [q_begin, q_begin + n_queries) attend over keys [0, n_keys): n_keys is a multiple
// of kAudioKeyAlign, no more than audio_padded_keys(all keys), or for the fused attention (which
// takes any count) the exact count. `mask` is their [n_keys, n_queries]
// additive mask (0 / -inf; F32, or F16 for the fused attention), or null when they see all n_keys
// keys. Groups cover the queries in order; block-causal attention uses several, so early queries
// skip the keys they cannot see.
struct AudioQueryGroup {
    int64_t q_begin = 0;
    int64_t n_queries = 0;
    int64_t n_keys = 0;
    ggml_tensor * mask = nullptr;
};

// x: [n_embd, T'] stem output; pos_ids: [T'] I32 rows of the position table; groups: the
// attention's query groups; caches: one per layer (streaming) or empty (keys/values are then
// zero-padded to audio_padded_keys(T')). fused_attention (BF16 and int8 sessions): the attention as ggml's
// FLASH_ATTN_EXT per group, with F16 masks, for the oneDNN backend (without a cache it reads the
// projected keys and values as they are: no padding, no transposed copy). Returns the post-LayerNorm
// encoder output [n_embd, T'].
ggml_tensor * build_audio_encoder(ggml_context * ctx, ggml_cgraph * graph, const AudioModel & m, ggml_tensor * x,
                                  ggml_tensor * pos_ids, const std::vector<AudioQueryGroup> & groups,
                                  const std::vector<AudioLayerCache> & caches, bool fused_attention);

// h: [n_embd, T'] encoder output -> Linear-ReLU-Linear -> average of each `pool_step` frames
// (a trailing partial group is dropped): [n_embd_out, T' / pool_step].
ggml_tensor * build_audio_projector(ggml_context * ctx, const AudioModel & m, ggml_tensor * h);

}  // namespace minicpmo
