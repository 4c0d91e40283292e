#include "session/session.h"

#include <algorithm>

#include "core/error.h"

namespace minicpmo {

namespace {
// marks a cache position filled from embeddings: it never equals a prompt token, so prefix reuse
// stops there
constexpr llama_token kEmbeddingSlot = -1;
}  // namespace

const char * finish_reason_name(FinishReason r) {
    switch (r) {
        case FinishReason::none: return "";
        case FinishReason::stop: return "stop";
        case FinishReason::length: return "length";
        case FinishReason::context: return "context";
        case FinishReason::cancelled: return "cancelled";
    }
    return "";
}

namespace {

constexpr int64_t kMaxThreads = 512;     // GGML_MAX_N_THREADS
constexpr int64_t kMinBatch = 8;         // libllama aborts on 1; tiny batches only slow prompts down
constexpr int64_t kMaxBatch = 65536;

void check_range(const char * name, int64_t v, int64_t lo, int64_t hi, const std::string & note) {
    if (v < lo || v > hi) {
        fail(Status::invalid_argument, std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                                           std::to_string(hi) + "]" + note + ", got " + std::to_string(v));
    }
}

const LlmContextParams & checked(const LlmModel & model, const LlmContextParams & p) {
    check_context_params(model, p.n_ctx, p.n_threads, p.n_batch);
    return p;
}

}  // namespace

void check_n_threads(int64_t n_threads) {
    check_range("n_threads", n_threads, 0, kMaxThreads, " (0 = all cores)");
}

void check_context_params(const LlmModel & model, int64_t n_ctx, int64_t n_threads, int64_t n_batch) {
    const int64_t train = model.n_ctx_train() > 0 ? model.n_ctx_train() : 16;
    check_range("n_ctx", n_ctx, 16, std::max<int64_t>(16, train), " (16 to the model's training context)");
    check_n_threads(n_threads);
    check_range("n_batch", n_batch, kMinBatch, kMaxBatch, "");
}

Session::Session(std::shared_ptr<const LlmModel> model, const LlmContextParams & params)
    : model_(std::move(model)), ctx_(std::make_unique<LlmContext>(*model_, checked(*model_, params))) {}

const LlmModel & Session::model() const {
    if (!model_) fail(Status::closed, "the session is closed");
    return *model_;
}

LlmContext & Session::context() {
    if (!ctx_) fail(Status::closed, "the session is closed");
    return *ctx_;
}

const LlmContext & Session::context() const {
    if (!ctx_) fail(Status::closed, "the session is closed");
    return *ctx_;
}

void Session::close_llm() {
    take_over();
    sampler_.reset();
    ctx_.reset();
    model_.reset();
    kv_tokens_ = {};
    kv_keys_ = {};
    generated_ = {};
    generated_hidden_ = {};
    guard_.close();
}

void Session::take_over() {
    active_ = false;
    ++epoch_;
}

void Session::cancel() {
    if (active_.exchange(false)) finish_ = FinishReason::cancelled;
}

void Session::end_generation(FinishReason why) {
    const auto hold = enter("end_generation");
    if (active_.exchange(false)) finish_ = why;
}

void Session::reset() {
    const auto hold = enter("reset");
    ctx_->clear();
    kv_tokens_.clear();
    kv_keys_.clear();
    generated_.clear();
    take_over();
    logits_ready_ = false;
}

PrefillStats Session::prefill(const std::vector<llama_token> & prompt) {
    const auto hold = enter("prefill");
    return prefill(prompt, std::vector<uint64_t>(prompt.size(), 0), {});
}

size_t Session::reusable_prefix(const std::vector<llama_token> & prompt, const std::vector<uint64_t> & keys) const {
    size_t common = 0;
    const size_t limit = std::min(kv_tokens_.size(), prompt.size());
    while (common < limit && kv_tokens_[common] == prompt[common] && kv_keys_[common] == keys[common]) ++common;
    if (common == prompt.size() && common > 0) --common;  // re-decode the last position to get its logits
    return common;
}

PrefillStats Session::prefill(const std::vector<llama_token> & prompt, const std::vector<uint64_t> & keys,
                              const std::vector<EmbeddingSpan> & spans) {
    const auto hold = enter("prefill");
    if (prompt.empty()) fail(Status::invalid_argument, "the prompt is empty");
    if (keys.size() != prompt.size()) fail(Status::internal, "prompt keys do not match the prompt length");
    if (prompt.size() > static_cast<size_t>(ctx_->n_ctx())) {
        fail(Status::context_full, "prompt of " + std::to_string(prompt.size()) +
                                       " tokens does not fit in the context of " + std::to_string(ctx_->n_ctx()) +
                                       " tokens (raise n_ctx)");
    }
    size_t prev_end = 0;
    for (const EmbeddingSpan & sp : spans) {
        if (sp.n == 0 || sp.pos < prev_end || sp.pos + sp.n > prompt.size()) {
            fail(Status::internal, "embedding spans overlap or lie outside the prompt");
        }
        prev_end = sp.pos + sp.n;
    }
    take_over();
    const size_t common = reusable_prefix(prompt, keys);
    for (const EmbeddingSpan & sp : spans) {
        if (sp.pos + sp.n > common && !sp.rows) fail(Status::internal, "embedding rows missing for a new span");
    }

    ctx_->truncate(static_cast<int>(common));
    kv_tokens_.resize(common);
    kv_keys_.resize(common);
    logits_ready_ = false;
    // decode [common, end) as alternating runs of tokens and embedding rows
    size_t pos = common;
    size_t next_span = 0;
    const size_t n_embd = static_cast<size_t>(ctx_->n_embd());
    while (pos < prompt.size()) {
        while (next_span < spans.size() && spans[next_span].pos + spans[next_span].n <= pos) ++next_span;
        const bool in_span = next_span < spans.size() && spans[next_span].pos <= pos;
        size_t end;
        if (in_span) {
            const EmbeddingSpan & sp = spans[next_span];
            end = sp.pos + sp.n;
            ctx_->decode_embeddings(sp.rows + (pos - sp.pos) * n_embd, end - pos,
                                   end == prompt.size() ? Outputs::last : Outputs::none);
        } else {
            end = next_span < spans.size() ? spans[next_span].pos : prompt.size();
            ctx_->decode_tokens(prompt.data() + pos, end - pos, end == prompt.size() ? Outputs::last : Outputs::none);
        }
        kv_tokens_.insert(kv_tokens_.end(), prompt.begin() + pos, prompt.begin() + end);
        kv_keys_.insert(kv_keys_.end(), keys.begin() + pos, keys.begin() + end);
        pos = end;
    }
    logits_ready_ = true;
    last_prefill_ = PrefillStats{static_cast<int>(common), static_cast<int>(prompt.size() - common)};
    return last_prefill_;
}

PrefillStats Session::append_text(const std::string & text) {
    const auto hold = enter("append_text");
    const std::vector<llama_token> add = model_->tokenize(text, true);
    if (add.empty()) fail(Status::invalid_argument, "the text to prefill is empty");
    std::vector<llama_token> prompt = kv_tokens_;
    std::vector<uint64_t> keys = kv_keys_;  // keeps cached image/audio positions as they are
    prompt.insert(prompt.end(), add.begin(), add.end());
    keys.insert(keys.end(), add.size(), 0);
    return prefill(prompt, keys, {});
}

void Session::append_embeddings(const float * embd, size_t n) {
    const auto hold = enter("append_embeddings");
    if (n == 0) fail(Status::invalid_argument, "no embeddings to prefill");
    take_over();
    logits_ready_ = false;
    ctx_->decode_embeddings(embd, n, Outputs::last);
    kv_tokens_.insert(kv_tokens_.end(), n, kEmbeddingSlot);
    kv_keys_.insert(kv_keys_.end(), n, 0);
    logits_ready_ = true;
}

void Session::append_tokens(const llama_token * ids, size_t n, bool want_hidden) {
    const auto hold = enter("append_tokens");
    if (n == 0 || !ids) fail(Status::invalid_argument, "no tokens to append");
    const int n_vocab = model_->n_vocab();
    for (size_t i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= n_vocab) {
            fail(Status::invalid_argument, "token id " + std::to_string(ids[i]) + " is outside the vocabulary of " +
                                               std::to_string(n_vocab));
        }
    }
    take_over();
    logits_ready_ = false;
    ctx_->decode_tokens(ids, n, Outputs::last, want_hidden);
    kv_tokens_.insert(kv_tokens_.end(), ids, ids + n);
    kv_keys_.insert(kv_keys_.end(), n, 0);
    logits_ready_ = true;
}

