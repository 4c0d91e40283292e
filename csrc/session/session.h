// A conversation over one LLM context: keeps what is in the KV cache as token ids, reuses the
// longest common prefix when the next prompt arrives (earlier turns are never prefilled again),
// and generates step by step so Python generators, C callbacks and the CLI share one loop.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/utf8.h"
#include "llm/chat_prompt.h"
#include "llm/llm_context.h"
#include "llm/llm_model.h"
#include "llm/sampler.h"

namespace minicpmo {

struct GenerateParams {
    SamplingParams sampling;
    int max_new_tokens = 4096;
    // keep the LLM final-norm hidden state of every generated token that is fed back (the speech
    // decoder conditions on them); see Session::generated_hidden()
    bool capture_hidden = false;
};

// Rows that replace the token embeddings of prompt positions [pos, pos + n) (image/audio
// features). `rows` holds n x n_embd floats; it may be null when the span lies inside the part of
// the prompt the cache already holds.
struct EmbeddingSpan {
    size_t pos = 0;
    size_t n = 0;
    const float * rows = nullptr;
};

struct PrefillStats {
    int n_reused = 0;     // prompt tokens already in the KV cache
    int n_prefilled = 0;  // prompt tokens decoded by this call
};

class Session {
public:
    Session(std::shared_ptr<const LlmModel> model, const LlmContextParams & params);

    const LlmModel & model() const { return *model_; }
    LlmContext & context() { return ctx_; }
    int n_past() const { return ctx_.n_past(); }
    const std::vector<llama_token> & kv_tokens() const { return kv_tokens_; }
    const std::vector<uint64_t> & kv_keys() const { return kv_keys_; }
    const PrefillStats & last_prefill() const { return last_prefill_; }
    const std::vector<llama_token> & last_generated() const { return generated_; }
    // With GenerateParams::capture_hidden: one n_embd row per fed generated token, in order (the
    // hidden state at the position where that token is the input; a terminator is never fed).
    const std::vector<float> & generated_hidden() const { return generated_hidden_; }

    void reset();

    // Makes the KV cache hold exactly `prompt`, keeping the common prefix with what is there and
    // decoding the rest; the last prompt token is always (re)decoded so its logits are fresh.
    PrefillStats prefill(const std::vector<llama_token> & prompt);
    // Multimodal prompt: `keys` (one per position) is 0 for text and identifies the content of
    // embedding positions (e.g. a hash of the image and the row), so a cached image is reused only
    // when it is the same image. Positions covered by `spans` are decoded from their rows.
    PrefillStats prefill(const std::vector<llama_token> & prompt, const std::vector<uint64_t> & keys,
                         const std::vector<EmbeddingSpan> & spans);
    // How many leading positions of (prompt, keys) the cache already holds and prefill would keep.
    size_t reusable_prefix(const std::vector<llama_token> & prompt, const std::vector<uint64_t> & keys) const;
    // Appends injected embeddings (n rows of n_embd floats, e.g. image/audio features) after the
    // cache; they occupy positions but have no token id (recorded as -1, never reused by prefill).
    void append_embeddings(const float * embd, size_t n);
    // Appends token ids after the cache as they are (no prefix matching, no tokenizer): the duplex
    // protocol feeds its control tokens one by one. The last one's logits are kept, and with
    // `want_hidden` its final-norm hidden state too (context().hidden(0)).
    void append_tokens(const llama_token * ids, size_t n, bool want_hidden = false);
    // Drops cache positions [p0, p1) and shifts the later ones left (RoPE re-rotated by libllama).
    void remove_range(int p0, int p1);
    // Replaces positions [p0, p1) by `ids`, decoded afresh after [0, p0) (they do not see what
    // follows); the later positions keep their K/V and move to follow them (keys re-rotated).
    void replace_range(int p0, int p1, const std::vector<llama_token> & ids);
    // Appends raw text (special tokens parsed) after what is already in the cache.
    PrefillStats append_text(const std::string & text);

    // Step-wise generation from the logits of the last decoded position.
    void begin_generation(const GenerateParams & params);
    // Produces the next piece of valid UTF-8 text (may be empty while a character is incomplete).
    // Returns false when generation has ended (terminator, max_new_tokens or cancel()).
    bool step(std::string & piece);
    void cancel() { active_ = false; }

    // Runs step() to the end; `on_piece` returning false stops early.
    std::string generate(const GenerateParams & params, const std::function<bool(const std::string &)> & on_piece);
    // Renders `messages` with the template, prefills and generates; `on_piece` returning false stops.
    std::string chat(const std::vector<ChatMessage> & messages, const ChatTemplateOptions & options,
                     const GenerateParams & params, const std::function<bool(const std::string &)> & on_piece);

private:
    std::shared_ptr<const LlmModel> model_;
    LlmContext ctx_;
    std::vector<llama_token> kv_tokens_;  // token ids at positions 0..n_past-1
    std::vector<uint64_t> kv_keys_;       // content keys of those positions (0 = plain token)
    PrefillStats last_prefill_;

    // generation state
    std::unique_ptr<Sampler> sampler_;
    std::vector<llama_token> generated_;
    std::vector<float> generated_hidden_;
    bool capture_hidden_ = false;
    Utf8Stream utf8_;
    int max_new_tokens_ = 0;
    bool active_ = false;
    bool logits_ready_ = false;  // logits of the last KV position are available
};

}  // namespace minicpmo
