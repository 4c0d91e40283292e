#include "session/media_forward.h"

#include <algorithm>

#include "core/error.h"

namespace minicpmo {

namespace {

// Decodes positions [pos, pos + n) from tokens or rows, all kept as outputs, and appends them.
void decode_run(LlmContext & ctx, const llama_token * tokens, const float * rows, size_t n, bool want_logits,
                PromptForward & out) {
    if (rows) {
        ctx.decode_embeddings(rows, n, Outputs::all, true);
    } else {
        ctx.decode_tokens(tokens, n, Outputs::all, true);
    }
    if (want_logits) {
        const float * l = ctx.logits(0);
        out.logits.insert(out.logits.end(), l, l + n * static_cast<size_t>(ctx.n_vocab()));
    }
    const float * h = ctx.hidden(0);
    out.hidden.insert(out.hidden.end(), h, h + n * static_cast<size_t>(ctx.n_embd()));
}

}  // namespace

PromptForward forward_prompt(Session & session, const std::vector<llama_token> & tokens,
                             const std::vector<EmbeddingSpan> & spans, bool want_logits) {
    LlmContext & ctx = session.context();
    if (tokens.empty()) fail(Status::invalid_argument, "the prompt to forward is empty");
    if (tokens.size() > static_cast<size_t>(ctx.n_ctx())) {
        fail(Status::context_full, "prompt of " + std::to_string(tokens.size()) +
                                       " tokens does not fit in the context of " + std::to_string(ctx.n_ctx()) +
                                       " tokens (raise n_ctx)");
    }
    size_t prev_end = 0;
    for (const EmbeddingSpan & sp : spans) {
        if (sp.n == 0 || sp.pos < prev_end || sp.pos + sp.n > tokens.size() || !sp.rows) {
            fail(Status::internal, "embedding spans overlap, lie outside the prompt or have no rows");
        }
        prev_end = sp.pos + sp.n;
    }

    PromptForward out;
    out.tokens = tokens;
    out.is_media.assign(tokens.size(), 0);
    for (const EmbeddingSpan & sp : spans) std::fill_n(out.is_media.begin() + sp.pos, sp.n, uint8_t{1});
    const size_t n_vocab = static_cast<size_t>(ctx.n_vocab()), n_embd = static_cast<size_t>(ctx.n_embd());
    if (want_logits) out.logits.reserve(tokens.size() * n_vocab);
    out.hidden.reserve(tokens.size() * n_embd);

    session.reset();  // positions start at 0; the cache holds nothing a later prefill could reuse
    try {
        // alternating runs of tokens and rows, as Session::prefill decodes them
        size_t pos = 0;
        for (const EmbeddingSpan & sp : spans) {
            if (sp.pos > pos) decode_run(ctx, tokens.data() + pos, nullptr, sp.pos - pos, want_logits, out);
            decode_run(ctx, nullptr, sp.rows, sp.n, want_logits, out);
            pos = sp.pos + sp.n;
        }
        if (pos < tokens.size()) decode_run(ctx, tokens.data() + pos, nullptr, tokens.size() - pos, want_logits, out);
    } catch (...) {
        session.reset();
        throw;
    }
    session.reset();
    return out;
}

PromptForward forward_media(OmniSession & session, const MediaPrompt & prompt, const std::vector<ImageInput> & images,
                            const std::vector<AudioInput> & audios, bool want_logits) {
    const MediaRows rows = session.encode_media_spans(prompt, images, audios);
    return forward_prompt(session, prompt.tokens, rows.spans, want_logits);
}

}  // namespace minicpmo
