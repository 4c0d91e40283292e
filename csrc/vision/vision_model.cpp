#include "vision/vision_model.h"

#include <algorithm>

#include "core/compute_backend.h"
#include "core/error.h"

namespace minicpmo {

namespace {

using Use = GgufWeights::Use;

// Bounds on hyper-parameters: wide enough for any plausible model, tight enough that a hostile
// file cannot make us allocate absurd graphs.
constexpr int64_t kMaxDim = 1 << 16;

VisionHparams read_hparams(const GgufWeights & w) {
    const GgufHeader & h = w.header();
    VisionHparams hp;
    hp.n_layer = static_cast<int>(w.require_int("minicpmo.vision.block_count", 1, 1024));
    hp.n_embd = static_cast<int>(w.require_int("minicpmo.vision.embedding_length", 1, kMaxDim));
    hp.n_ff = static_cast<int>(w.require_int("minicpmo.vision.feed_forward_length", 1, kMaxDim * 4));
    hp.n_head = static_cast<int>(w.require_int("minicpmo.vision.attention.head_count", 1, 1024));
    hp.eps = static_cast<float>(w.require_float("minicpmo.vision.attention.layer_norm_epsilon"));
    hp.patch_size = static_cast<int>(w.require_int("minicpmo.vision.patch_size", 1, 1024));
    const int64_t image_size = w.require_int("minicpmo.vision.image_size", hp.patch_size, kMaxDim);
    hp.pos_side = static_cast<int>(image_size / hp.patch_size);
    hp.n_channels = static_cast<int>(w.require_int("minicpmo.vision.num_channels", 3, 3));
    const std::string act = h.get_str("minicpmo.vision.hidden_act").value_or("gelu_pytorch_tanh");
    if (act != "gelu_pytorch_tanh") {
        fail(Status::bad_model, "omni file '" + w.path() + "': vision activation '" + act + "' is not supported");
    }
    const auto mean = h.get_float_array("minicpmo.vision.image_mean");
    const auto stdv = h.get_float_array("minicpmo.vision.image_std");
    if (!mean.empty()) {
        if (mean.size() != 3) fail(Status::bad_model, "omni file '" + w.path() + "': vision.image_mean needs 3 values");
        std::copy(mean.begin(), mean.end(), hp.mean.begin());
    }
    if (!stdv.empty()) {
        if (stdv.size() != 3) fail(Status::bad_model, "omni file '" + w.path() + "': vision.image_std needs 3 values");
        for (float s : stdv) {
            if (!(s > 0.0f)) fail(Status::bad_model, "omni file '" + w.path() + "': vision.image_std must be > 0");
        }
        std::copy(stdv.begin(), stdv.end(), hp.std.begin());
    }
    hp.scale_resolution = static_cast<int>(w.require_int("minicpmo.vision.scale_resolution", hp.patch_size, kMaxDim));
    hp.max_slice_nums = static_cast<int>(w.require_int("minicpmo.vision.max_slice_nums", 1, 1024));
    hp.use_image_id = h.get_bool("minicpmo.vision.use_image_id").value_or(true);
    hp.batch_size = static_cast<int>(h.get_int("minicpmo.vision.batch_size").value_or(16));
    hp.batch_size = std::clamp(hp.batch_size, 1, 64);
    hp.n_query = static_cast<int>(w.require_int("minicpmo.vision.query_num", 1, 4096));
    hp.n_embd_out = static_cast<int>(w.require_int("minicpmo.resampler.embedding_length", 1, kMaxDim));
    hp.n_head_resampler = static_cast<int>(w.require_int("minicpmo.resampler.attention.head_count", 1, 1024));
    hp.eps_resampler = static_cast<float>(w.require_float("minicpmo.resampler.layer_norm_epsilon"));
    if (hp.n_embd % hp.n_head || hp.n_embd_out % hp.n_head_resampler || hp.n_embd_out % 4) {
        fail(Status::bad_model, "omni file '" + w.path() + "': attention width is not a multiple of the head count");
    }
    return hp;
}

}  // namespace

VisionModel::VisionModel(const std::string & omni_path, ComputeDevice device, bool map_file) {
    w_ = std::make_unique<GgufWeights>(omni_path, "omni file", std::vector<std::string>{"v.", "resampler."},
                                       weight_buffer_type(device), map_file);
    w_->require_component("vision", "images");
    hp_ = read_hparams(*w_);
    const int64_t D = hp_.n_embd, F = hp_.n_ff, E = hp_.n_embd_out;
    const GgufWeights & w = *w_;
    patch_w_ = w.get("v.patch_embd.weight", {hp_.patch_dim(), D}, Use::matrix);
    patch_b_ = w.get("v.patch_embd.bias", {D}, Use::vector);
    pos_embd_ = w.get("v.pos_embd.weight", {D, int64_t(hp_.pos_side) * hp_.pos_side}, Use::table);
    for (int i = 0; i < hp_.n_layer; ++i) {
        layers_.push_back(load_pre_ln_layer(w, "v.blk." + std::to_string(i) + ".", D, F, true));
    }
    post_ln_w_ = w.get("v.post_ln.weight", {D}, Use::vector);
    post_ln_b_ = w.get("v.post_ln.bias", {D}, Use::vector);

    rs_.query = w.get("resampler.query", {E, hp_.n_query}, Use::table);
    rs_.kv_proj = w.get("resampler.kv_proj.weight", {D, E}, Use::matrix);
    rs_.q_w = w.get("resampler.attn_q.weight", {E, E}, Use::matrix);
    rs_.q_b = w.get("resampler.attn_q.bias", {E}, Use::vector);
    rs_.k_w = w.get("resampler.attn_k.weight", {E, E}, Use::matrix);
    rs_.k_b = w.get("resampler.attn_k.bias", {E}, Use::vector);
    rs_.v_w = w.get("resampler.attn_v.weight", {E, E}, Use::matrix);
    rs_.v_b = w.get("resampler.attn_v.bias", {E}, Use::vector);
    rs_.o_w = w.get("resampler.attn_out.weight", {E, E}, Use::matrix);
    rs_.o_b = w.get("resampler.attn_out.bias", {E}, Use::vector);
    rs_.ln_q_w = w.get("resampler.ln_q.weight", {E}, Use::vector);
    rs_.ln_q_b = w.get("resampler.ln_q.bias", {E}, Use::vector);
    rs_.ln_kv_w = w.get("resampler.ln_kv.weight", {E}, Use::vector);
    rs_.ln_kv_b = w.get("resampler.ln_kv.bias", {E}, Use::vector);
    rs_.ln_post_w = w.get("resampler.ln_post.weight", {E}, Use::vector);
    rs_.ln_post_b = w.get("resampler.ln_post.bias", {E}, Use::vector);
    rs_.proj = w.get("resampler.proj.weight", {E, E}, Use::matrix);
    if (w.has("v.blk." + std::to_string(hp_.n_layer) + ".attn_q.weight")) {
        fail(Status::bad_model, "omni file '" + omni_path + "' stores more vision layers than its block_count " +
                                    std::to_string(hp_.n_layer));
    }
    weights_f32_ = layers_.empty() || layers_[0].q_w->type == GGML_TYPE_F32;
}

}  // namespace minicpmo
