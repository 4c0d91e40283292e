// One sampling step of the speech-token decoder (spec §5.1): logits / T, then (unless the step
// is a plain one) the count-based repetition penalty over a window of earlier tokens, top-p and
// top-k (transformers' warper semantics, min_keep), then the EOS mask, then either argmax
// (greedy) or one uniform draw u: the first token whose cumulative probability exceeds u * total.
// Composed of sampling/logits_ops: divide_by_temperature, penalise_by_count (c occurrences:
// penalty^c, HF's sign rule), mask_outside_top_p_ascending (TopPLogitsWarper, min_keep),
// mask_outside_top_k with k = max(top_k, min_keep) (TopKLogitsWarper, ties kept), mask_id for the
// EOS mask (the chat layout's min_new_tokens: EOS is masked before the step that may end the
// utterance), then argmax or softmax_float_shift + pick_inverse_cdf.
#pragma once

#include <cstdint>
#include <vector>

#include "sampling/pick.h"
#include "tts/tts_model.h"

namespace minicpmo {

struct TtsStep {
    bool apply_processors = true;  // false: only the temperature (the first sample of a call/stream)
    bool mask_eos = false;         // before min_new_tokens
    int eos = -1;
};

// Processes `logits` in place and picks a token. `history`: the tokens the penalty window sees.
// `draw` empty: greedy.
int tts_sample(std::vector<float> & logits, const std::vector<int32_t> & history, const TtsSampling & s,
               const TtsStep & step, const UniformDraw & draw);

}  // namespace minicpmo
