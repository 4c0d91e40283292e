// The "context" sliding window of a duplex conversation (spec §6.5): instead of only forgetting the
// oldest units, it keeps what the model said in them as text inside the system prompt.
//
// The rule, as read in the official code (OpenBMB/MiniCPM-o-Demo, MiniCPMO45/utils.py, class
// StreamDecoder: register_unit_end, enforce_window_with_context, _drop_unit_with_context,
// _extract_generated_text, _update_previous, _rebuild_cache_with_previous; and
// MiniCPMO45/modeling_minicpmo_unified.py, DuplexCapability.prepare / streaming_generate /
// finalize_unit), in our words:
//  - prepare() registers the protected prefix (prefix text + reference audio) before the suffix
//    text is fed; the cache reads [prefix][suffix][units...].
//  - After each unit's </unit> the window runs: while more than max_units (24) units are in the
//    cache, the oldest one is dropped, one rebuild per dropped unit.
//  - What a dropped unit contributes: nothing when it was a listening unit; otherwise the tokens
//    it spoke (those fed after the decision token, terminators excluded), special tokens removed.
//  - "previous" = marker ids ("\n\nprevious: ", tokenized without special handling) + content.
//    The marker is added with the first non-empty contribution; later ones are appended; when the
//    content passes previous_max_tokens (500) only its last 500 tokens are kept (marker kept).
//  - Layout after a drop: [prefix][previous][suffix][remaining units]. The prefix K/V is kept;
//    previous + suffix are prefilled afresh after the prefix; the remaining units keep their K/V
//    and only have their keys re-rotated to their new positions (not recomputed).
//  - A drop that leaves "previous" unchanged (nothing said) only removes the unit's positions and
//    shifts the rest; recomputing identical previous + suffix tokens at identical positions, as the
//    reference does, gives the same cache.
#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include "llm/llm_model.h"
#include "session/session.h"

namespace minicpmo {

struct DuplexContextWindowParams {
    int max_units = 24;                           // context_max_units
    int previous_max_tokens = 500;                // context_previous_max_tokens (marker not counted)
    std::string previous_marker = "\n\nprevious: ";  // context_previous_marker
};

class DuplexContextWindow {
public:
    DuplexContextWindow(const LlmModel & model, const DuplexContextWindowParams & params);

    // A new conversation: the protected prefix holds [0, prefix_length); `suffix` follows it.
    void start(int prefix_length, std::vector<llama_token> suffix);
    // Protected positions: prefix + previous + suffix.
    int system_length() const;
    // A finished unit of `length` positions; `spoken` are the tokens it fed after its decision.
    void add_unit(int length, const std::vector<llama_token> & spoken, bool is_listen);
    // Drops the oldest units of `unit_lengths` (the session's registry, same order as add_unit)
    // while more than max_units remain, rebuilding the cache of `session` as described above.
    // Returns the positions of the dropped units.
    int enforce(Session & session, std::vector<int> & unit_lengths);

    // marker + content, empty until a dropped unit said something
    const std::vector<llama_token> & previous_tokens() const { return previous_; }
    const DuplexContextWindowParams & params() const { return params_; }

private:
    bool is_special(llama_token t) const;

    const LlmModel & model_;
    DuplexContextWindowParams params_;
    std::vector<llama_token> marker_;
    std::unordered_set<llama_token> named_specials_;  // the reference's extra list of markup tokens
    int prefix_length_ = 0;
    std::vector<llama_token> suffix_;
    std::vector<llama_token> previous_;
    std::vector<std::vector<llama_token>> unit_content_;  // per unit in the cache, what it would add
};

}  // namespace minicpmo
