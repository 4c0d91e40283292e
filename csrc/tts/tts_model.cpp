#include "tts/tts_model.h"

#include <algorithm>

#include "core/compute_backend.h"
#include "core/error.h"
#include "core/q8_packed.h"
#include "tts/tts_attention.h"

namespace minicpmo {

namespace {

using Use = GgufWeights::Use;

constexpr int64_t kMaxDim = 1 << 16;

TtsSampling read_sampling(const GgufWeights & w, const std::string & mode, TtsSampling s) {
    const GgufHeader & h = w.header();
    const std::string p = "minicpmo.tts." + mode + ".";
    s.temperature = static_cast<float>(h.get_float((p + "temperature").c_str()).value_or(s.temperature));
    s.repetition_penalty = static_cast<float>(h.get_float((p + "repetition_penalty").c_str()).value_or(s.repetition_penalty));
    s.repetition_window = static_cast<int>(h.get_int((p + "repetition_window").c_str()).value_or(s.repetition_window));
    s.top_p = static_cast<float>(h.get_float((p + "top_p").c_str()).value_or(s.top_p));
    s.top_k = static_cast<int>(h.get_int((p + "top_k").c_str()).value_or(s.top_k));
    s.min_keep = static_cast<int>(h.get_int((p + "min_keep").c_str()).value_or(s.min_keep));
    s.min_new_tokens = static_cast<int>(h.get_int((p + "min_new_tokens").c_str()).value_or(s.min_new_tokens));
    s.max_new_tokens = static_cast<int>(h.get_int((p + "max_new_tokens").c_str()).value_or(s.max_new_tokens));
    if (!(s.temperature > 0.0f) || !(s.repetition_penalty > 0.0f) || s.repetition_window < 1 || s.min_keep < 1 ||
        s.min_new_tokens < 0 || s.max_new_tokens < 1) {
        fail(Status::bad_model, "omni file '" + w.path() + "': invalid TTS sampling settings for mode " + mode);
    }
    return s;
}

TtsHparams read_hparams(const GgufWeights & w) {
    const GgufHeader & h = w.header();
    const std::string where = "omni file '" + w.path() + "'";
    TtsHparams hp;
    hp.n_embd = static_cast<int>(w.require_int("minicpmo.tts.n_embd", 1, kMaxDim));
    hp.n_layer = static_cast<int>(w.require_int("minicpmo.tts.n_layer", 1, 1024));
    hp.n_head = static_cast<int>(w.require_int("minicpmo.tts.n_head", 1, 1024));
    hp.n_head_kv = static_cast<int>(w.require_int("minicpmo.tts.n_head_kv", 1, 1024));
    hp.head_dim = static_cast<int>(w.require_int("minicpmo.tts.head_dim", 2, 1024));
    hp.n_ff = static_cast<int>(w.require_int("minicpmo.tts.n_ff", 1, kMaxDim * 4));
    hp.n_ctx_train = static_cast<int>(w.require_int("minicpmo.tts.n_ctx_train", 16, 1 << 20));
    hp.rms_eps = static_cast<float>(w.require_float("minicpmo.tts.rms_norm_eps"));
    hp.rope_theta = static_cast<float>(w.require_float("minicpmo.tts.rope_theta"));
    hp.n_embd_llm = static_cast<int>(w.require_int("minicpmo.tts.n_embd_llm", 1, kMaxDim));
    hp.n_vocab_text = static_cast<int>(w.require_int("minicpmo.tts.n_vocab_text", 1, 1 << 24));
    hp.n_vocab_audio = static_cast<int>(w.require_int("minicpmo.tts.n_vocab_audio", 2, 1 << 20));
    hp.audio_eos = static_cast<int>(w.require_int("minicpmo.tts.audio_eos_id", 0, hp.n_vocab_audio - 1));
    hp.audio_bos_id = static_cast<int>(w.require_int("minicpmo.tts.audio_bos_token_id", 0, hp.n_vocab_text - 1));
    hp.text_eos_id = static_cast<int>(w.require_int("minicpmo.tts.text_eos_token_id", 0, hp.n_vocab_text - 1));
    hp.normalize_projected_hidden = h.get_bool("minicpmo.tts.normalize_projected_hidden").value_or(true);
    hp.normalize_eps = static_cast<float>(h.get_float("minicpmo.tts.normalize_eps").value_or(1e-12));
    const std::string rope = h.get_str("minicpmo.tts.rope_type").value_or("neox");
    const std::string act = h.get_str("minicpmo.tts.hidden_act").value_or("silu");
    const std::string cond = h.get_str("minicpmo.tts.condition_type").value_or("hidden_text_merge");
    const std::string attn = h.get_str("minicpmo.tts.attention_type").value_or("full_attention");
    if (rope != "neox" || act != "silu" || cond != "hidden_text_merge" || attn != "full_attention") {
        fail(Status::bad_model, where + ": TTS variant not supported (rope " + rope + ", act " + act + ", condition " + cond +
                                    ", attention " + attn + ")");
    }
    // rotate-half RoPE turns pairs of a head's halves: an even head size
    if (hp.n_head % hp.n_head_kv || hp.head_dim % 2 || hp.audio_eos != hp.n_vocab_audio - 1 || !(hp.rms_eps > 0.0f) ||
        !(hp.rope_theta > 0.0f)) {
        fail(Status::bad_model, where + ": inconsistent TTS hyper-parameters");
    }
    TtsSampling chat;
    chat.min_new_tokens = 50;
    chat.max_new_tokens = 2048;
    TtsSampling stream;
    stream.max_new_tokens = 500;
    TtsSampling duplex;
    duplex.top_p = 1.0f;
    duplex.top_k = 0;
    duplex.min_keep = 1;
    duplex.min_new_tokens = 25;
    duplex.max_new_tokens = 25;
    hp.chat = read_sampling(w, "chat", chat);
    hp.stream = read_sampling(w, "stream", stream);
    hp.duplex = read_sampling(w, "duplex", duplex);
    return hp;
}

}  // namespace

TtsModel::TtsModel(const std::string & omni_path, ComputeDevice device, bool map_file) {
    w_ = std::make_unique<GgufWeights>(omni_path, "omni file", std::vector<std::string>{"tts."},
                                       weight_buffer_type(device), map_file);
    w_->require_component("tts", "speech output");
    hp_ = read_hparams(*w_);
    const int64_t E = hp_.n_embd, F = hp_.n_ff, Q = int64_t(hp_.n_head) * hp_.head_dim,
                  KV = int64_t(hp_.n_head_kv) * hp_.head_dim;
    const GgufWeights & w = *w_;
    emb_text_ = w.get("tts.emb_text.weight", {E, hp_.n_vocab_text}, Use::table);
    emb_code_ = w.get("tts.emb_code.weight", {E, hp_.n_vocab_audio}, Use::table);
    head_code_ = w.get("tts.head_code.weight", {E, hp_.n_vocab_audio}, Use::matrix);
    output_norm_ = w.get("tts.output_norm.weight", {E}, Use::vector);
    proj1_w_ = w.get("tts.proj1.weight", {hp_.n_embd_llm, E}, Use::matrix);
    proj1_b_ = w.get("tts.proj1.bias", {E}, Use::vector);
    proj2_w_ = w.get("tts.proj2.weight", {E, E}, Use::matrix);
    proj2_b_ = w.get("tts.proj2.bias", {E}, Use::vector);
    for (int i = 0; i < hp_.n_layer; ++i) {
        const std::string p = "tts.blk." + std::to_string(i) + ".";
        TtsLayer L{};
        L.attn_norm = w.get(p + "attn_norm.weight", {E}, Use::vector);
        L.q = w.get(p + "attn_q.weight", {E, Q}, Use::matrix);
        L.k = w.get(p + "attn_k.weight", {E, KV}, Use::matrix);
        L.v = w.get(p + "attn_v.weight", {E, KV}, Use::matrix);
        L.o = w.get(p + "attn_out.weight", {Q, E}, Use::matrix);
        L.ffn_norm = w.get(p + "ffn_norm.weight", {E}, Use::vector);
        L.gate = w.get(p + "ffn_gate.weight", {E, F}, Use::matrix);
        L.up = w.get(p + "ffn_up.weight", {E, F}, Use::matrix);
        L.down = w.get(p + "ffn_down.weight", {F, E}, Use::matrix);
        layers_.push_back(L);
    }
    if (w.has("tts.blk." + std::to_string(hp_.n_layer) + ".attn_q.weight")) {
        fail(Status::bad_model, "omni file '" + omni_path + "' stores more TTS layers than its n_layer");
    }
    weights_f32_ = layers_.empty() || layers_[0].q->type == GGML_TYPE_F32;
    if (!device) {
        pack_q8_0_matrices();
        cpu_attention_ = tts_cached_attention_supported();
    }
}

void TtsModel::pack_q8_0_matrices() {
    const std::optional<Q8Isa> isa = best_q8_isa();
    if (!isa) return;
    const auto all_q8_0 = [](std::initializer_list<const ggml_tensor *> ts) {
        return std::all_of(ts.begin(), ts.end(), [](const ggml_tensor * t) { return t->type == GGML_TYPE_Q8_0; });
    };
    // the rows of `parts` stacked into one packed matrix; the sources' mapped pages are released
    const auto pack = [&](std::initializer_list<const ggml_tensor *> parts) {
        std::vector<PackedQ8Matrix::Part> rows;
        for (const ggml_tensor * t : parts) rows.push_back({t->data, t->ne[1]});
        auto packed = std::make_shared<const PackedQ8Matrix>(rows, (*parts.begin())->ne[0], *isa, hp_.rms_eps);
        for (const ggml_tensor * t : parts) w_->drop_pages(t);
        return packed;
    };
    if (head_code_->type == GGML_TYPE_Q8_0) packed_head_ = pack({head_code_});
    // every layer's matrices Q8_0 (a converter's file has one type for them all); the gated product
    // splits whole row groups between gate and up
    const bool layers_q8_0 = std::all_of(layers_.begin(), layers_.end(), [&](const TtsLayer & L) {
        return all_q8_0({L.q, L.k, L.v, L.o, L.gate, L.up, L.down});
    });
    if (!layers_q8_0 || hp_.n_ff % 16 != 0) return;
    for (const TtsLayer & L : layers_) {
        packed_layers_.push_back(
            TtsPackedLayer{pack({L.q, L.k, L.v}), pack({L.o}), pack({L.gate, L.up}), pack({L.down})});
    }
}

const TtsPackedLayer * TtsModel::packed_layer(size_t il) const {
    return il < packed_layers_.size() ? &packed_layers_[il] : nullptr;
}

}  // namespace minicpmo