void Session::remove_range(int p0, int p1) {
    const auto hold = enter("remove_range");
    if (p0 < 0 || p1 > n_past() || p0 >= p1) {
        fail(Status::invalid_argument, "cannot remove positions [" + std::to_string(p0) + ", " + std::to_string(p1) +
                                           ") from a cache of " + std::to_string(n_past()) + " positions");
    }
    take_over();
    logits_ready_ = false;  // the last position's logits no longer describe the cache
    ctx_->remove_range(p0, p1);
    kv_tokens_.erase(kv_tokens_.begin() + p0, kv_tokens_.begin() + p1);
    kv_keys_.erase(kv_keys_.begin() + p0, kv_keys_.begin() + p1);
}

void Session::replace_range(int p0, int p1, const std::vector<llama_token> & ids) {
    const auto hold = enter("replace_range");
    take_over();
    logits_ready_ = false;
    try {
        ctx_->replace_range(p0, p1, ids.data(), ids.size());
    } catch (...) {
        if (ctx_->n_past() == 0) {  // the context gave up its cache
            kv_tokens_.clear();
            kv_keys_.clear();
        }
        throw;
    }
    kv_tokens_.erase(kv_tokens_.begin() + p0, kv_tokens_.begin() + p1);
    kv_tokens_.insert(kv_tokens_.begin() + p0, ids.begin(), ids.end());
    kv_keys_.erase(kv_keys_.begin() + p0, kv_keys_.begin() + p1);
    kv_keys_.insert(kv_keys_.begin() + p0, ids.size(), 0);
}

