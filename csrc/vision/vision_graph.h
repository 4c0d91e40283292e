// ggml graph builders of the vision path, pure functions of (weights, hparams, input tensors).
// A batch holds slices of one patch-grid size, so no padding or attention mask is needed.
#pragma once

#include "ggml.h"
#include "vision/vision_model.h"

namespace minicpmo {

// patches: [patch_dim, L, B] F32 (patch vectors in (c, ky, kx) order, row-major over the grid);
// pos_ids: [L] I32 bucketized NaViT positions. Returns the post-LayerNorm output [D, L, B].
// exact (F32 models): tanh-GELU composed from F32 ops and attention in F32; otherwise ggml's
// table-based GELU (F16 lookup) and fused flash attention with F16 keys/values (~1e-3 relative,
// below the rounding of F16/quantized weights). onednn_attention (BF16 and int8 sessions, whose
// products run in the oneDNN backend): the fused attention on F32 operands, which that backend
// computes (BF16 products in BF16 sessions, F32 in int8 ones).
ggml_tensor * build_siglip(ggml_context * ctx, const VisionModel & m, ggml_tensor * patches, ggml_tensor * pos_ids,
                           bool exact, bool onednn_attention);

// x: [D, L, B] ViT output; key_pos: [E, L] 2-D sin-cos table of the slice's grid (added to keys
// only). Returns the LLM embeddings [E, n_query, B].
ggml_tensor * build_resampler(ggml_context * ctx, const VisionModel & m, ggml_tensor * x, ggml_tensor * key_pos);

}  // namespace minicpmo
