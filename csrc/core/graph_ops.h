// Graph building blocks every encoder and decoder shares (vision, audio, Token2Wav): one definition
// of each, so a numerical change reaches all of them.
#pragma once

#include "ggml.h"

namespace minicpmo {

// LayerNorm over the first dimension: normalize, then scale by w and shift by b (either may be null).
ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps);

// x w^T + b for a weight stored [in, out] (ggml_mul_mat's layout); b may be null.
ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b);

}  // namespace minicpmo
