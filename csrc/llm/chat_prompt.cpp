#include "llm/chat_prompt.h"

#include "core/error.h"

namespace minicpmo {

namespace {

bool starts_with(const std::string & s, const std::string & p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string & s, const std::string & p) {
    return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

std::string strip_chars(const std::string & s, const char * chars, bool left, bool right) {
    size_t b = 0, e = s.size();
    if (left) b = s.find_first_not_of(chars);
    if (b == std::string::npos) return "";
    if (right) {
        const size_t last = s.find_last_not_of(chars);
        e = last == std::string::npos ? b : last + 1;
    }
    return e > b ? s.substr(b, e - b) : "";
}

// Index of the last user message that is a real query (Qwen3 treats user turns that are tool
// responses as part of the assistant's tool loop). The last index when there is none, as in Qwen3.
int last_query_index(const std::vector<ChatMessage> & messages) {
    for (int i = static_cast<int>(messages.size()) - 1; i >= 0; --i) {
        const ChatMessage & m = messages[static_cast<size_t>(i)];
        if (m.role == "user" && !(starts_with(m.content, "<tool_response>") && ends_with(m.content, "</tool_response>"))) {
            return i;
        }
    }
    return static_cast<int>(messages.size()) - 1;
}

// Splits "<think>R</think>C" the way the Qwen3 template does: reasoning R and the answer C.
void split_reasoning(const std::string & content, std::string & reasoning, std::string & answer) {
    const std::string close = "</think>";
    const size_t pos = content.rfind(close);
    if (pos == std::string::npos) {
        reasoning.clear();
        answer = content;
        return;
    }
    std::string before = content.substr(0, content.find(close));
    before = strip_chars(before, "\n", false, true);
    const size_t open = before.rfind("<think>");
    if (open != std::string::npos) before = before.substr(open + 7);
    reasoning = strip_chars(before, "\n", true, false);
    answer = strip_chars(content.substr(pos + close.size()), "\n", true, false);
}

}  // namespace

std::string render_chat(const std::vector<ChatMessage> & messages, const ChatTemplateOptions & options) {
    if (messages.empty() && !options.add_generation_prompt) {
        fail(Status::invalid_argument, "the message list is empty");
    }
    const int last_query = last_query_index(messages);
    std::string out;
    for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage & m = messages[i];
        if (m.role == "system" || m.role == "user") {
            out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
        } else if (m.role == "assistant") {
            std::string reasoning, answer;
            split_reasoning(m.content, reasoning, answer);
            const bool is_last = i + 1 == messages.size();
            // reasoning is kept only for turns after the last user query (the current tool loop)
            if (static_cast<int>(i) > last_query && (is_last || !reasoning.empty())) {
                out += "<|im_start|>assistant\n<think>\n" + strip_chars(reasoning, "\n", true, true) + "\n</think>\n\n" +
                       strip_chars(answer, "\n", true, false);
            } else {
                out += "<|im_start|>assistant\n" + answer;
            }
            out += "<|im_end|>\n";
        } else {
            fail(Status::invalid_argument, "message " + std::to_string(i) + " has role '" + m.role +
                                               "'; expected 'system', 'user' or 'assistant'");
        }
    }
    if (options.add_generation_prompt) {
        out += "<|im_start|>assistant\n";
        if (!options.enable_thinking) out += "<think>\n\n</think>\n\n";
        if (options.use_tts_template) out += "<|tts_bos|>";
    }
    return out;
}

}  // namespace minicpmo
