// Logits and final-norm hidden states of every position of a prompt, media included: what users
// who want embeddings (or want to inspect a media prompt) read. The prompt is decoded on an empty
// KV cache exactly as prefill lays it out (the same token runs and encoder rows), with every
// position kept as an output. The session's conversation is cleared before and after (as
// Session::reset), so the next chat prefills its whole prompt; nothing else of the session changes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "session/media_prompt.h"
#include "session/omni_session.h"
#include "session/session.h"

namespace minicpmo {

struct PromptForward {
    std::vector<llama_token> tokens;  // the prompt; media positions hold the <unk> placeholder
    std::vector<uint8_t> is_media;    // 1 where encoder rows replaced the token embedding
    std::vector<float> logits;        // tokens.size() x n_vocab (empty when not asked for)
    std::vector<float> hidden;        // tokens.size() x n_embd
};

// `tokens` with the embedding rows of `spans` (in order, inside the prompt, rows not null) in
// place of theirs.
PromptForward forward_prompt(Session & session, const std::vector<llama_token> & tokens,
                             const std::vector<EmbeddingSpan> & spans, bool want_logits = true);

// A media prompt laid out by OmniSession::media_prompt for `images` and `audios`: encodes them
// and runs forward_prompt.
PromptForward forward_media(OmniSession & session, const MediaPrompt & prompt, const std::vector<ImageInput> & images,
                            const std::vector<AudioInput> & audios, bool want_logits = true);

}  // namespace minicpmo
