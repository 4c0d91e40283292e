// ggml graph of the S3 speech tokenizer v2's encoder and FSQ projection (voice/speech_tokenizer.h).
#pragma once

#include "ggml.h"
#include "voice/speech_tokenizer.h"

namespace minicpmo {

// Graph nodes the builder needs for a model of this many layers (with headroom).
size_t speech_tokenizer_graph_nodes(const SpeechTokenizerHparams & hp);

// mel: [n_frames, n_mel] F32 (time fastest per band); positions: [T] I32 0..T-1 with T the token
// frames (hp.n_tokens(n_frames)). Returns the FSQ values before rounding, [fsq_dim, T]:
// fsq_scale * tanh(project_down(encoder(mel))).
ggml_tensor * build_speech_tokenizer(ggml_context * ctx, const SpeechTokenizer & m, ggml_tensor * mel,
                                     ggml_tensor * positions);

}  // namespace minicpmo
