// Speech-token generation of the non-streaming chat layout (spec §5.1): the condition block
// [c_1 .. c_n, text_eos, audio_bos] at positions 0..n+1, then one speech token per step fed back
// through emb_code until EOS (never fed) or the token limit.
#pragma once

#include <cstdint>
#include <vector>

#include "sampling/tts_sampler.h"
#include "tts/tts_decoder.h"

namespace minicpmo {

struct TtsChatResult {
    std::vector<int32_t> tokens;   // speech tokens, EOS excluded (the last sample is dropped at the limit)
    bool finished = false;         // EOS was sampled
};

// `text_ids` / `llm_hidden`: the spoken text tokens and their LLM final-norm hidden states (n rows
// of n_embd_llm). Starts from an empty cache. `draw` empty = greedy.
TtsChatResult generate_chat_speech(TtsDecoder & decoder, const int32_t * text_ids, const float * llm_hidden, int n,
                                   const TtsSampling & sampling, const UniformDraw & draw);

}  // namespace minicpmo
