#include "audio/audio_model.h"

#include <algorithm>
#include <cmath>

#include "core/compute_backend.h"
#include "core/error.h"

namespace minicpmo {

namespace {

using Use = GgufWeights::Use;

// Bounds wide enough for any plausible model, tight enough that a hostile file cannot make us
// allocate absurd graphs or buffers.
constexpr int64_t kMaxDim = 1 << 16;

AudioHparams read_hparams(const GgufWeights & w) {
    const GgufHeader & h = w.header();
    const std::string where = "omni file '" + w.path() + "'";
    AudioHparams hp;
    hp.n_embd = static_cast<int>(w.require_int("minicpmo.audio.n_embd", 1, kMaxDim));
    hp.n_layer = static_cast<int>(w.require_int("minicpmo.audio.n_layer", 1, 1024));
    hp.n_head = static_cast<int>(w.require_int("minicpmo.audio.n_head", 1, 1024));
    hp.n_ff = static_cast<int>(w.require_int("minicpmo.audio.n_ff", 1, kMaxDim * 4));
    hp.n_mel = static_cast<int>(w.require_int("minicpmo.audio.n_mel", 1, 1024));
    hp.n_positions = static_cast<int>(w.require_int("minicpmo.audio.n_positions", 1, 1 << 20));
    hp.eps = static_cast<float>(w.require_float("minicpmo.audio.layer_norm_eps"));
    hp.sample_rate = static_cast<int>(w.require_int("minicpmo.audio.sample_rate", 1000, 768000));
    hp.n_fft = static_cast<int>(w.require_int("minicpmo.audio.n_fft", 2, 1 << 16));
    hp.hop_length = static_cast<int>(w.require_int("minicpmo.audio.hop_length", 1, 1 << 16));
    hp.chunk_seconds = static_cast<int>(w.require_int("minicpmo.audio.chunk_seconds", 1, 3600));
    hp.dynamic_range_db = static_cast<float>(w.require_float("minicpmo.audio.dynamic_range_db"));
    hp.block_seconds = static_cast<float>(w.require_float("minicpmo.audio.block_seconds"));
    hp.pool_step = static_cast<int>(w.require_int("minicpmo.audio.pool_step", 1, 1024));
    hp.n_embd_out = static_cast<int>(w.require_int("minicpmo.audio.n_embd_out", 1, kMaxDim));
    const std::string act = h.get_str("minicpmo.audio.activation").value_or("gelu");
    if (act != "gelu") fail(Status::bad_model, where + ": audio activation '" + act + "' is not supported");
    if (hp.n_embd % hp.n_head) fail(Status::bad_model, where + ": audio width is not a multiple of the head count");
    if (hp.n_ff != 4 * hp.n_embd) {
        // the projector's input width is n_ff / 4 and it reads the encoder output (n_embd wide)
        fail(Status::bad_model, where + ": audio n_ff must be 4 x n_embd (the projector input is n_ff / 4)");
    }
    if (!(hp.block_seconds > 0.0f) || !(hp.dynamic_range_db > 0.0f) || !(hp.eps > 0.0f)) {
        fail(Status::bad_model, where + ": audio block_seconds, dynamic_range_db and layer_norm_eps must be > 0");
    }
    if (hp.block_frames() < 1) fail(Status::bad_model, where + ": audio block_seconds is shorter than one frame");
    return hp;
}

}  // namespace

int AudioHparams::block_frames() const {
    // mel frames per block, halved by the stride-2 conv: 1 s = 100 mel frames = 50 encoder frames
    const double mel_frames = std::round(static_cast<double>(block_seconds) * sample_rate / hop_length);
    return static_cast<int>(mel_frames) / 2;
}

AudioModel::AudioModel(const std::string & omni_path, ComputeDevice device, bool map_file) {
    w_ = std::make_unique<GgufWeights>(omni_path, "omni file", std::vector<std::string>{"a."},
                                       weight_buffer_type(device), map_file);
    w_->require_component("audio", "audio input");
    hp_ = read_hparams(*w_);
    const int64_t D = hp_.n_embd, F = hp_.n_ff, E = hp_.n_embd_out, M = hp_.n_mel;
    const GgufWeights & w = *w_;

    ggml_tensor * filters = w.get("a.mel_filters", {hp_.n_freq(), M}, Use::table);
    mel_filters_.resize(static_cast<size_t>(M) * hp_.n_freq());
    if (filters->type == GGML_TYPE_F32) {
        ggml_backend_tensor_get(filters, mel_filters_.data(), 0, mel_filters_.size() * sizeof(float));
    } else {
        std::vector<ggml_fp16_t> half(mel_filters_.size());
        ggml_backend_tensor_get(filters, half.data(), 0, half.size() * sizeof(ggml_fp16_t));
        ggml_fp16_to_fp32_row(half.data(), mel_filters_.data(), static_cast<int64_t>(half.size()));
    }
    for (float v : mel_filters_) {
        if (!std::isfinite(v) || v < 0.0f) fail(Status::bad_model, "omni file '" + omni_path + "': a.mel_filters has a negative or non-finite weight");
    }

    MelConfig mc;
    mc.sample_rate = hp_.sample_rate;
    mc.n_fft = hp_.n_fft;
    mc.hop = hp_.hop_length;
    mc.n_mel = hp_.n_mel;
    mc.chunk_samples = static_cast<int64_t>(hp_.chunk_seconds) * hp_.sample_rate;
    mc.dynamic_range_db = hp_.dynamic_range_db;
    try {
        mel_ = std::make_unique<MelFrameAnalyzer>(mc, mel_filters_);
    } catch (const Error & e) {
        fail(Status::bad_model, "omni file '" + omni_path + "': audio front end: " + e.what());
    }

    conv1_w_ = w.get("a.conv1.weight", {M * 3, D}, Use::matrix);
    conv1_b_ = w.get("a.conv1.bias", {D}, Use::vector);
    conv2_w_ = w.get("a.conv2.weight", {D * 3, D}, Use::matrix);
    conv2_b_ = w.get("a.conv2.bias", {D}, Use::vector);
    pos_embd_ = w.get("a.pos_embd.weight", {D, hp_.n_positions}, Use::table);
    for (int i = 0; i < hp_.n_layer; ++i) {
        // Whisper's key projection has no bias
        layers_.push_back(load_pre_ln_layer(w, "a.blk." + std::to_string(i) + ".", D, F, false));
    }
    if (w.has("a.blk." + std::to_string(hp_.n_layer) + ".attn_q.weight")) {
        fail(Status::bad_model, "omni file '" + omni_path + "' stores more audio layers than its n_layer " +
                                    std::to_string(hp_.n_layer));
    }
    post_ln_w_ = w.get("a.post_ln.weight", {D}, Use::vector);
    post_ln_b_ = w.get("a.post_ln.bias", {D}, Use::vector);
    proj1_w_ = w.get("a.proj1.weight", {D, E}, Use::matrix);
    proj1_b_ = w.get("a.proj1.bias", {E}, Use::vector);
    proj2_w_ = w.get("a.proj2.weight", {E, E}, Use::matrix);
    proj2_b_ = w.get("a.proj2.bias", {E}, Use::vector);
    weights_f32_ = layers_.empty() || layers_[0].q_w->type == GGML_TYPE_F32;
}

}  // namespace minicpmo
