#include "llm/llm_context.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "core/llama_log.h"

namespace minicpmo {

namespace {

int default_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 4 : static_cast<int>(n);
}

ggml_type kv_type_from_name(const std::string & name) {
    static const std::pair<const char *, ggml_type> table[] = {
        {"f16", GGML_TYPE_F16}, {"f32", GGML_TYPE_F32}, {"bf16", GGML_TYPE_BF16},
        {"q8_0", GGML_TYPE_Q8_0}, {"q4_0", GGML_TYPE_Q4_0},
    };
    for (const auto & e : table) {
        if (name == e.first) return e.second;
    }
    fail(Status::invalid_argument, "unknown kv_cache_type '" + name + "' (known: f16, f32, bf16, q8_0, q4_0)");
}

// An LLM wholly on the CPU decodes without ggml's fused flash attention where it can: that kernel
// decodes one token ever slower as the cache grows. Measured on a Qwen3-0.6B shape, 2 threads, Intel
// Xeon (llama-bench -fa 1 / -fa 0, tokens/s): decode at depth 0 35 / 32, at 300 26 / 30, at 2000
// 11.6 / 20.1; a duplex conversation's speaking unit (12 tokens) at 2300 positions 1.32 / 0.75 s.
// Prompts lose less (pp512 at depth 0 302 / 254). The plain path keeps the attention scores of a
// micro-batch, n_ubatch x n_ctx x n_head floats, in its compute buffer (twice: scores and softmax),
// so micro-batches shrink to stay within this budget, and where not even 64 rows fit (very long
// contexts) the fused op stays. A quantized V cache needs the fused op.
constexpr size_t kPlainScoresBudget = size_t(256) << 20;
constexpr uint32_t kPlainMinUbatch = 64;

// The micro-batch of the plain path, or 0 where the fused op stays
uint32_t plain_attention_ubatch(const LlmModel & model, const llama_context_params & cp) {
    const bool float_cache = cp.type_k == GGML_TYPE_F16 || cp.type_k == GGML_TYPE_BF16;
    if (model.layers_on_device() || !float_cache) return 0;
    const size_t per_row = size_t(2) * cp.n_ctx * static_cast<size_t>(llama_model_n_head(model.get())) * sizeof(float);
    const uint32_t rows = static_cast<uint32_t>(std::min<size_t>(cp.n_ubatch, kPlainScoresBudget / std::max<size_t>(per_row, 1)));
    return rows >= std::min(kPlainMinUbatch, cp.n_ubatch) ? rows : 0;
}

}  // namespace

LlmContext::LlmContext(const LlmModel & model, const LlmContextParams & params) : model_(model) {
    if (params.n_ctx < 16) fail(Status::invalid_argument, "n_ctx must be at least 16, got " + std::to_string(params.n_ctx));
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = params.n_ctx;
    n_batch_ = std::max<uint32_t>(1, std::min(params.n_batch, params.n_ctx));
    cp.n_batch = n_batch_;
    cp.n_ubatch = n_batch_;
    const int threads = params.n_threads > 0 ? params.n_threads : default_threads();
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    // hidden states are per token (the speech decoder reads them); never pooled
    cp.pooling_type = LLAMA_POOLING_TYPE_NONE;
    cp.embeddings = false;
    // sequence 1 is a scratch sequence for replace_range() (the duplex "context" window re-prefills
    // a span in the middle of the cache); one unified cell pool keeps n_ctx for sequence 0
    cp.n_seq_max = 2;
    cp.kv_unified = true;
    cp.type_k = kv_type_from_name(params.kv_cache_type);
    cp.type_v = cp.type_k;
    // ggml's CPU flash attention rounds Q and accumulates V in F16 even with an F32 cache; an F32
    // cache is asked for exact results, so it takes the plain attention path
    if (cp.type_k == GGML_TYPE_F32) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (const uint32_t ubatch = plain_attention_ubatch(model, cp); ubatch > 0) {
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.n_ubatch = ubatch;
    }
    take_llama_error();
    {
        // libllama reports its scheduler's plan once: "graph...: nodes = N, splits = P[ / T], ..."
        // (P for a prompt batch, T for one token when they differ)
        LlamaLogCapture plan([this](const std::string & line) {
            const size_t at = line.find("splits = ");
            if (at == std::string::npos || line.find("graph") == std::string::npos) return;
            const char * p = line.c_str() + at + std::strlen("splits = ");
            char * end = nullptr;
            graph_splits_prompt_ = static_cast<int>(std::strtol(p, &end, 10));
            graph_splits_token_ = graph_splits_prompt_;
            if (end && std::strncmp(end, " / ", 3) == 0) graph_splits_token_ = static_cast<int>(std::strtol(end + 3, nullptr, 10));
        });
        ctx_ = llama_init_from_model(model.get(), cp);
    }
    if (!ctx_) {
        const std::string why = take_llama_error();
        fail(Status::internal, "cannot create an LLM context of " + std::to_string(params.n_ctx) + " tokens" +
                                   (why.empty() ? "" : ": " + why));
    }
    n_embd_ = model.n_embd();
    n_vocab_ = model.n_vocab();
}