void Session::begin_generation(const GenerateParams & params) {
    const auto hold = enter("begin_generation");
    if (!logits_ready_) fail(Status::invalid_argument, "nothing to generate from: prefill a prompt first");
    if (params.max_new_tokens < 0) {
        fail(Status::invalid_argument, "max_new_tokens must be >= 0, got " + std::to_string(params.max_new_tokens));
    }
    sampler_ = std::make_unique<Sampler>(params.sampling, model_->n_vocab());
    take_over();
    generated_.clear();
    generated_hidden_.clear();
    capture_hidden_ = params.capture_hidden;
    utf8_ = Utf8Stream();
    max_new_tokens_ = params.max_new_tokens;
    finish_ = max_new_tokens_ > 0 ? FinishReason::none : FinishReason::length;
    active_ = max_new_tokens_ > 0;
}

bool Session::step(std::string & piece) {
    const auto hold = enter("step");
    piece.clear();
    if (!active_) {
        piece = utf8_.flush();
        return false;
    }
    if (!logits_ready_) fail(Status::internal, "generation lost its logits");
    const llama_token t = sampler_->sample(ctx_->logits(-1), generated_);
    generated_.push_back(t);
    if (model_->is_eog(t)) {
        // the terminator is not fed back: the next prompt renders <|im_end|> itself
        if (active_.exchange(false)) finish_ = FinishReason::stop;
        piece = utf8_.flush();
        return !piece.empty();
    }
    piece = utf8_.push(model_->token_text(t));
    const bool last = static_cast<int>(generated_.size()) >= max_new_tokens_;
    // a full cache ends the reply with this token handed out but not fed back (nothing is lost;
    // the next prompt needs room anyway)
    const bool full = ctx_->n_past() >= ctx_->n_ctx();
    if (last || full) {
        if (active_.exchange(false)) finish_ = last ? FinishReason::length : FinishReason::context;
        piece += utf8_.flush();
    }
    logits_ready_ = false;
    if (full) return true;
    // the token goes into the cache either way, so a reply cut at the limit is complete there too;
    // its logits are only needed when generation goes on
    ctx_->decode_tokens(&t, 1, last && !capture_hidden_ ? Outputs::none : Outputs::last, capture_hidden_);
    if (capture_hidden_) {
        const float * h = ctx_->hidden(0);
        generated_hidden_.insert(generated_hidden_.end(), h, h + ctx_->n_embd());
    }
    kv_tokens_.push_back(t);
    kv_keys_.push_back(0);
    logits_ready_ = !last;
    return true;
}

}  // namespace minicpmo
