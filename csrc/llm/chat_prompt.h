// The MiniCPM-o 4.5 chat template (spec §4.3): Qwen3 ChatML plus the enable_thinking and
// use_tts_template flags, rendered in C++ so the C library needs no Jinja engine.
#pragma once

#include <string>
#include <vector>

namespace minicpmo {

struct ChatMessage {
    std::string role;     // "system", "user" or "assistant"
    std::string content;  // text; media placeholders are expanded by the caller before this
};

struct ChatTemplateOptions {
    bool add_generation_prompt = true;
    bool enable_thinking = false;  // false: the generation prompt carries an empty think block
    bool use_tts_template = false;  // true: the generation prompt ends with <|tts_bos|>
};

// Throws invalid_argument for an unknown role or an empty message list.
std::string render_chat(const std::vector<ChatMessage> & messages, const ChatTemplateOptions & options);

}  // namespace minicpmo
