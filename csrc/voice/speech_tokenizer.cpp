#include "voice/speech_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "audio/pcm_checks.h"
#include "core/error.h"
#include "voice/speech_tokenizer_graph.h"

namespace minicpmo {

namespace {

using Use = GgufWeights::Use;

constexpr const char * kKey = "minicpmo.speech_tokenizer.";
// Bounds wide enough for any plausible model, tight enough that a hostile file cannot make us
// allocate absurd graphs or buffers.
constexpr int64_t kMaxDim = 1 << 16;

SpeechTokenizerHparams read_hparams(const GgufWeights & w) {
    const std::string where = "omni file '" + w.path() + "': speech tokenizer";
    auto i = [&](const char * k, int64_t lo, int64_t hi) {
        return static_cast<int>(w.require_int(std::string(kKey) + k, lo, hi));
    };
    auto f = [&](const char * k) { return static_cast<float>(w.require_float(std::string(kKey) + k)); };
    SpeechTokenizerHparams hp;
    hp.sample_rate = i("sample_rate", 1000, 768000);
    hp.n_fft = i("n_fft", 2, static_cast<int64_t>(kMaxMelFftSize));
    hp.hop = i("hop_length", 1, 1 << 16);
    hp.n_mel = i("n_mel", 1, kMaxMelBands);
    hp.log_range = f("log_range");
    hp.max_mel_frames = i("max_mel_frames", 1, 1 << 20);
    hp.n_embd = i("n_embd", 1, kMaxDim);
    hp.n_ff = i("n_ff", 1, kMaxDim * 4);
    hp.n_layer = i("n_layer", 1, 256);
    hp.n_head = i("n_head", 1, 1024);
    hp.eps = f("layer_norm_eps");
    for (int c = 0; c < 2; ++c) {
        const std::string p = "conv" + std::to_string(c + 1) + ".";
        hp.conv_kernel[c] = i((p + "kernel").c_str(), 1, 64);
        hp.conv_stride[c] = i((p + "stride").c_str(), 1, 64);
        hp.conv_pad[c] = i((p + "pad").c_str(), 0, 64);
    }
    hp.fsmn_kernel = i("fsmn_kernel", 1, 1024);
    hp.rope_dim = i("rope_dim", 2, 4096);
    hp.rope_theta = f("rope_theta");
    hp.rope_positions = i("rope_positions", 1, 1 << 20);
    hp.fsq_dim = i("fsq_dim", 1, 16);
    hp.fsq_levels = i("fsq_levels", 2, 16);
    hp.fsq_scale = f("fsq_scale");
    if (hp.n_embd % hp.n_head) fail(Status::bad_model, where + ": n_embd is not a multiple of n_head");
    if (hp.head_dim() != hp.rope_dim) fail(Status::bad_model, where + ": the rotary width must equal the head width");
    if (hp.fsq_levels % 2 == 0) fail(Status::bad_model, where + ": fsq_levels must be odd (levels centred on 0)");
    if (std::pow(static_cast<double>(hp.fsq_levels), hp.fsq_dim) > 2147483647.0) {
        fail(Status::bad_model, where + ": fsq_levels^fsq_dim does not fit an int32 id");
    }
    if (!(hp.eps > 0.0f) || !(hp.log_range > 0.0f) || !(hp.rope_theta > 0.0f) || !(hp.fsq_scale > 0.0f)) {
        fail(Status::bad_model, where + ": layer_norm_eps, log_range, rope_theta and fsq_scale must be > 0");
    }
    if (hp.n_tokens(hp.max_mel_frames) > hp.rope_positions) {
        fail(Status::bad_model, where + ": max_mel_frames gives more tokens than rope_positions");
    }
    return hp;
}

}  // namespace

int64_t SpeechTokenizerHparams::n_tokens(int64_t mel_frames) const {
    int64_t n = mel_frames;
    for (int c = 0; c < 2; ++c) {
        const int64_t span = n + 2 * conv_pad[c] - conv_kernel[c];
        n = span < 0 ? 0 : span / conv_stride[c] + 1;
    }
    return n;
}

SpeechTokenizer::SpeechTokenizer(const std::string & omni_path, ComputeDevice device, bool map_file)
    : device_(device) {
    w_ = std::make_unique<GgufWeights>(omni_path, "omni file", std::vector<std::string>{"stok."},
                                       weight_buffer_type(device), map_file);
    w_->require_component("speech_tokenizer", "cloning a voice from a recording");
    hp_ = read_hparams(*w_);
    const GgufWeights & w = *w_;
    const int64_t D = hp_.n_embd, F = hp_.n_ff, M = hp_.n_mel;

    // the mel filter bank (F32, (n_mel, n_fft/2 + 1)) is read to the host: the front end runs there
    const int64_t n_bins = hp_.n_fft / 2 + 1;
    ggml_tensor * filters = w.get("stok.mel_filters", {n_bins, M}, Use::vector);
    std::vector<float> fb(static_cast<size_t>(n_bins * M));
    ggml_backend_tensor_get(filters, fb.data(), 0, fb.size() * sizeof(float));
    for (float v : fb) {
        if (!std::isfinite(v) || v < 0.0f) fail(Status::bad_model, "omni file '" + omni_path + "': stok.mel_filters has a negative or non-finite weight");
    }
    MelConfig mc;
    mc.sample_rate = hp_.sample_rate;
    mc.n_fft = hp_.n_fft;
    mc.hop = hp_.hop;
    mc.n_mel = hp_.n_mel;
    mc.dynamic_range_db = hp_.log_range;
    try {
        mel_ = std::make_unique<MelFrameAnalyzer>(mc, std::move(fb));
    } catch (const Error & e) {
        fail(Status::bad_model, "omni file '" + omni_path + "': speech tokenizer front end: " + e.what());
    }

    const int64_t in[2] = {M, D};
    for (int c = 0; c < 2; ++c) {
        const std::string p = "stok.conv" + std::to_string(c + 1);
        conv_w_[c] = w.get(p + ".weight", {in[c] * hp_.conv_kernel[c], D}, Use::matrix);
        conv_b_[c] = w.get(p + ".bias", {D}, Use::vector);
    }
    for (int il = 0; il < hp_.n_layer; ++il) {
        const std::string p = "stok.blk." + std::to_string(il) + ".";
        SpeechTokenizerLayer l{};
        l.attn_ln_w = w.get(p + "attn_ln.weight", {D}, Use::vector);
        l.attn_ln_b = w.get(p + "attn_ln.bias", {D}, Use::vector);
        l.q_w = w.get(p + "attn_q.weight", {D, D}, Use::matrix);
        l.q_b = w.get(p + "attn_q.bias", {D}, Use::vector);
        l.k_w = w.get(p + "attn_k.weight", {D, D}, Use::matrix);
        l.v_w = w.get(p + "attn_v.weight", {D, D}, Use::matrix);
        l.v_b = w.get(p + "attn_v.bias", {D}, Use::vector);
        l.fsmn_w = w.get(p + "fsmn.weight", {hp_.fsmn_kernel, D}, Use::vector);  // F32: ssm_conv's operand
        l.out_w = w.get(p + "attn_out.weight", {D, D}, Use::matrix);
        l.out_b = w.get(p + "attn_out.bias", {D}, Use::vector);
        l.mlp_ln_w = w.get(p + "mlp_ln.weight", {D}, Use::vector);
        l.mlp_ln_b = w.get(p + "mlp_ln.bias", {D}, Use::vector);
        l.fc1_w = w.get(p + "mlp_0.weight", {D, F}, Use::matrix);
        l.fc1_b = w.get(p + "mlp_0.bias", {F}, Use::vector);
        l.fc2_w = w.get(p + "mlp_2.weight", {F, D}, Use::matrix);
        l.fc2_b = w.get(p + "mlp_2.bias", {D}, Use::vector);
        layers_.push_back(l);
    }
    fsq_w_ = w.get("stok.fsq.proj.weight", {D, hp_.fsq_dim}, Use::matrix);
    fsq_b_ = w.get("stok.fsq.proj.bias", {hp_.fsq_dim}, Use::vector);
    const size_t expected = 4 + 16 * static_cast<size_t>(hp_.n_layer) + 2 + 1;
    if (w.n_tensors() != expected) {
        fail(Status::bad_model, "omni file '" + omni_path + "': " + std::to_string(w.n_tensors()) +
                                    " stok.* tensors, expected " + std::to_string(expected) + " for " +
                                    std::to_string(hp_.n_layer) + " layers");
    }
}

SpeechTokenizer::~SpeechTokenizer() = default;

LogMelSpectrogram SpeechTokenizer::log_mel(const float * pcm16k, size_t n) const {
    const std::string what = "speech tokenizer input";
    if (pcm16k == nullptr || n == 0) fail(Status::invalid_argument, what + ": the audio is empty");
    const size_t half = static_cast<size_t>(hp_.n_fft / 2);
    if (n <= half) {
        fail(Status::invalid_argument, what + ": " + std::to_string(n) + " samples is too short (needs more than " +
                                           std::to_string(half) + " at " + std::to_string(hp_.sample_rate) + " Hz)");
    }
    const int64_t frames = mel_->n_frames(static_cast<int64_t>(n));
    if (frames > hp_.max_mel_frames) {
        char text[160];
        std::snprintf(text, sizeof text, ": %.2f s of audio is longer than the tokenizer's %.0f-s window (%d mel frames)",
                      static_cast<double>(n) / hp_.sample_rate,
                      static_cast<double>(hp_.max_mel_frames) * hp_.hop / hp_.sample_rate, hp_.max_mel_frames);
        fail(Status::invalid_argument, what + text);
    }
    require_finite_pcm(pcm16k, n, what);

    LogMelSpectrogram out;
    out.n_mel = hp_.n_mel;
    out.n_frames = frames;
    out.piece_frames = {frames};
    const size_t T = static_cast<size_t>(frames), M = static_cast<size_t>(hp_.n_mel);
    std::vector<double> logs(T * M);  // [frame][band]
    MelFrameAnalyzer::Workspace ws = mel_->make_workspace();
    for (size_t t = 0; t < T; ++t) {
        mel_->frame(pcm16k, static_cast<int64_t>(n), static_cast<int64_t>(t), logs.data() + t * M, ws);
    }
    // Whisper's clip: nothing below the whole recording's maximum minus log_range, then (x + 4) / 4
    const double floor = *std::max_element(logs.begin(), logs.end()) - hp_.log_range;
    out.data.resize(T * M);
    for (size_t t = 0; t < T; ++t) {
        for (size_t b = 0; b < M; ++b) {
            out.data[b * T + t] = static_cast<float>((std::max(logs[t * M + b], floor) + 4.0) / 4.0);
        }
    }
    return out;
}

SpeechTokens SpeechTokenizer::tokenize(const float * pcm16k, size_t n, int n_threads) const {
    return tokenize_mel(log_mel(pcm16k, n), n_threads);
}

SpeechTokens SpeechTokenizer::tokenize_mel(const LogMelSpectrogram & mel, int n_threads) const {
    const int64_t T_mel = mel.n_frames, T = hp_.n_tokens(T_mel);
    if (mel.n_mel != hp_.n_mel || mel.data.size() != static_cast<size_t>(T_mel) * hp_.n_mel) {
        fail(Status::invalid_argument, "speech tokenizer: the log-mel has " + std::to_string(mel.n_mel) +
                                           " bands, expected " + std::to_string(hp_.n_mel));
    }
    if (T_mel > hp_.max_mel_frames) fail(Status::invalid_argument, "speech tokenizer: the log-mel is longer than max_mel_frames");
    if (T < 1) fail(Status::invalid_argument, "speech tokenizer: the audio is too short for one token");

    ComputeBackend backend(device_, n_threads);  // 0 = all cores
    GraphRunner runner(backend, speech_tokenizer_graph_nodes(hp_), 2);
    const GraphContext graph = runner.new_context("speech tokenizer");
    ggml_context * ctx = graph.get();
    ggml_tensor * mel_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, T_mel, hp_.n_mel);
    ggml_set_input(mel_in);
    ggml_tensor * pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, T);
    ggml_set_input(pos);
    ggml_tensor * values = build_speech_tokenizer(ctx, *this, mel_in, pos);
    ggml_set_output(values);
    ggml_cgraph * gf = graph.new_graph();
    ggml_build_forward_expand(gf, values);
    runner.allocate(gf);
    ggml_backend_tensor_set(mel_in, mel.data.data(), 0, mel.data.size() * sizeof(float));
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) ids[static_cast<size_t>(t)] = static_cast<int32_t>(t);
    ggml_backend_tensor_set(pos, ids.data(), 0, ids.size() * sizeof(int32_t));
    runner.compute(gf);

    SpeechTokens out;
    out.fsq_values.resize(static_cast<size_t>(T) * hp_.fsq_dim);
    ggml_backend_tensor_get(values, out.fsq_values.data(), 0, out.fsq_values.size() * sizeof(float));
    // level index per value: round(v * (L-1)/2) + (L-1)/2, rounding half to even like the reference's
    // Round (nearbyint in the default rounding mode); id = sum_i level_i * L^i
    const int half_range = (hp_.fsq_levels - 1) / 2;
    for (int64_t t = 0; t < T; ++t) {
        int64_t id = 0, power = 1;
        for (int i = 0; i < hp_.fsq_dim; ++i) {
            const float v = out.fsq_values[static_cast<size_t>(t) * hp_.fsq_dim + i];
            if (!std::isfinite(v)) fail(Status::internal, "speech tokenizer: a non-finite FSQ value at frame " + std::to_string(t));
            const int level = static_cast<int>(std::nearbyint(v * static_cast<float>(half_range))) + half_range;
            id += std::clamp(level, 0, hp_.fsq_levels - 1) * power;
            power *= hp_.fsq_levels;
        }
        ids[static_cast<size_t>(t)] = static_cast<int32_t>(id);
    }
    out.ids = std::move(ids);
    return out;
}

}  // namespace minicpmo