LlmContext::~LlmContext() {
    if (ctx_) llama_free(ctx_);
}

int LlmContext::n_ctx() const { return static_cast<int>(llama_n_ctx(ctx_)); }

void LlmContext::set_n_threads(int n_threads) {
    const int t = n_threads > 0 ? n_threads : default_threads();
    llama_set_n_threads(ctx_, t, t);
}

void LlmContext::check_fits(size_t n) const {
    if (static_cast<size_t>(n_past_) + n > static_cast<size_t>(n_ctx())) {
        fail(Status::context_full, "input of " + std::to_string(n) + " tokens does not fit in the context: " +
                                       std::to_string(n_past_) + " of " + std::to_string(n_ctx()) +
                                       " positions are in use (raise n_ctx or reset the session)");
    }
}

void LlmContext::decode_tokens(const llama_token * tokens, size_t n, Outputs outputs, bool want_hidden) {
    for (size_t i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab_) {
            fail(Status::invalid_argument, "token id " + std::to_string(tokens[i]) + " is outside the vocabulary (0.." +
                                               std::to_string(n_vocab_ - 1) + ")");
        }
    }
    decode_batches(tokens, nullptr, n, outputs, want_hidden);
}

void LlmContext::decode_embeddings(const float * embd, size_t n, Outputs outputs, bool want_hidden) {
    decode_batches(nullptr, embd, n, outputs, want_hidden);
}

void LlmContext::decode_batches(const llama_token * tokens, const float * embd, size_t n, Outputs outputs,
                                bool want_hidden) {
    n_outputs_ = 0;
    outputs_in_llama_ = false;
    logits_.clear();
    hidden_.clear();
    if (n == 0) return;
    check_fits(n);
    llama_set_embeddings(ctx_, want_hidden);

    const bool copy_out = outputs == Outputs::all;
    if (copy_out) {
        logits_.reserve(n * static_cast<size_t>(n_vocab_));
        if (want_hidden) hidden_.reserve(n * static_cast<size_t>(n_embd_));
    }
    llama_batch batch = llama_batch_init(static_cast<int32_t>(n_batch_), embd ? n_embd_ : 0, 1);
    size_t done = 0;
    while (done < n) {
        const size_t m = std::min<size_t>(n_batch_, n - done);
        batch.n_tokens = static_cast<int32_t>(m);
        for (size_t j = 0; j < m; ++j) {
            if (tokens) batch.token[j] = tokens[done + j];
            batch.pos[j] = n_past_ + static_cast<llama_pos>(j);
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            const bool last = done + j == n - 1;
            batch.logits[j] = outputs == Outputs::all || (outputs == Outputs::last && last);
        }
        if (embd) {
            std::memcpy(batch.embd, embd + done * static_cast<size_t>(n_embd_), m * n_embd_ * sizeof(float));
        }
        take_llama_error();
        const int32_t rc = llama_decode(ctx_, batch);
        if (rc != 0) {
            llama_batch_free(batch);
            // a failed batch may have left part of its tokens in the cache: drop them
            llama_memory_seq_rm(llama_get_memory(ctx_), 0, n_past_, -1);
            const std::string why = take_llama_error();
            fail(rc == 2 ? Status::cancelled : Status::internal,
                 "llama_decode failed with code " + std::to_string(rc) + (why.empty() ? "" : ": " + why));
        }
        if (copy_out) {
            for (size_t j = 0; j < m; ++j) {
                const float * l = llama_get_logits_ith(ctx_, static_cast<int32_t>(j));
                logits_.insert(logits_.end(), l, l + n_vocab_);
                if (want_hidden) {
                    const float * h = llama_get_embeddings_ith(ctx_, static_cast<int32_t>(j));
                    if (!h) fail(Status::internal, "libllama returned no hidden state");
                    hidden_.insert(hidden_.end(), h, h + n_embd_);
                }
            }
        }
        n_past_ += static_cast<int>(m);
        done += m;
    }
    llama_batch_free(batch);
    if (outputs == Outputs::all) {
        n_outputs_ = static_cast<int>(n);
    } else if (outputs == Outputs::last) {
        n_outputs_ = 1;
        outputs_in_llama_ = true;
        if (want_hidden) {
            const float * h = llama_get_embeddings_ith(ctx_, -1);
            if (!h) fail(Status::internal, "libllama returned no hidden state");
            hidden_.assign(h, h + n_embd_);
        }
    }
}

