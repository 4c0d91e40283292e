// The speech-token decoder's attention over its key/value cache as one CPU graph node. Each decode
// step attends a single row per head over at most a few hundred cached slots; as ggml ops that is four
// nodes (scores, softmax, weighted sum, and a copy back into rows), each a thread barrier around a
// few microseconds of work, and ggml rounds the query and the probabilities to F16 for products with
// the F16 cache. This node does it in one pass per (head, row) task, accumulating in F32.
#pragma once

#include "ggml.h"

namespace minicpmo {

// q: [head_dim, n_head, n] F32 (contiguous); all_k: [head_dim * n_head_kv, S] and all_v: [S, head_dim *
// n_head_kv] (values transposed) views of an F16 or F32 cache; mask: [S, n] F32 additive.
// Returns softmax(scale * q . k + mask) . v as [head_dim * n_head, n] F32: the rows the output
// projection reads. Query heads share key/value heads in consecutive groups (n_head / n_head_kv each).
ggml_tensor * tts_cached_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * all_k, ggml_tensor * all_v,
                                   ggml_tensor * mask, float scale);

// Whether this build's CPU can run the node (x86-64 with AVX2, FMA and F16C).
bool tts_cached_attention_supported();

}  // namespace minicpmo
