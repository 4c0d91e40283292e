#include "llm/special_tokens.h"

namespace minicpmo {

const char * special_text(Special s) {
    // in the order of the enum
    static constexpr const char * kText[kSpecialCount] = {
        "<|im_start|>", "<|im_end|>", "<unk>",
        "<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>",
        "<|audio_start|>", "<|audio_end|>",
        "<|tts_bos|>", "<|tts_eos|>", "<|tts_pad|>",
        "<unit>", "</unit>", "<|listen|>", "<|speak|>", "<|chunk_eos|>", "<|chunk_tts_eos|>", "<|turn_eos|>",
    };
    return kText[static_cast<size_t>(s)];
}

}  // namespace minicpmo
