// The MiniCPM-o special tokens the runtime writes into prompts or watches for in replies (spec §4.2):
// resolved once when the LLM loads (LlmModel::special_token), not looked up by text at every use.
#pragma once

#include <array>
#include <cstddef>

#include "llama.h"

namespace minicpmo {

enum class Special {
    im_start, im_end, unk,
    image, image_end, slice, slice_end, image_id, image_id_end,
    audio_start, audio_end,
    tts_bos, tts_eos, tts_pad,
    unit, unit_end, listen, speak, chunk_eos, chunk_tts_eos, turn_eos,
    count_
};

constexpr size_t kSpecialCount = static_cast<size_t>(Special::count_);

// The token's text in the vocabulary, e.g. "<|tts_bos|>".
const char * special_text(Special s);

// Ids of the special tokens; -1 for one the vocabulary does not hold as a single token.
using SpecialTokenIds = std::array<llama_token, kSpecialCount>;

}  // namespace minicpmo
