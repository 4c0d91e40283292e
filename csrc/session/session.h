// A conversation over one LLM context: keeps what is in the KV cache as token ids, reuses the
// longest common prefix when the next prompt arrives (earlier turns are never prefilled again),
// and generates step by step so Python generators, C callbacks and the CLI share one loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/utf8.h"
#include "llm/chat_prompt.h"
#include "llm/llm_context.h"
#include "llm/llm_model.h"
#include "sampling/llm_sampler.h"
#include "session/call_guard.h"

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
// Why the last generation ended.
enum class FinishReason {
    none,       // nothing generated yet, or still generating
    stop,       // the model ended its reply (a terminator)
    length,     // max_new_tokens reached
    context,    // the context window is full: the last token was handed out but not fed back
    cancelled,  // cancel() or a callback returning false
};
const char * finish_reason_name(FinishReason r);  // "stop", "length", "context", "cancelled", ""

// Checked context settings, shared by every front end (bounds in README "Parameters"): n_ctx 16 ..
// the model's training context, n_threads 0 (all cores) .. 512 (ggml's thread limit), n_batch
// 8 .. 65536 (libllama aborts on a batch of 1; above n_ctx a decode call takes n_ctx tokens).
// Throws invalid_argument naming the parameter, its value and the range. Wide types so that a
// front end can pass what the user gave before narrowing it.
void check_context_params(const LlmModel & model, int64_t n_ctx, int64_t n_threads, int64_t n_batch);
// n_threads alone (0 = all cores, else 1 .. 512).
void check_n_threads(int64_t n_threads);

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

    // Every entry point below holds this for its duration (call_guard.h); front ends hold it
    // around a sequence of calls that must not be interleaved (a C API call, a Python request).
    CallGuard::Hold enter(const char * what) const { return guard_.enter(what); }
    CallGuard & guard() const { return guard_; }
    bool closed() const { return guard_.closed(); }

    const LlmModel & model() const;
    LlmContext & context();
    const LlmContext & context() const;
    int n_past() const { return ctx_ ? ctx_->n_past() : 0; }
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
    // Returns false when generation has ended (terminator, max_new_tokens, a full context or
    // cancel()). A full context ends it with the sampled token handed out but not fed back.
    bool step(std::string & piece);
    // Stops generating; safe from any thread (the next step() returns false).
    void cancel();
    // Ends the generation as if the model had stopped (a stream that ends on its own terminator).
    void end_generation(FinishReason why);
    FinishReason finish_reason() const { return finish_.load(); }
    // Changes whenever a call takes the cache or the generation state over (prefill, append,
    // remove, reset, begin_generation, close): a reply stream that finds it changed was abandoned.
    uint64_t epoch() const { return epoch_; }

protected:
    // Frees the LLM context and the model reference (the caller holds the guard); every later
    // call fails with Status::closed.
    void close_llm();

private:
    // Ends a running generation and moves the epoch on (the caller holds the guard).
    void take_over();

    mutable CallGuard guard_;
    std::shared_ptr<const LlmModel> model_;
    std::unique_ptr<LlmContext> ctx_;
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
    std::atomic<bool> active_{false};
    std::atomic<FinishReason> finish_{FinishReason::none};
    bool logits_ready_ = false;  // logits of the last KV position are available
    uint64_t epoch_ = 0;
};

}  // namespace minicpmo
