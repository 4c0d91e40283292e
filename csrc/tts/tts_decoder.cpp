#include "tts/tts_decoder.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "core/error.h"
#include "tts/tts_graph.h"

namespace minicpmo {

namespace {

size_t graph_nodes(const TtsHparams & hp) {
    return static_cast<size_t>(hp.n_layer) * 48 + 256;
}


}  // namespace

TtsDecoder::TtsDecoder(std::shared_ptr<const TtsModel> model, ComputeDevice device, int n_threads)
    : model_(std::move(model)), backend_(device, n_threads), runner_(backend_, graph_nodes(model_->hparams())) {
    const TtsHparams & hp = model_->hparams();
    capacity_ = hp.n_ctx_train;
    ggml_init_params ip{};
    ip.mem_size = ggml_tensor_overhead() * 2 * static_cast<size_t>(hp.n_layer);
    ip.no_alloc = true;
    cache_ctx_ = ggml_init(ip);
    if (!cache_ctx_) fail(Status::internal, "cannot create the TTS cache context");
    // F32 keeps an F32 model exact; F16 halves the cache where the weights are rounded anyway
    const ggml_type type = model_->weights_f32() ? GGML_TYPE_F32 : GGML_TYPE_F16;
    const int64_t width = int64_t(hp.n_head_kv) * hp.head_dim;
    // values transposed (a row per channel, a column per slot): the weighted sum then reads them as
    // a plain matrix, without copying the whole cache into that order at every step
    for (int i = 0; i < hp.n_layer; ++i) {
        cache_k_.push_back(ggml_new_tensor_2d(cache_ctx_, type, width, capacity_));
        cache_v_.push_back(ggml_new_tensor_2d(cache_ctx_, type, capacity_, width));
    }
    cache_buf_ = ggml_backend_alloc_ctx_tensors_from_buft(cache_ctx_, weight_buffer_type(backend_.device()));
    if (!cache_buf_) {
        ggml_free(cache_ctx_);
        fail(Status::internal, "out of memory allocating the TTS cache");
    }
}

TtsDecoder::~TtsDecoder() {
    if (cache_buf_) ggml_backend_buffer_free(cache_buf_);
    if (cache_ctx_) ggml_free(cache_ctx_);
}

std::vector<float> TtsDecoder::run_rows(const int32_t * ids, const float * hidden, int n, bool normalize) {
    const TtsHparams & hp = model_->hparams();
    if (n <= 0) fail(Status::invalid_argument, "no text tokens to condition the speech on");
    for (int i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= hp.n_vocab_text) {
            fail(Status::invalid_argument, "text token id " + std::to_string(ids[i]) + " is outside the TTS text table");
        }
    }
    const GraphContext graph = runner_.new_context("TTS");
    ggml_context * ctx = graph.get();
    ggml_tensor * id_in = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
    ggml_set_input(id_in);
    ggml_tensor * out;
    ggml_tensor * h_in = nullptr;
    if (hidden) {
        h_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_embd_llm, n);
        ggml_set_input(h_in);
        out = build_tts_conditions(ctx, *model_, h_in, id_in, normalize);
    } else {
        out = ggml_get_rows(ctx, model_->emb_text(), id_in);
    }
    ggml_set_output(out);
    ggml_cgraph * gf = graph.new_graph();
    ggml_build_forward_expand(gf, out);
    runner_.allocate(gf);
    ggml_backend_tensor_set(id_in, ids, 0, n * sizeof(int32_t));
    if (h_in) ggml_backend_tensor_set(h_in, hidden, 0, static_cast<size_t>(n) * hp.n_embd_llm * sizeof(float));
    runner_.compute(gf);
    std::vector<float> rows(static_cast<size_t>(n) * hp.n_embd);
    ggml_backend_tensor_get(out, rows.data(), 0, rows.size() * sizeof(float));
    return rows;
}

