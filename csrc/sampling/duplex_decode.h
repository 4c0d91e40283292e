// The duplex text decision of MiniCPM-o 4.5 (spec §6.2, §6.3: StreamDecoder.decode), a pure
// function over one logits row so it can be checked against a numpy model on given logits.
//
// Stage 1 looks at the raw distribution only to ask "does the model end the unit here?": it draws
// (or takes the argmax) from softmax(raw logits) and returns <|chunk_eos|> when that is the pick.
// Otherwise stage 2 decides on processed logits: forbidden ids (<|tts_pad|>, bad_token_ids and
// <|chunk_eos|>) to -inf; the repetition penalty divides the logit of every distinct id among the
// last `repetition_window` stage-2 picks by the penalty whatever its sign (reference quirk: a
// negative logit moves up); the length penalty on <|turn_eos|> (divide if > 0, else multiply);
// `listen_prob_scale` multiplies the logit of <|im_end|> (the tokenizer's eos, reference quirk;
// nothing at 1.0); then greedy argmax, or temperature, top-k (ties with the k-th value kept), top-p
// (the first token past the threshold kept) and a draw from the rest.
//
// Composed of sampling/logits_ops and pick: stage 1 is exp_weights + pick_inverse_cdf over the raw
// row (or argmax); stage 2 is mask_id, divide_ids (the sign-blind penalty quirk), penalise_logit
// (HF's sign rule, for the length penalty), scale_unmasked, count_above (listen_top_k),
// divide_by_temperature, mask_outside_top_k, mask_outside_top_p_descending ending where the
// cumulative probability *passes* top_p, and the stage-1 draw over the full row in id order.
#pragma once

#include <cstdint>
#include <vector>

#include "llama.h"
#include "sampling/pick.h"

namespace minicpmo {

struct DuplexDecodeParams {
    bool greedy = false;              // decode_mode "greedy" (both stages take the argmax)
    float temperature = 0.7f;
    int top_k = 20;                   // <= 0: no top-k
    float top_p = 0.8f;               // >= 1: no top-p
    float repetition_penalty = 1.05f; // 1 = off
    int repetition_window = 512;      // stage-2 picks the penalty looks back on
    float length_penalty = 1.1f;      // on <|turn_eos|>; 1 = off
    float listen_prob_scale = 1.0f;   // on <|im_end|>; 1 = off
    // > 0: after the penalties, <|listen|> is decided at once when fewer than this many tokens
    // score above it (the reference's listen_top_k shortcut; not a stage-2 pick for the penalty)
    int listen_top_k = 0;
};

// Special ids the decision uses.
struct DuplexDecodeIds {
    llama_token chunk_eos = -1;
    llama_token turn_eos = -1;
    llama_token eos = -1;        // the tokenizer's eos_token (<|im_end|>), what listen_prob_scale scales
    llama_token listen = -1;     // <|listen|>, for listen_top_k
    std::vector<llama_token> forbidden;  // <|tts_pad|> + bad_token_ids (stage 2 adds <|chunk_eos|>)
};

struct DuplexDecision {
    llama_token token = -1;
    int stage = 0;  // 1: <|chunk_eos|> from the raw distribution; 2: the processed pick; 3: listen_top_k
};

// Throws invalid_argument for bad params or non-finite logits. `draw` returns uniforms in [0, 1)
// (one per stage that samples); it is not called in greedy mode.
DuplexDecision duplex_decode(const float * logits, int n_vocab, const DuplexDecodeIds & ids,
                             const std::vector<llama_token> & history, const DuplexDecodeParams & params,
                             const UniformDraw & draw);

void validate_duplex_decode_params(const DuplexDecodeParams & params);

}  // namespace minicpmo
