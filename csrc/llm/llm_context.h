// One libllama context (KV cache) over an LlmModel: decodes token ids or injected embeddings at the
// current position, returns logits and final-norm hidden states, and edits KV ranges.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "llama.h"
#include "llm/llm_model.h"

namespace minicpmo {

struct LlmContextParams {
    uint32_t n_ctx = 8192;
    int n_threads = 0;  // 0 = all cores
    uint32_t n_batch = 512;
    // KV cache precision: "f16" (llama.cpp's default, half the memory), "f32" (exact parity with
    // the reference), "bf16", "q8_0", "q4_0"
    std::string kv_cache_type = "f16";
};

enum class Outputs { none, last, all };

class LlmContext {
public:
    LlmContext(const LlmModel & model, const LlmContextParams & params);
    ~LlmContext();
    LlmContext(const LlmContext &) = delete;
    LlmContext & operator=(const LlmContext &) = delete;

    int n_past() const { return n_past_; }
    // Scheduler splits of the LLM graph for a prompt batch and for one token, as libllama planned
    // them at creation (-1 if it did not say): 1 when every layer runs on one backend.
    int graph_splits_prompt() const { return graph_splits_prompt_; }
    int graph_splits_token() const { return graph_splits_token_; }
    int n_ctx() const;
    int n_embd() const { return n_embd_; }
    int n_vocab() const { return n_vocab_; }
    void set_n_threads(int n_threads);

    // Appends at positions n_past.. and advances n_past. Throws context_full before touching the
    // cache when the input does not fit. `want_hidden` also keeps the final-norm hidden states.
    void decode_tokens(const llama_token * tokens, size_t n, Outputs outputs, bool want_hidden = false);
    // Same with embeddings (n rows of n_embd floats) in place of token ids, e.g. image/audio features.
    void decode_embeddings(const float * embd, size_t n, Outputs outputs, bool want_hidden = false);

    // Results of the last decode call; `i` counts its outputs (0-based), -1 = the last one.
    int n_outputs() const { return n_outputs_; }
    const float * logits(int i) const;
    const float * hidden(int i) const;

    void truncate(int pos);                 // drop KV positions [pos, n_past)
    void remove_range(int p0, int p1);      // drop [p0, p1) and shift later positions left
    // Drops [p0, p1) and decodes `tokens` at p0.. seeing only [0, p0); the positions after p1 keep
    // their K/V and move to follow the new tokens (keys re-rotated). No outputs are kept.
    void replace_range(int p0, int p1, const llama_token * tokens, size_t n);
    void clear();

private:
    int graph_splits_prompt_ = -1;
    int graph_splits_token_ = -1;
    void check_fits(size_t n) const;
    void decode_batches(const llama_token * tokens, const float * embd, size_t n, Outputs outputs, bool want_hidden);

    const LlmModel & model_;
    llama_context * ctx_ = nullptr;
    int n_embd_ = 0;
    int n_vocab_ = 0;
    uint32_t n_batch_ = 512;
    int n_past_ = 0;
    int n_outputs_ = 0;
    bool outputs_in_llama_ = false;  // last-only outputs are read straight from llama's buffers
    std::vector<float> logits_;      // n_outputs x n_vocab when outputs were copied
    std::vector<float> hidden_;      // n_outputs x n_embd
};

}  // namespace minicpmo
