#include "llm/special_tokens.h"

#include <iterator>

namespace minicpmo {

const char * special_text(Special s) {
    // in the order of the enum (the assert catches an entry added to one and not the other)
    static constexpr const char * kText[] = {
        "<|im_start|>", "<|im_end|>", "<unk>",
        "<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>",
        "<|audio_start|>", "<|audio_end|>",
        "<|tts_bos|>", "<|tts_eos|>", "<|tts_pad|>",
        "<unit>", "</unit>", "<|listen|>", "<|speak|>", "<|chunk_eos|>", "<|chunk_tts_eos|>", "<|turn_eos|>",
    };
    static_assert(std::size(kText) == kSpecialCount, "one text per Special");
    return kText[static_cast<size_t>(s)];
}

}  // namespace minicpmo