const float * LlmContext::logits(int i) const {
    if (n_outputs_ == 0) fail(Status::internal, "no logits: the last decode requested no outputs");
    if (i < 0) i = n_outputs_ - 1;
    if (i >= n_outputs_) fail(Status::invalid_argument, "output index out of range");
    if (outputs_in_llama_) return llama_get_logits_ith(ctx_, -1);
    return logits_.data() + static_cast<size_t>(i) * n_vocab_;
}

const float * LlmContext::hidden(int i) const {
    if (i < 0) i = n_outputs_ - 1;
    if (hidden_.empty() || i < 0 || i >= n_outputs_) {
        fail(Status::internal, "no hidden state: the last decode did not request hidden states");
    }
    if (outputs_in_llama_) return hidden_.data();
    return hidden_.data() + static_cast<size_t>(i) * n_embd_;
}

void LlmContext::truncate(int pos) {
    if (pos < 0) pos = 0;
    if (pos >= n_past_) return;
    llama_memory_seq_rm(llama_get_memory(ctx_), 0, pos, -1);
    n_past_ = pos;
    n_outputs_ = 0;
}

void LlmContext::remove_range(int p0, int p1) {
    p0 = std::max(0, p0);
    p1 = std::min(p1, n_past_);
    if (p0 >= p1) return;
    llama_memory_t mem = llama_get_memory(ctx_);
    llama_memory_seq_rm(mem, 0, p0, p1);
    llama_memory_seq_add(mem, 0, p1, -1, -(p1 - p0));  // RoPE-shifts the later keys
    n_past_ -= p1 - p0;
    n_outputs_ = 0;
}

void LlmContext::replace_range(int p0, int p1, const llama_token * tokens, size_t n) {
    if (p0 < 0 || p1 < p0 || p1 > n_past_) {
        fail(Status::invalid_argument, "cannot replace positions [" + std::to_string(p0) + ", " + std::to_string(p1) +
                                           ") of a cache of " + std::to_string(n_past_) + " positions");
    }
    const int tail = n_past_ - p1;
    const int new_tail_start = p0 + static_cast<int>(n);
    if (static_cast<size_t>(p0) + n + static_cast<size_t>(tail) > static_cast<size_t>(n_ctx())) {
        fail(Status::context_full, "replacing " + std::to_string(p1 - p0) + " positions by " + std::to_string(n) +
                                       " does not fit in the context of " + std::to_string(n_ctx()));
    }
    for (size_t i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab_) {
            fail(Status::invalid_argument, "token id " + std::to_string(tokens[i]) + " is outside the vocabulary");
        }
    }
    llama_memory_t mem = llama_get_memory(ctx_);
    // libllama only appends after a sequence's last position, so the tail is parked in scratch
    // sequence 1 while sequence 0 ends at p0 and takes the new tokens (they see [0, p0) only)
    constexpr llama_seq_id kScratch = 1;
    if (tail > 0) llama_memory_seq_cp(mem, 0, kScratch, p1, -1);
    llama_memory_seq_rm(mem, 0, p0, -1);
    const int end = n_past_;
    n_past_ = p0;
    try {
        if (n > 0) decode_batches(tokens, nullptr, n, Outputs::none, false);
    } catch (...) {
        // the cache no longer matches anything: start empty rather than half edited
        llama_memory_clear(mem, true);
        n_past_ = 0;
        n_outputs_ = 0;
        throw;
    }
    if (tail > 0) {
        // the tail keeps its K/V; its keys are re-rotated for the new positions (applied by libllama
        // before the next decode), then it returns to sequence 0
        if (new_tail_start != p1) llama_memory_seq_add(mem, kScratch, p1, end, new_tail_start - p1);
        llama_memory_seq_cp(mem, kScratch, 0, new_tail_start, -1);
        llama_memory_seq_rm(mem, kScratch, -1, -1);
    }
    n_past_ = new_tail_start + tail;
    n_outputs_ = 0;
}

void LlmContext::clear() {
    llama_memory_clear(llama_get_memory(ctx_), true);
    n_past_ = 0;
    n_outputs_ = 0;
}

}  // namespace minicpmo
