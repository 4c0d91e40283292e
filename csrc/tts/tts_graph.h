// ggml graph builders of the speech-token decoder (spec §5.1): the condition projection and the
// Llama backbone over a key/value cache. Pure functions of (weights, inputs); the caller owns the
// graph and the cache tensors.
#pragma once

#include <vector>

#include "ggml.h"
#include "tts/tts_attention.h"
#include "tts/tts_model.h"

namespace minicpmo {

// hidden: [n_embd_llm, n] LLM final-norm hidden states; ids: [n] I32 text token ids.
// Returns the condition rows emb_text[id] + L2normalize(proj2(relu(proj1 h))) as [n_embd, n]
// (without the L2 normalisation when `normalize` is false).
ggml_tensor * build_tts_conditions(ggml_context * ctx, const TtsModel & m, ggml_tensor * hidden, ggml_tensor * ids,
                                   bool normalize);

// x: [n_embd, n] input rows; pos: [n] I32 RoPE positions; mask: [n_slots, n] F32 additive; `caches`:
// each layer's key/value cache (tts/tts_attention.h) with n_slots - n slots filled. The new rows' keys
// and values are stored into it before the attention reads it. Returns the logits of
// the last row [n_vocab_audio, 1].
ggml_tensor * build_tts_forward(ggml_context * ctx, ggml_cgraph * graph, const TtsModel & m, ggml_tensor * x,
                                ggml_tensor * pos, ggml_tensor * mask, const std::vector<TtsAttentionCache> & caches);

}  // namespace minicpmo
