// One sampling step of the speech-token decoder (spec §5.1): logits / T, then (unless the step
// is a plain one) the count-based repetition penalty over a window of earlier tokens, top-p and
// top-k (transformers' warper semantics, min_keep), then the EOS mask, then either argmax
// (greedy) or one uniform draw u: the first token whose cumulative probability exceeds u * total.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "speech/tts_model.h"

namespace minicpmo {

// Returns a uniform number in [0, 1). Empty = greedy.
using UniformDraw = std::function<double()>;

struct TtsStep {
    bool apply_processors = true;  // false: only the temperature (the first sample of a call/stream)
    bool mask_eos = false;         // before min_new_tokens
    int eos = -1;
};

// Processes `logits` in place and picks a token. `history`: the tokens the penalty window sees.
int tts_sample(std::vector<float> & logits, const std::vector<int32_t> & history, const TtsSampling & s,
               const TtsStep & step, const UniformDraw & draw);

}  // namespace minicpmo
