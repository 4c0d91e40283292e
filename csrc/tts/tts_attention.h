// The speech-token decoder's attention step on the CPU as one graph node: RoPE on the new rows'
// queries and keys, their keys and values stored into the cache, and each query row's attention over
// the cached slots. Each decode step attends a single row per head over a few hundred slots; as ggml
// ops that is eight nodes (two RoPEs, two cache copies, scores, softmax, weighted sum, a copy back into
// rows), each a thread barrier around microseconds of work, and ggml rounds the query and the
// probabilities to F16 for its products with an F16 cache. This node does it in one pass per key/value
// head, accumulating in F32. Graphs for other devices build the plain ggml ops.
#pragma once

#include <cstdint>

#include "ggml.h"

namespace minicpmo {

struct TtsAttentionCache {
    ggml_tensor * k;   // [head_dim * n_head_kv, capacity]: a row per slot (F16 or F32)
    ggml_tensor * v;   // [capacity, head_dim * n_head_kv]: values transposed, a row per channel
    int64_t n_cached;  // slots already filled; the new rows go to the next ones
};

// q: [head_dim, n_head, n], k: [head_dim, n_head_kv, n] F32 before RoPE and v: [head_dim * n_head_kv, n]
// F32 (any row strides, contiguous within a head); pos: [n] I32; mask: [n_cached + n, n] F32 additive.
// Rotates q and k (rotate-half RoPE over the whole head, base `rope_theta`, ggml's NEOX mode), stores k
// and v into slots n_cached.. of the cache, and returns softmax(q . k / sqrt(head_dim) + mask) . v as
// [head_dim * n_head, n] F32, query heads sharing key/value heads in consecutive groups.
ggml_tensor * tts_cached_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v,
                                   ggml_tensor * pos, ggml_tensor * mask, const TtsAttentionCache & cache,
                                   float rope_theta);

// Whether this build's CPU can run the node (x86-64 with AVX2, FMA and F16C).
bool tts_cached_attention_supported();

}  // namespace minicpmo
