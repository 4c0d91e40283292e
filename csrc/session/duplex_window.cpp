#include "session/duplex_window.h"

#include "core/error.h"

namespace minicpmo {

namespace {
// markup the reference strips from a dropped unit's tokens besides the tokenizer's special tokens
// (which are the CONTROL tokens of our GGUF vocabulary)
constexpr Special kNamedSpecials[] = {
    Special::unit, Special::unit_end, Special::image, Special::image_end, Special::slice, Special::slice_end,
    Special::listen, Special::speak, Special::tts_bos, Special::tts_eos, Special::audio_start, Special::audio_end,
    Special::chunk_eos, Special::chunk_tts_eos, Special::turn_eos,
};
}  // namespace

DuplexContextWindow::DuplexContextWindow(const LlmModel & model, const DuplexContextWindowParams & params)
    : model_(model), params_(params) {
    if (params_.max_units < 1) {
        fail(Status::invalid_argument,
             "context window: max units must be >= 1, got " + std::to_string(params_.max_units));
    }
    if (params_.previous_max_tokens < 0) {
        fail(Status::invalid_argument, "context window: previous max tokens must be >= 0, got " +
                                           std::to_string(params_.previous_max_tokens));
    }
    marker_ = model_.tokenize(params_.previous_marker, false);
    for (const Special s : kNamedSpecials) named_specials_.insert(model_.special_token(s));
}

bool DuplexContextWindow::is_special(llama_token t) const {
    return llama_vocab_is_control(model_.vocab(), t) || named_specials_.count(t) > 0;
}

void DuplexContextWindow::start(int prefix_length, std::vector<llama_token> suffix) {
    prefix_length_ = prefix_length;
    suffix_ = std::move(suffix);
    previous_.clear();
    unit_content_.clear();
}

int DuplexContextWindow::system_length() const {
    return prefix_length_ + static_cast<int>(previous_.size() + suffix_.size());
}

void DuplexContextWindow::add_unit(int /*length*/, const std::vector<llama_token> & spoken, bool is_listen) {
    std::vector<llama_token> content;
    if (!is_listen) {
        for (llama_token t : spoken) {
            if (!is_special(t)) content.push_back(t);
        }
    }
    unit_content_.push_back(std::move(content));
}

int DuplexContextWindow::enforce(Session & session, std::vector<int> & unit_lengths) {
    if (unit_lengths.size() != unit_content_.size()) {
        fail(Status::internal, "context window: the unit registry is out of step with the cache");
    }
    int dropped = 0;
    while (static_cast<int>(unit_lengths.size()) > params_.max_units) {
        const int len = unit_lengths.front();
        const int unit_start = system_length();
        const std::vector<llama_token> content = std::move(unit_content_.front());
        unit_lengths.erase(unit_lengths.begin());
        unit_content_.erase(unit_content_.begin());
        dropped += len;
        if (content.empty()) {
            // "previous" stays as it is: only the unit goes, the later units move left
            session.remove_range(unit_start, unit_start + len);
            continue;
        }
        if (previous_.empty()) previous_ = marker_;
        previous_.insert(previous_.end(), content.begin(), content.end());
        const size_t cap = marker_.size() + static_cast<size_t>(params_.previous_max_tokens);
        if (previous_.size() > cap) {
            // keep the marker and the newest previous_max_tokens tokens
            previous_.erase(previous_.begin() + static_cast<std::ptrdiff_t>(marker_.size()),
                            previous_.end() - static_cast<std::ptrdiff_t>(params_.previous_max_tokens));
        }
        std::vector<llama_token> rebuilt = previous_;
        rebuilt.insert(rebuilt.end(), suffix_.begin(), suffix_.end());
        // old [previous][suffix][dropped unit] -> new [previous][suffix]; the rest follows
        session.replace_range(prefix_length_, unit_start + len, rebuilt);
    }
    return dropped;
}

}  // namespace minicpmo