std::vector<float> TtsDecoder::condition_rows(const int32_t * text_ids, const float * llm_hidden, int n) {
    return condition_rows(text_ids, llm_hidden, n, model_->hparams().normalize_projected_hidden);
}

std::vector<float> TtsDecoder::condition_rows(const int32_t * text_ids, const float * llm_hidden, int n, bool normalize) {
    if (!llm_hidden) fail(Status::invalid_argument, "condition rows need the LLM hidden states");
    return run_rows(text_ids, llm_hidden, n, normalize);
}

std::vector<float> TtsDecoder::text_rows(const int32_t * ids, int n) { return run_rows(ids, nullptr, n, false); }

std::vector<float> TtsDecoder::forward_rows(const float * rows, const int32_t * pos, int n) {
    if (!rows) fail(Status::invalid_argument, "no rows to feed the TTS");
    return run_forward(rows, nullptr, pos, n);
}

std::vector<float> TtsDecoder::forward_code(int32_t code, int32_t pos) {
    const TtsHparams & hp = model_->hparams();
    if (code < 0 || code >= hp.n_vocab_audio) {
        fail(Status::invalid_argument, "speech token " + std::to_string(code) + " is outside [0, " +
                                           std::to_string(hp.n_vocab_audio) + ")");
    }
    return run_forward(nullptr, &code, &pos, 1);
}

std::vector<float> TtsDecoder::run_forward(const float * rows, const int32_t * code, const int32_t * pos, int n) {
    const TtsHparams & hp = model_->hparams();
    if (n <= 0) fail(Status::invalid_argument, "no rows to feed the TTS");
    if (n_cached_ + n > capacity_) {
        fail(Status::context_full, "the speech decoder's context (" + std::to_string(capacity_) + " rows) is full");
    }
    const int n_slots = n_cached_ + n;
    const GraphContext graph = runner_.new_context("TTS");
    ggml_context * ctx = graph.get();
    ggml_cgraph * gf = graph.new_graph();
    ggml_tensor * x;
    ggml_tensor * rows_in = nullptr;
    ggml_tensor * code_in = nullptr;
    if (rows) {
        rows_in = x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_embd, n);
        ggml_set_input(rows_in);
    } else {
        code_in = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
        ggml_set_input(code_in);
        x = ggml_get_rows(ctx, model_->emb_code(), code_in);
    }
    ggml_tensor * pos_in = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
    ggml_set_input(pos_in);
    ggml_tensor * mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_slots, n);
    ggml_set_input(mask);
    std::vector<TtsAttentionCache> caches;
    for (int i = 0; i < hp.n_layer; ++i) caches.push_back(TtsAttentionCache{cache_k_[i], cache_v_[i], n_cached_});
    ggml_tensor * logits = build_tts_forward(ctx, gf, *model_, x, pos_in, mask, caches);
    ggml_set_output(logits);
    ggml_build_forward_expand(gf, logits);
    runner_.allocate(gf);

    if (rows_in) ggml_backend_tensor_set(rows_in, rows, 0, static_cast<size_t>(n) * hp.n_embd * sizeof(float));
    if (code_in) ggml_backend_tensor_set(code_in, code, 0, n * sizeof(int32_t));
    ggml_backend_tensor_set(pos_in, pos, 0, n * sizeof(int32_t));
    // row i sees every cached row and the new rows up to itself (causal in feed order)
    std::vector<float> m(static_cast<size_t>(n_slots) * n);
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n_slots; ++j) {
            m[static_cast<size_t>(i) * n_slots + j] = j <= n_cached_ + i ? 0.0f : -std::numeric_limits<float>::infinity();
        }
    }
    ggml_backend_tensor_set(mask, m.data(), 0, m.size() * sizeof(float));
    runner_.compute(gf);
    n_cached_ = n_slots;
    std::vector<float> out(hp.n_vocab_audio);
    ggml_backend_tensor_get(logits, out.data(), 0, out.size() * sizeof(float));
    return out;
}

}  // namespace minicpmo
