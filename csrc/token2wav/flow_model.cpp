#include "token2wav/flow_model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/compute_backend.h"
#include "core/error.h"
#include "core/graph_ops.h"
#include "ggml-backend.h"

namespace minicpmo {

namespace {

using Use = GgufWeights::Use;

constexpr int64_t kMaxDim = 1 << 16;
const std::string kKey = "minicpmo.token2wav.";

FlowHparams read_hparams(const GgufWeights & w) {
    const GgufHeader & h = w.header();
    const std::string where = "omni file '" + w.path() + "'";
    auto i = [&](const char * key, int64_t lo, int64_t hi) { return static_cast<int>(w.require_int(kKey + key, lo, hi)); };
    auto f = [&](const char * key) { return static_cast<float>(w.require_float(kKey + key)); };
    auto s = [&](const char * key, const char * fallback) { return h.get_str((kKey + key).c_str()).value_or(fallback); };
    FlowHparams hp;
    hp.n_mel = i("n_mel", 1, 4096);
    hp.token_mel_ratio = i("token_mel_ratio", 1, 16);
    hp.vocab = i("vocab_size", 1, 1 << 20);
    hp.silence_token = i("silence_token_id", 0, hp.vocab - 1);
    hp.chunk_tokens = i("chunk_tokens", 2, 4096);
    hp.lookahead = i("lookahead_tokens", 1, 64);
    hp.n_timesteps = i("n_timesteps", 1, 1000);
    hp.cache_tail_frames = i("stream_cache_tail_frames", 1, 1 << 20);
    hp.input_size = i("flow.input_size", 1, kMaxDim);
    hp.spk_dim = i("flow.spk_embed_dim", 1, kMaxDim);
    hp.spk_norm_eps = f("flow.spk_norm_eps");
    hp.enc_dim = i("enc.n_embd", 2, kMaxDim);
    hp.enc_head = i("enc.n_head", 1, 1024);
    hp.enc_ff = i("enc.n_ff", 1, kMaxDim * 4);
    hp.enc_block = i("enc.n_block", 0, 1024);
    hp.enc_up_block = i("enc.n_up_block", 0, 1024);
    const int pre_lookahead = i("enc.pre_lookahead", 1, 64);
    hp.up_stride = i("enc.up_stride", 1, 16);
    const float up_scale = f("enc.up_scale_factor");
    hp.key_bias = h.get_bool((kKey + "enc.key_bias").c_str()).value_or(true);
    hp.embed_norm_eps = f("enc.embed_norm_eps");
    hp.block_norm_eps = f("enc.block_norm_eps");
    hp.after_norm_eps = f("enc.after_norm_eps");
    hp.pos_max_len = i("enc.pos_max_len", 1, 1 << 24);
    hp.lookahead_slope = f("enc.lookahead_slope");
    hp.cfg_rate = f("cfm.cfg_rate");
    hp.temperature = f("cfm.temperature");
    hp.noise_frames = i("cfm.noise_frames", 1, 1 << 24);
    hp.dit_dim = i("dit.n_embd", 1, kMaxDim);
    hp.dit_layer = i("dit.n_layer", 1, 1024);
    hp.dit_head = i("dit.n_head", 1, 1024);
    hp.dit_head_dim = i("dit.head_dim", 1, 4096);
    hp.dit_ff = i("dit.n_ff", 1, kMaxDim * 4);
    const int dit_in = i("dit.in_channels", 1, kMaxDim);
    const int dit_out = i("dit.out_channels", 1, kMaxDim);
    hp.t_freq_dim = i("dit.t_freq_dim", 2, kMaxDim);
    hp.t_scale = f("dit.t_scale");
    hp.t_max_period = f("dit.t_max_period");
    hp.dit_norm_eps = f("dit.norm_eps");
    hp.qk_norm_eps = f("dit.qk_norm_eps");
    hp.conv_norm_eps = f("dit.conv_norm_eps");
    hp.conv_kernel = i("dit.conv_kernel", 1, 64);

    const std::string act = s("enc.activation", "silu"), pos = s("enc.pos_enc", "rel_pos_espnet"),
                      sched = s("cfm.t_scheduler", "cosine"), mlp = s("dit.mlp_act", "gelu_tanh");
    if (act != "silu" || pos != "rel_pos_espnet" || sched != "cosine" || mlp != "gelu_tanh") {
        fail(Status::bad_model, where + ": Token2Wav flow variant not supported (encoder activation " + act +
                                    ", positions " + pos + ", t-schedule " + sched + ", DiT MLP " + mlp + ")");
    }
    if (pre_lookahead != hp.lookahead) {
        fail(Status::bad_model, where + ": enc.pre_lookahead differs from lookahead_tokens");
    }
    if (up_scale != static_cast<float>(hp.up_stride) || hp.token_mel_ratio != hp.up_stride) {
        fail(Status::bad_model, where + ": the encoder must up-sample by exactly up_stride = token_mel_ratio");
    }
    if (hp.enc_dim % hp.enc_head || hp.input_size != hp.enc_dim) {
        fail(Status::bad_model, where + ": encoder width must equal the token embedding width and be a multiple of its heads");
    }
    if (dit_in != 4 * hp.n_mel || dit_out != hp.n_mel || hp.t_freq_dim % 2) {
        fail(Status::bad_model, where + ": DiT channels must be 4 x n_mel in ([x, mu, spk, cond]) and n_mel out, "
                                        "with an even timestep feature width");
    }
    if (!(hp.cfg_rate > 0.0f) || !(hp.temperature > 0.0f) || hp.silence_token >= hp.vocab) {
        fail(Status::bad_model, where + ": invalid CFM settings");
    }
    return hp;
}

}  // namespace

FlowModel::FlowModel(const std::string & omni_path, ComputeDevice device, bool map_file) {
    w_ = std::make_unique<GgufWeights>(omni_path, "omni file", std::vector<std::string>{"t2w.flow."},
                                       weight_buffer_type(device), map_file);
    w_->require_component("token2wav", "speech output");
    hp_ = read_hparams(*w_);
    const GgufWeights & w = *w_;
    const int64_t D = hp_.enc_dim, E = hp_.input_size, M = hp_.n_mel, H = hp_.dit_dim, I = hp_.dit_inner(),
                  dk = hp_.enc_dim / hp_.enc_head, F = hp_.enc_ff;
    tok_embd_ = w.get("t2w.flow.tok_embd.weight", {E, hp_.vocab}, Use::table);
    spk_w_ = w.get("t2w.flow.spk_proj.weight", {hp_.spk_dim, M}, Use::matrix);
    spk_b_ = w.get("t2w.flow.spk_proj.bias", {M}, Use::vector);

    const std::string e = "t2w.flow.enc.";
    enc_.embed_w = w.get(e + "embed.weight", {E, D}, Use::matrix);
    enc_.embed_b = w.get(e + "embed.bias", {D}, Use::vector);
    enc_.embed_norm_w = w.get(e + "embed_norm.weight", {D}, Use::vector);
    enc_.embed_norm_b = w.get(e + "embed_norm.bias", {D}, Use::vector);
    enc_.la_conv1_w = w.get(e + "la_conv1.weight", {hp_.lookahead + 1, D, D}, Use::table);
    enc_.la_conv1_b = w.get(e + "la_conv1.bias", {D}, Use::vector);
    enc_.la_conv2_w = w.get(e + "la_conv2.weight", {3, D, D}, Use::table);
    enc_.la_conv2_b = w.get(e + "la_conv2.bias", {D}, Use::vector);
    auto conformer = [&](const std::string & p) {
        FlowConformerLayer L{};
        L.attn_norm_w = w.get(p + "attn_norm.weight", {D}, Use::vector);
        L.attn_norm_b = w.get(p + "attn_norm.bias", {D}, Use::vector);
        L.q_w = w.get(p + "attn_q.weight", {D, D}, Use::matrix);
        L.q_b = w.get(p + "attn_q.bias", {D}, Use::vector);
        L.k_w = w.get(p + "attn_k.weight", {D, D}, Use::matrix);
        L.k_b = hp_.key_bias ? w.get(p + "attn_k.bias", {D}, Use::vector) : nullptr;
        L.v_w = w.get(p + "attn_v.weight", {D, D}, Use::matrix);
        L.v_b = w.get(p + "attn_v.bias", {D}, Use::vector);
        L.o_w = w.get(p + "attn_out.weight", {D, D}, Use::matrix);
        L.o_b = w.get(p + "attn_out.bias", {D}, Use::vector);
        L.pos_w = w.get(p + "attn_pos.weight", {D, D}, Use::matrix);
        L.pos_bias_u = w.get(p + "pos_bias_u", {dk, hp_.enc_head}, Use::vector);
        L.pos_bias_v = w.get(p + "pos_bias_v", {dk, hp_.enc_head}, Use::vector);
        L.ffn_norm_w = w.get(p + "ffn_norm.weight", {D}, Use::vector);
        L.ffn_norm_b = w.get(p + "ffn_norm.bias", {D}, Use::vector);
        L.up_w = w.get(p + "ffn_up.weight", {D, F}, Use::matrix);
        L.up_b = w.get(p + "ffn_up.bias", {F}, Use::vector);
        L.down_w = w.get(p + "ffn_down.weight", {F, D}, Use::matrix);
        L.down_b = w.get(p + "ffn_down.bias", {D}, Use::vector);
        return L;
    };
    for (int i = 0; i < hp_.enc_block; ++i) enc_.blocks.push_back(conformer(e + "blk." + std::to_string(i) + "."));
    enc_.up_conv_w = w.get(e + "up_conv.weight", {2 * hp_.up_stride + 1, D, D}, Use::table);
    enc_.up_conv_b = w.get(e + "up_conv.bias", {D}, Use::vector);
    enc_.up_embed_w = w.get(e + "up_embed.weight", {E, D}, Use::matrix);
    enc_.up_embed_b = w.get(e + "up_embed.bias", {D}, Use::vector);
    enc_.up_embed_norm_w = w.get(e + "up_embed_norm.weight", {D}, Use::vector);
    enc_.up_embed_norm_b = w.get(e + "up_embed_norm.bias", {D}, Use::vector);
    for (int i = 0; i < hp_.enc_up_block; ++i) enc_.up_blocks.push_back(conformer(e + "up_blk." + std::to_string(i) + "."));
    enc_.out_norm_w = w.get(e + "out_norm.weight", {D}, Use::vector);
    enc_.out_norm_b = w.get(e + "out_norm.bias", {D}, Use::vector);
    if (w.has(e + "blk." + std::to_string(hp_.enc_block) + ".attn_q.weight") ||
        w.has(e + "up_blk." + std::to_string(hp_.enc_up_block) + ".attn_q.weight")) {
        fail(Status::bad_model, "omni file '" + omni_path + "' stores more flow encoder blocks than its keys say");
    }
    proj_w_ = w.get("t2w.flow.enc_proj.weight", {D, M}, Use::matrix);
    proj_b_ = w.get("t2w.flow.enc_proj.bias", {M}, Use::vector);

    const std::string d = "t2w.flow.dit.";
    dit_.t_mlp1_w = w.get(d + "t_mlp1.weight", {hp_.t_freq_dim, H}, Use::matrix);
    dit_.t_mlp1_b = w.get(d + "t_mlp1.bias", {H}, Use::vector);
    dit_.t_mlp2_w = w.get(d + "t_mlp2.weight", {H, H}, Use::matrix);
    dit_.t_mlp2_b = w.get(d + "t_mlp2.bias", {H}, Use::vector);
    dit_.in_proj_w = w.get(d + "in_proj.weight", {4 * M, H}, Use::matrix);
    dit_.in_proj_b = w.get(d + "in_proj.bias", {H}, Use::vector);
    const int64_t hd = hp_.dit_head_dim, K = hp_.conv_kernel, FF = hp_.dit_ff;
    for (int i = 0; i < hp_.dit_layer; ++i) {
        const std::string p = d + "blk." + std::to_string(i) + ".";
        FlowDitBlock B{};
        B.q_w = w.get(p + "attn_q.weight", {H, I}, Use::matrix);
        B.q_b = w.get(p + "attn_q.bias", {I}, Use::vector);
        B.k_w = w.get(p + "attn_k.weight", {H, I}, Use::matrix);
        B.k_b = w.get(p + "attn_k.bias", {I}, Use::vector);
        B.v_w = w.get(p + "attn_v.weight", {H, I}, Use::matrix);
        B.v_b = w.get(p + "attn_v.bias", {I}, Use::vector);
        B.q_norm_w = w.get(p + "attn_q_norm.weight", {hd}, Use::vector);
        B.q_norm_b = w.get(p + "attn_q_norm.bias", {hd}, Use::vector);
        B.k_norm_w = w.get(p + "attn_k_norm.weight", {hd}, Use::vector);
        B.k_norm_b = w.get(p + "attn_k_norm.bias", {hd}, Use::vector);
        B.o_w = w.get(p + "attn_out.weight", {I, H}, Use::matrix);
        B.o_b = w.get(p + "attn_out.bias", {H}, Use::vector);
        B.conv1_w = w.get(p + "conv1.weight", {K, H, H}, Use::table);
        B.conv1_b = w.get(p + "conv1.bias", {H}, Use::vector);
        B.conv_norm_w = w.get(p + "conv_norm.weight", {H}, Use::vector);
        B.conv_norm_b = w.get(p + "conv_norm.bias", {H}, Use::vector);
        B.conv2_w = w.get(p + "conv2.weight", {K, H, H}, Use::table);
        B.conv2_b = w.get(p + "conv2.bias", {H}, Use::vector);
        B.up_w = w.get(p + "ffn_up.weight", {H, FF}, Use::matrix);
        B.up_b = w.get(p + "ffn_up.bias", {FF}, Use::vector);
        B.down_w = w.get(p + "ffn_down.weight", {FF, H}, Use::matrix);
        B.down_b = w.get(p + "ffn_down.bias", {H}, Use::vector);
        B.ada_w = w.get(p + "adaln.weight", {H, 9 * H}, Use::matrix);
        B.ada_b = w.get(p + "adaln.bias", {9 * H}, Use::vector);
        dit_.blocks.push_back(B);
    }
    if (w.has(d + "blk." + std::to_string(hp_.dit_layer) + ".attn_q.weight")) {
        fail(Status::bad_model, "omni file '" + omni_path + "' stores more DiT blocks than its n_layer");
    }
    dit_.final_ada_w = w.get(d + "final_adaln.weight", {H, 2 * H}, Use::matrix);
    dit_.final_ada_b = w.get(d + "final_adaln.bias", {2 * H}, Use::vector);
    dit_.final_proj_w = w.get(d + "final_proj.weight", {H, M}, Use::matrix);
    dit_.final_proj_b = w.get(d + "final_proj.bias", {M}, Use::vector);
    weights_f32_ = dit_.blocks[0].q_w->type == GGML_TYPE_F32;
    make_tap_major_kernels(device);
}

void FlowModel::make_tap_major_kernels(ComputeDevice device) {
    std::vector<ggml_tensor **> kernels{&enc_.la_conv1_w, &enc_.la_conv2_w, &enc_.up_conv_w};
    for (FlowDitBlock & b : dit_.blocks) {
        kernels.push_back(&b.conv1_w);
        kernels.push_back(&b.conv2_w);
    }
    ggml_init_params ip{};
    ip.mem_size = (kernels.size() + 1) * ggml_tensor_overhead();
    ip.no_alloc = true;
    kernel_ctx_.reset(ggml_init(ip));
    if (!kernel_ctx_) fail(Status::internal, "cannot create the flow's convolution kernel context");
    std::vector<ggml_tensor *> made;
    for (ggml_tensor ** k : kernels) {
        const ggml_tensor * f = *k;  // ne (K, C_in, C_out), F32 or F16 (Use::table)
        made.push_back(ggml_new_tensor_2d(kernel_ctx_.get(), f->type, f->ne[0] * f->ne[1], f->ne[2]));
    }
    kernel_buf_.reset(ggml_backend_alloc_ctx_tensors_from_buft(kernel_ctx_.get(), weight_buffer_type(device)));
    if (!kernel_buf_) fail(Status::internal, "out of memory allocating the flow's convolution kernels");
    ggml_backend_buffer_set_usage(kernel_buf_.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    std::vector<uint8_t> from, to;
    for (size_t i = 0; i < kernels.size(); ++i) {
        const ggml_tensor * f = *kernels[i];
        const int64_t K = f->ne[0], C_in = f->ne[1], C_out = f->ne[2];
        const size_t es = ggml_element_size(f);
        from.resize(ggml_nbytes(f));
        to.resize(from.size());
        ggml_backend_tensor_get(f, from.data(), 0, from.size());
        tap_major_kernel(from.data(), to.data(), K, C_in, C_out, es);
        ggml_backend_tensor_set(made[i], to.data(), 0, to.size());
        ggml_set_name(made[i], f->name);
        w_->drop_pages(f);  // the file's layout is not read again
        *kernels[i] = made[i];
    }
}

}  // namespace minicpmo
