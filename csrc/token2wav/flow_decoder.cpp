#include "token2wav/flow_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>

#include "core/error.h"
#include "core/uniform_random.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "token2wav/flow_graph.h"

namespace minicpmo {

namespace {

constexpr int kBranches = 2;  // classifier-free guidance: conditional, unconditional
// ~300 KB each at the release's size; 10-step and 5-step streams together use 14 values of t
constexpr size_t kMaxCachedModulations = 32;

// ~100 nodes per DiT block and ~60 per Conformer layer (views included); generous headroom
size_t graph_nodes(const FlowHparams & hp) {
    return static_cast<size_t>(std::max(hp.dit_layer, hp.enc_block + hp.enc_up_block)) * 192 + 512;
}

ggml_tensor * input(ggml_context * ctx, ggml_type type, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1, int64_t ne3 = 1) {
    ggml_tensor * t = ggml_new_tensor_4d(ctx, type, ne0, ne1, ne2, ne3);
    ggml_set_input(t);
    return t;
}

void set(ggml_tensor * t, const void * data) { ggml_backend_tensor_set(t, data, 0, ggml_nbytes(t)); }

std::vector<float> get(ggml_tensor * t) {
    std::vector<float> v(ggml_nelements(t));
    ggml_backend_tensor_get(t, v.data(), 0, v.size() * sizeof(float));
    return v;
}

bool all_finite(const float * p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(p[i])) return false;
    }
    return true;
}

}  // namespace

FlowPrompt flow_prompt(const VoicePrompt & v, const FlowHparams & hp) {
    const size_t n = v.tokens.size();
    if (n == 0 || static_cast<int>(v.spk.size()) != hp.spk_dim || v.n_mel != hp.n_mel ||
        v.mel.size() != n * hp.token_mel_ratio * hp.n_mel) {
        fail(Status::bad_model, "voice '" + v.name + "' does not fit the flow: it needs " + std::to_string(hp.spk_dim) +
                                    " speaker values and " + std::to_string(hp.token_mel_ratio) + " mel frames of " +
                                    std::to_string(hp.n_mel) + " bins per prompt token");
    }
    FlowPrompt p;
    p.tokens = v.tokens.data();
    p.n_tokens = static_cast<int>(n);
    p.mel = v.mel.data();
    p.xvec = v.spk.data();
    return p;
}

struct FlowDecoder::EncoderRun {
    int n_tok = 0;  // token frames produced (look-ahead consumed)
    FlowEncoding enc;
    std::vector<float> conv_next;
    std::vector<std::vector<float>> k_new, v_new;
};

FlowDecoder::FlowDecoder(std::shared_ptr<const FlowModel> model, ComputeDevice device, int n_threads, uint64_t seed,
                         ComputeType compute)
    : model_(std::move(model)), backend_(device, n_threads, compute, &model_->weights()), runner_(backend_, graph_nodes(model_->hparams())),
      seed_(seed) {
}

FlowDecoder::~FlowDecoder() { free_estimator_cache(); }

// ---- noise ----

void FlowDecoder::set_noise(const float * noise, int n_frames) {
    const int M = model_->hparams().n_mel;
    if (!noise || n_frames <= 0) fail(Status::invalid_argument, "the CFM noise buffer is empty");
    const size_t n = static_cast<size_t>(n_frames) * M;
    if (!all_finite(noise, n)) fail(Status::invalid_argument, "the CFM noise buffer contains non-finite values");
    // the same numbers again keep primed stream caches valid (they depend on the content only)
    if (n_frames == noise_frames_ && std::equal(noise, noise + n, noise_.begin())) return;
    noise_.assign(noise, noise + n);
    noise_frames_ = n_frames;
    ++noise_version_;
}

void FlowDecoder::reseed_noise(uint64_t seed) {
    seed_ = seed;
    noise_.clear();
    noise_frames_ = 0;
    ++noise_version_;
    ensure_noise();
}

void FlowDecoder::ensure_noise() {
    if (noise_frames_ > 0) return;
    const FlowHparams & hp = model_->hparams();
    // Drawn channel by channel like randn(1, n_mel, frames), stored frame-major.
    std::mt19937_64 rng(seed_);
    noise_frames_ = hp.noise_frames;
    const size_t total = static_cast<size_t>(noise_frames_) * hp.n_mel;
    std::vector<float> drawn(total);
    standard_normals(rng, drawn.data(), total);
    noise_.assign(total, 0.0f);
    for (size_t j = 0; j < total; ++j) {  // j = channel * frames + frame in draw order
        noise_[(j % noise_frames_) * hp.n_mel + j / noise_frames_] = drawn[j];
    }
}

// ---- checks ----

void FlowDecoder::check_tokens(const int32_t * tokens, int n, const char * what) const {
    const int vocab = model_->hparams().vocab;
    if (n > 0 && !tokens) fail(Status::invalid_argument, std::string(what) + " are NULL");
    for (int i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= vocab) {
            fail(Status::invalid_argument, std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) +
                                               " is not a speech token: ids must be in [0, " + std::to_string(vocab) + ")");
        }
    }
}

void FlowDecoder::check_prompt(const FlowPrompt & p) const {
    const FlowHparams & hp = model_->hparams();
    if (p.n_tokens <= 0 || !p.tokens) fail(Status::invalid_argument, "the voice prompt needs at least one speech token");
    check_tokens(p.tokens, p.n_tokens, "prompt tokens");
    if (!p.mel) fail(Status::invalid_argument, "the voice prompt has no mel frames");
    if (!p.xvec) fail(Status::invalid_argument, "the voice prompt has no speaker embedding");
    const size_t n_mel = static_cast<size_t>(p.n_tokens) * hp.token_mel_ratio * hp.n_mel;
    if (!all_finite(p.mel, n_mel)) fail(Status::invalid_argument, "the voice prompt mel contains non-finite values");
    if (!all_finite(p.xvec, hp.spk_dim)) fail(Status::invalid_argument, "the speaker embedding contains non-finite values");
}

// ---- graphs ----

std::vector<float> FlowDecoder::run_speaker(const float * xvec) {
    const FlowHparams & hp = model_->hparams();
    if (!xvec) fail(Status::invalid_argument, "no speaker embedding");
    if (!all_finite(xvec, hp.spk_dim)) fail(Status::invalid_argument, "the speaker embedding contains non-finite values");
    const GraphContext graph = runner_.new_context("flow");
    ggml_context * ctx = graph.get();
    ggml_tensor * x = input(ctx, GGML_TYPE_F32, hp.spk_dim);
    ggml_tensor * spk = build_flow_speaker(ctx, *model_, x);
    ggml_set_output(spk);
    ggml_cgraph * gf = graph.new_graph();
    ggml_build_forward_expand(gf, spk);
    runner_.allocate(gf);
    set(x, xvec);
    runner_.compute(gf);
    return get(spk);
}

std::vector<float> FlowDecoder::speaker(const float * xvec) { return run_speaker(xvec); }

FlowDecoder::EncoderRun FlowDecoder::run_encoder(const int32_t * ids, int n, bool pad_lookahead, bool use_cache) {
    const FlowHparams & hp = model_->hparams();
    const int L = hp.lookahead, s = hp.up_stride, D = hp.enc_dim;
    const int n_tok = pad_lookahead ? n : n - L;
    if (n_tok < 1) {
        fail(Status::invalid_argument, "flow encoder: " + std::to_string(n) + " tokens leave no frame after the " +
                                           std::to_string(L) + " look-ahead tokens");
    }
    const int c_tok = use_cache ? enc_tok_len_ : 0, c_mel = use_cache ? enc_mel_len_ : 0;
    const int pe_tok = c_tok + n_tok, pe_mel = c_mel + s * n_tok;
    if (std::max(pe_tok, pe_mel) > hp.pos_max_len) {
        fail(Status::invalid_argument, "flow encoder: " + std::to_string(std::max(pe_tok, pe_mel)) +
                                           " frames exceed the relative-position table (" + std::to_string(hp.pos_max_len) +
                                           " positions)");
    }
    const GraphContext graph = runner_.new_context("flow");
    ggml_context * ctx = graph.get();
    FlowEncoderIn in;
    in.ids = input(ctx, GGML_TYPE_I32, n);
    in.pad_lookahead = pad_lookahead;
    in.conv_prev = input(ctx, GGML_TYPE_F32, D, 2 + 2 * s);
    in.pe_tok = input(ctx, GGML_TYPE_F32, D, 2 * pe_tok - 1);
    in.pe_mel = input(ctx, GGML_TYPE_F32, D, 2 * pe_mel - 1);
    const size_t n_layers = static_cast<size_t>(hp.enc_block + hp.enc_up_block);
    if (use_cache && c_tok > 0) {
        for (size_t i = 0; i < n_layers; ++i) {
            const int c = static_cast<int>(i) < hp.enc_block ? c_tok : c_mel;
            in.k_prev.push_back(input(ctx, GGML_TYPE_F32, D, c));
            in.v_prev.push_back(input(ctx, GGML_TYPE_F32, D, c));
        }
    }
    FlowEncoderOut out = build_flow_encoder(ctx, *model_, in);
    ggml_cgraph * gf = graph.new_graph();
    std::vector<ggml_tensor *> outs = {out.h, out.mu, out.conv_next};
    if (use_cache) {
        outs.insert(outs.end(), out.k_new.begin(), out.k_new.end());
        outs.insert(outs.end(), out.v_new.begin(), out.v_new.end());
    }
    for (ggml_tensor * t : outs) {
        ggml_set_output(t);
        ggml_build_forward_expand(gf, t);
    }
    runner_.allocate(gf);

    set(in.ids, ids);
    std::vector<float> conv(static_cast<size_t>(D) * (2 + 2 * s), 0.0f);
    if (use_cache && !enc_conv_.empty()) conv = enc_conv_;
    set(in.conv_prev, conv.data());
    set(in.pe_tok, espnet_rel_pos_table(pe_tok, D).data());
    set(in.pe_mel, espnet_rel_pos_table(pe_mel, D).data());
    for (size_t i = 0; i < in.k_prev.size(); ++i) {
        set(in.k_prev[i], enc_k_[i].data());
        set(in.v_prev[i], enc_v_[i].data());
    }
    runner_.compute(gf);

    EncoderRun r;
    r.n_tok = n_tok;
    r.enc.n_frames = s * n_tok;
    r.enc.h = get(out.h);
    r.enc.mu = get(out.mu);
    r.conv_next = get(out.conv_next);
    if (use_cache) {
        for (size_t i = 0; i < n_layers; ++i) {
            r.k_new.push_back(get(out.k_new[i]));
            r.v_new.push_back(get(out.v_new[i]));
        }
    }
    return r;
}

FlowEncoding FlowDecoder::encode(const int32_t * tokens, int n) {
    if (n <= 0) fail(Status::invalid_argument, "the flow encoder needs at least one speech token");
    check_tokens(tokens, n, "tokens");
    return run_encoder(tokens, n, true, false).enc;
}

std::vector<float> FlowDecoder::run_dit(const std::vector<float> & x_in, int n_frames, float t, int step,
                                        const std::vector<int32_t> & slots) {
    const FlowHparams & hp = model_->hparams();
    const int M = hp.n_mel, H = hp.dit_dim, K1 = hp.conv_kernel - 1, n_layer = hp.dit_layer;
    const bool cached = step >= 0;
    const std::vector<float> & modulation = dit_modulation(t);  // its own graph, before this one's
    const GraphContext graph = runner_.new_context("flow");
    ggml_context * ctx = graph.get();
    ggml_cgraph * gf = graph.new_graph();
    DitIn in;
    in.x_in = input(ctx, GGML_TYPE_F32, 4 * M, n_frames, kBranches);
    in.modulation = input(ctx, GGML_TYPE_F32, dit_modulation_width(hp));
    in.conv_prev = input(ctx, GGML_TYPE_F32, H, K1, kBranches, 2 * n_layer);
    in.onednn_ops = backend_.onednn_attention();
    // the keys one query may read (0) or not (-inf), the same for every query of the call
    std::vector<float> key_row;
    const int64_t padded_keys = dit_key_slots(n_frames);
    if (cached) {
        in.k_cache = cache_k_[step];
        in.v_cache = cache_v_[step];
        in.slots = input(ctx, GGML_TYPE_I32, n_frames);
        in.mask = input(ctx, in.onednn_ops ? GGML_TYPE_F16 : GGML_TYPE_F32, cache_capacity_, n_frames);
        // live keys: the cached frames and this call's
        key_row.assign(cache_capacity_, -std::numeric_limits<float>::infinity());
        for (int32_t sl : est_order_) key_row[sl] = 0.0f;
        for (int32_t sl : slots) key_row[sl] = 0.0f;
    } else if (!in.onednn_ops && padded_keys != n_frames) {
        // the keys padded to the aligned count for ggml's CPU GEMM (the fused op of BF16 and int8 sessions
        // takes any count): the mask hides the padding
        in.mask = input(ctx, GGML_TYPE_F32, padded_keys, n_frames);
        key_row.assign(padded_keys, -std::numeric_limits<float>::infinity());
        std::fill(key_row.begin(), key_row.begin() + n_frames, 0.0f);
    }
    std::vector<float> mask;
    mask.reserve(key_row.size() * n_frames);
    for (int i = 0; i < n_frames && !key_row.empty(); ++i) mask.insert(mask.end(), key_row.begin(), key_row.end());
    DitOut out = build_dit(ctx, gf, *model_, in);
    ggml_set_output(out.velocity);
    ggml_build_forward_expand(gf, out.velocity);
    if (cached) {
        for (ggml_tensor * t_out : out.conv_next) {
            ggml_set_output(t_out);
            ggml_build_forward_expand(gf, t_out);
        }
    }
    runner_.allocate(gf);

    set(in.x_in, x_in.data());
    set(in.modulation, modulation.data());
    const size_t conv_size = static_cast<size_t>(2) * n_layer * kBranches * K1 * H;
    if (cached) {
        set(in.conv_prev, est_conv_[step].data());
        set(in.slots, slots.data());
    } else {
        std::vector<float> zeros(conv_size, 0.0f);
        set(in.conv_prev, zeros.data());
    }
    if (in.mask && in.mask->type == GGML_TYPE_F16) {
        std::vector<ggml_fp16_t> mask_f16(mask.size());
        ggml_fp32_to_fp16_row(mask.data(), mask_f16.data(), static_cast<int64_t>(mask.size()));
        ggml_backend_tensor_set(in.mask, mask_f16.data(), 0, mask_f16.size() * sizeof(ggml_fp16_t));
    } else if (in.mask) {
        set(in.mask, mask.data());
    }
    runner_.compute(gf);
    if (cached) {
        const size_t per = static_cast<size_t>(kBranches) * K1 * H;
        for (size_t i = 0; i < out.conv_next.size(); ++i) {
            ggml_backend_tensor_get(out.conv_next[i], est_conv_[step].data() + i * per, 0, per * sizeof(float));
        }
    }
    return get(out.velocity);
}

const std::vector<float> & FlowDecoder::dit_modulation(float t) {
    uint32_t key;
    static_assert(sizeof(key) == sizeof(t));
    std::memcpy(&key, &t, sizeof(key));
    const auto found = modulations_.find(key);
    if (found != modulations_.end()) return found->second;
    const FlowHparams & hp = model_->hparams();
    const GraphContext graph = runner_.new_context("flow");
    ggml_context * ctx = graph.get();
    ggml_tensor * t_feat = input(ctx, GGML_TYPE_F32, hp.t_freq_dim);
    const std::vector<ggml_tensor *> mods = build_dit_modulation(ctx, *model_, t_feat);
    ggml_cgraph * gf = graph.new_graph();
    for (ggml_tensor * m : mods) {
        ggml_set_output(m);
        ggml_build_forward_expand(gf, m);
    }
    runner_.allocate(gf);
    set(t_feat, dit_timestep_features(t, hp).data());
    runner_.compute(gf);
    std::vector<float> all;
    all.reserve(dit_modulation_width(hp));
    for (ggml_tensor * m : mods) {
        const std::vector<float> v = get(m);
        all.insert(all.end(), v.begin(), v.end());
    }
    add_one_to_dit_scales(all.data(), hp);
    // a stream uses n_timesteps values of t; whole-utterance calls with other step counts add more
    if (modulations_.size() >= kMaxCachedModulations) modulations_.clear();
    return modulations_.emplace(key, std::move(all)).first->second;
}

std::vector<float> FlowDecoder::velocity(const float * x, const float * mu, const float * spk, const float * cond,
                                         int n_frames, float t) {
    const int M = model_->hparams().n_mel;
    if (n_frames <= 0 || !x || !mu || !spk || !cond) fail(Status::invalid_argument, "velocity needs x, mu, spk and cond");
    std::vector<float> x_in(static_cast<size_t>(kBranches) * n_frames * 4 * M, 0.0f);
    for (int f = 0; f < n_frames; ++f) {
        float * row = x_in.data() + static_cast<size_t>(f) * 4 * M;
        float * row_u = row + static_cast<size_t>(n_frames) * 4 * M;
        std::copy(x + f * M, x + (f + 1) * M, row);
        std::copy(mu + f * M, mu + (f + 1) * M, row + M);
        std::copy(spk, spk + M, row + 2 * M);
        std::copy(cond + f * M, cond + (f + 1) * M, row + 3 * M);
        std::copy(x + f * M, x + (f + 1) * M, row_u);
    }
    return run_dit(x_in, n_frames, t, -1, {});
}

std::vector<float> FlowDecoder::run_cfm(const float * mu, const float * spk, const float * cond, int n_frames,
                                        int noise_offset, int n_timesteps, bool streaming,
                                        const std::vector<int32_t> & slots) {
    const FlowHparams & hp = model_->hparams();
    const int M = hp.n_mel;
    ensure_noise();
    if (noise_offset < 0 || noise_offset + n_frames > noise_frames_) {
        fail(Status::invalid_argument, "CFM noise frames [" + std::to_string(noise_offset) + ", " +
                                           std::to_string(noise_offset + n_frames) + ") are outside the " +
                                           std::to_string(noise_frames_) + "-frame noise buffer");
    }
    const size_t n = static_cast<size_t>(n_frames) * M;
    std::vector<float> x(noise_.begin() + static_cast<size_t>(noise_offset) * M,
                         noise_.begin() + static_cast<size_t>(noise_offset) * M + n);
    for (float & v : x) v *= hp.temperature;
    // both branches share x and t; the unconditional one sees zeros for mu, spk and cond
    std::vector<float> x_in(kBranches * n * 4, 0.0f);
    for (int f = 0; f < n_frames; ++f) {
        float * row = x_in.data() + static_cast<size_t>(f) * 4 * M;
        std::copy(mu + f * M, mu + (f + 1) * M, row + M);
        std::copy(spk, spk + M, row + 2 * M);
        if (cond) std::copy(cond + f * M, cond + (f + 1) * M, row + 3 * M);
    }
    const std::vector<float> t_span = cosine_t_span(n_timesteps);
    // the reference advances t by accumulation: t += dt; dt = t_span[k+1] - t
    float t = t_span[0], dt = t_span[1] - t_span[0];
    const float w_cond = static_cast<float>(1.0 + static_cast<double>(hp.cfg_rate)), w_uncond = hp.cfg_rate;
    for (int step = 1; step <= n_timesteps; ++step) {
        for (int f = 0; f < n_frames; ++f) {
            const float * xs = x.data() + static_cast<size_t>(f) * M;
            std::copy(xs, xs + M, x_in.data() + static_cast<size_t>(f) * 4 * M);
            std::copy(xs, xs + M, x_in.data() + (static_cast<size_t>(n_frames) + f) * 4 * M);
        }
        const std::vector<float> v = run_dit(x_in, n_frames, t, streaming ? step - 1 : -1, slots);
        for (size_t i = 0; i < n; ++i) {
            const float vel = w_cond * v[i] - w_uncond * v[n + i];
            x[i] = x[i] + dt * vel;
        }
        t = t + dt;
        if (step < n_timesteps) dt = t_span[step + 1] - t;
    }
    return x;
}

std::vector<float> FlowDecoder::cfm(const float * mu, const float * spk, const float * cond, int n_frames,
                                    int noise_offset, int n_timesteps) {
    if (n_frames <= 0 || !mu || !spk || !cond) fail(Status::invalid_argument, "the CFM needs mu, spk and cond frames");
    if (n_timesteps < 0) fail(Status::invalid_argument, "n_timesteps must be positive");
    const int steps = n_timesteps > 0 ? n_timesteps : model_->hparams().n_timesteps;
    return run_cfm(mu, spk, cond, n_frames, noise_offset, steps, false, {});
}

std::vector<float> FlowDecoder::inference(const int32_t * tokens, int n, const FlowPrompt & prompt, int n_timesteps) {
    const FlowHparams & hp = model_->hparams();
    if (n <= 0) fail(Status::invalid_argument, "flow inference needs at least one speech token");
    if (n_timesteps < 0) fail(Status::invalid_argument, "n_timesteps must be positive");
    check_tokens(tokens, n, "tokens");
    check_prompt(prompt);
    const int steps = n_timesteps > 0 ? n_timesteps : hp.n_timesteps;
    const std::vector<float> spk = run_speaker(prompt.xvec);
    std::vector<int32_t> all(prompt.tokens, prompt.tokens + prompt.n_tokens);
    all.insert(all.end(), tokens, tokens + n);
    const FlowEncoding e = run_encoder(all.data(), static_cast<int>(all.size()), true, false).enc;
    const int M = hp.n_mel, P = prompt.n_tokens * hp.token_mel_ratio;
    std::vector<float> cond(e.mu.size(), 0.0f);
    std::copy(prompt.mel, prompt.mel + static_cast<size_t>(P) * M, cond.begin());
    std::vector<float> mel = run_cfm(e.mu.data(), spk.data(), cond.data(), e.n_frames, 0, steps, false, {});
    return std::vector<float>(mel.begin() + static_cast<size_t>(P) * M, mel.end());
}

// ---- streaming ----

void FlowDecoder::free_estimator_cache() {
    if (cache_buf_) ggml_backend_buffer_free(cache_buf_);
    if (cache_ctx_) ggml_free(cache_ctx_);
    cache_buf_ = nullptr;
    cache_ctx_ = nullptr;
    cache_k_.clear();
    cache_v_.clear();
    cache_capacity_ = 0;
}

void FlowDecoder::alloc_estimator_cache(int n_steps, int capacity) {
    if (cache_ctx_ && static_cast<int>(cache_k_.size()) == n_steps && cache_capacity_ == capacity) {
        ggml_backend_buffer_clear(cache_buf_, 0);
        return;
    }
    free_estimator_cache();
    const FlowHparams & hp = model_->hparams();
    ggml_init_params ip{};
    ip.mem_size = ggml_tensor_overhead() * 2 * static_cast<size_t>(n_steps) * hp.dit_layer;
    ip.no_alloc = true;
    cache_ctx_ = ggml_init(ip);
    if (!cache_ctx_) fail(Status::internal, "cannot create the flow estimator cache context");
    const ggml_type type = backend_.attention_cache_type(model_->weights_f32());
    cache_k_.assign(n_steps, {});
    cache_v_.assign(n_steps, {});
    for (int s = 0; s < n_steps; ++s) {
        for (int l = 0; l < hp.dit_layer; ++l) {
            cache_k_[s].push_back(ggml_new_tensor_3d(cache_ctx_, type, hp.dit_inner(), capacity, kBranches));
            cache_v_[s].push_back(ggml_new_tensor_3d(cache_ctx_, type, hp.dit_inner(), capacity, kBranches));
        }
    }
    cache_buf_ = ggml_backend_alloc_ctx_tensors_from_buft(cache_ctx_, weight_buffer_type(backend_.device()));
    if (!cache_buf_) {
        free_estimator_cache();
        fail(Status::internal, "out of memory allocating the flow estimator cache");
    }
    // empty slots are masked, but 0 x NaN from stale memory would still poison the sums
    ggml_backend_buffer_clear(cache_buf_, 0);
    cache_capacity_ = capacity;
}

void FlowDecoder::stream_start(const FlowPrompt & prompt, int n_timesteps) {
    const FlowHparams & hp = model_->hparams();
    if (n_timesteps < 0) fail(Status::invalid_argument, "n_timesteps must be positive");
    check_prompt(prompt);
    stream_ready_ = false;
    const int L = hp.lookahead, s = hp.up_stride, D = hp.enc_dim;
    n_steps_ = n_timesteps > 0 ? n_timesteps : hp.n_timesteps;
    prompt_frames_ = prompt.n_tokens * s;
    spk_ = run_speaker(prompt.xvec);
    // caches hold at most prompt + tail frames between windows, plus one window's frames (slots
    // rounded up for the attention's products: dit_key_slots)
    const int capacity = static_cast<int>(dit_key_slots(prompt_frames_ + hp.cache_tail_frames + s * (hp.chunk_tokens + L)));
    alloc_estimator_cache(n_steps_, capacity);
    est_order_.clear();
    free_slots_.clear();
    for (int i = 0; i < capacity; ++i) free_slots_.push_back(i);
    est_conv_.assign(n_steps_, std::vector<float>(static_cast<size_t>(2) * hp.dit_layer * kBranches *
                                                          (hp.conv_kernel - 1) * hp.dit_dim,
                                                  0.0f));
    const size_t n_layers = static_cast<size_t>(hp.enc_block + hp.enc_up_block);
    enc_k_.assign(n_layers, {});
    enc_v_.assign(n_layers, {});
    enc_tok_len_ = enc_mel_len_ = 0;
    enc_conv_.assign(static_cast<size_t>(D) * (2 + 2 * s), 0.0f);

    // prompt ‖ silence look-ahead through the encoder (not a last chunk: the look-ahead is real)
    std::vector<int32_t> ids(prompt.tokens, prompt.tokens + prompt.n_tokens);
    ids.insert(ids.end(), L, hp.silence_token);
    EncoderRun r = run_encoder(ids.data(), static_cast<int>(ids.size()), false, true);
    for (size_t i = 0; i < n_layers; ++i) {
        enc_k_[i] = std::move(r.k_new[i]);
        enc_v_[i] = std::move(r.v_new[i]);
    }
    enc_tok_len_ = r.n_tok;
    enc_mel_len_ = r.enc.n_frames;
    enc_conv_ = std::move(r.conv_next);
    // the estimator pass over the prompt (cond = prompt mel) fills its caches; output discarded
    std::vector<int32_t> slots(free_slots_.begin(), free_slots_.begin() + r.enc.n_frames);
    run_cfm(r.enc.mu.data(), spk_.data(), prompt.mel, r.enc.n_frames, 0, n_steps_, true, slots);
    free_slots_.erase(free_slots_.begin(), free_slots_.begin() + r.enc.n_frames);
    est_order_ = slots;
    stream_ready_ = true;
}

std::vector<float> FlowDecoder::stream_chunk(const int32_t * tokens, int n, bool last_chunk) {
    const FlowHparams & hp = model_->hparams();
    if (!stream_ready_) fail(Status::invalid_argument, "the flow stream is not started: give it a voice prompt first");
    const int L = hp.lookahead, max_window = hp.chunk_tokens + L;
    check_tokens(tokens, n, "window tokens");
    if (!last_chunk && n < L + 2) {
        fail(Status::invalid_argument, "a non-final streaming window needs " + std::to_string(L) +
                                           " look-ahead tokens plus at least 2 fresh tokens, got " + std::to_string(n));
    }
    if (last_chunk && n < 1) fail(Status::invalid_argument, "the final streaming window needs at least one token");
    if (n > max_window) {
        fail(Status::invalid_argument, "a streaming window holds at most " + std::to_string(max_window) + " tokens (" +
                                           std::to_string(hp.chunk_tokens) + " + " + std::to_string(L) +
                                           " look-ahead), got " + std::to_string(n));
    }
    const int offset = static_cast<int>(est_order_.size());
    EncoderRun r = run_encoder(tokens, n, last_chunk, true);
    const int T = r.enc.n_frames;
    if (static_cast<int>(free_slots_.size()) < T) fail(Status::internal, "flow estimator cache overflow");
    std::vector<int32_t> slots(free_slots_.begin(), free_slots_.begin() + T);
    std::vector<float> mel;
    try {
        mel = run_cfm(r.enc.mu.data(), spk_.data(), nullptr, T, offset, n_steps_, true, slots);
    } catch (...) {
        // the estimator caches were partly written: this stream cannot continue consistently
        stream_ready_ = false;
        throw;
    }
    free_slots_.erase(free_slots_.begin(), free_slots_.begin() + T);
    // newest block first, as the reference concatenates [new, cache]
    est_order_.insert(est_order_.begin(), slots.begin(), slots.end());
    for (size_t i = 0; i < enc_k_.size(); ++i) {
        enc_k_[i].insert(enc_k_[i].end(), r.k_new[i].begin(), r.k_new[i].end());
        enc_v_[i].insert(enc_v_[i].end(), r.v_new[i].begin(), r.v_new[i].end());
    }
    enc_tok_len_ += r.n_tok;
    enc_mel_len_ += T;
    enc_conv_ = std::move(r.conv_next);
    trim_caches();
    return mel;
}

void FlowDecoder::trim_caches() {
    const FlowHparams & hp = model_->hparams();
    const int P = prompt_frames_, keep = hp.cache_tail_frames, s = hp.up_stride, D = hp.enc_dim;
    // estimator (1.0.7 trim on the newest-first order): entries [:P] ‖ [-keep:]
    const int n = static_cast<int>(est_order_.size());
    if (n > P + keep) {
        std::vector<int32_t> kept(est_order_.begin(), est_order_.begin() + P);
        kept.insert(kept.end(), est_order_.end() - keep, est_order_.end());
        free_slots_.insert(free_slots_.end(), est_order_.begin() + P, est_order_.end() - keep);
        std::sort(free_slots_.begin(), free_slots_.end());
        est_order_ = std::move(kept);
    }
    // conformer (oldest first): token frames [:P/s] ‖ [-keep/s:], mel frames [:P] ‖ [-keep:]
    if (enc_mel_len_ > P + keep) {
        auto cut = [D](std::vector<float> & c, int len, int head, int tail) {
            std::vector<float> out(c.begin(), c.begin() + static_cast<size_t>(head) * D);
            out.insert(out.end(), c.begin() + static_cast<size_t>(len - tail) * D, c.begin() + static_cast<size_t>(len) * D);
            c = std::move(out);
        };
        for (size_t i = 0; i < enc_k_.size(); ++i) {
            const bool tok = static_cast<int>(i) < hp.enc_block;
            const int len = tok ? enc_tok_len_ : enc_mel_len_;
            const int head = tok ? P / s : P, tail = tok ? keep / s : keep;
            cut(enc_k_[i], len, head, tail);
            cut(enc_v_[i], len, head, tail);
        }
        enc_tok_len_ = P / s + keep / s;
        enc_mel_len_ = P + keep;
    }
}

}  // namespace minicpmo

// ---- snapshot / restore of the streaming state ----

namespace minicpmo {

std::vector<std::pair<int, int>> FlowDecoder::slot_runs(std::vector<int32_t> slots) {
    std::sort(slots.begin(), slots.end());
    std::vector<std::pair<int, int>> runs;
    for (int32_t s : slots) {
        if (!runs.empty() && runs.back().first + runs.back().second == s) {
            ++runs.back().second;
        } else {
            runs.emplace_back(s, 1);
        }
    }
    return runs;
}

FlowStreamSnapshot FlowDecoder::stream_snapshot() const {
    if (!stream_ready_) fail(Status::invalid_argument, "there is no started flow stream to snapshot");
    FlowStreamSnapshot s;
    s.model = model_.get();
    s.noise_version = noise_version_;
    s.n_steps = n_steps_;
    s.prompt_frames = prompt_frames_;
    s.capacity = cache_capacity_;
    s.spk = spk_;
    s.enc_k = enc_k_;
    s.enc_v = enc_v_;
    s.enc_tok_len = enc_tok_len_;
    s.enc_mel_len = enc_mel_len_;
    s.enc_conv = enc_conv_;
    s.est_conv = est_conv_;
    s.est_order = est_order_;
    s.free_slots = free_slots_;
    // only the live rows: the rest of the cache is masked and rewritten before it is read
    const auto runs = slot_runs(est_order_);
    auto copy_out = [&runs](const ggml_tensor * t) {
        std::vector<uint8_t> bytes;
        bytes.reserve(static_cast<size_t>(t->nb[1]) * runs.size() * kBranches);
        for (const auto & [first, count] : runs) {
            for (int b = 0; b < kBranches; ++b) {
                const size_t at = bytes.size(), n = static_cast<size_t>(t->nb[1]) * count;
                bytes.resize(at + n);
                ggml_backend_tensor_get(t, bytes.data() + at, b * t->nb[2] + first * t->nb[1], n);
            }
        }
        return bytes;
    };
    for (size_t st = 0; st < cache_k_.size(); ++st) {
        for (size_t l = 0; l < cache_k_[st].size(); ++l) {
            s.cache_k.push_back(copy_out(cache_k_[st][l]));
            s.cache_v.push_back(copy_out(cache_v_[st][l]));
        }
    }
    return s;
}

void FlowDecoder::stream_restore(const FlowStreamSnapshot & s) {
    if (s.model != model_.get() || s.n_steps <= 0) {
        fail(Status::invalid_argument, "this flow stream snapshot was taken from another model's decoder");
    }
    stream_ready_ = false;
    alloc_estimator_cache(s.n_steps, s.capacity);
    const size_t n_layer = static_cast<size_t>(model_->hparams().dit_layer);
    if (s.cache_k.size() != static_cast<size_t>(s.n_steps) * n_layer || s.cache_v.size() != s.cache_k.size()) {
        fail(Status::internal, "flow stream snapshot has a wrong number of cache tensors");
    }
    const auto runs = slot_runs(s.est_order);
    auto copy_in = [&runs](ggml_tensor * t, const std::vector<uint8_t> & bytes) {
        size_t at = 0;
        for (const auto & [first, count] : runs) {
            for (int b = 0; b < kBranches; ++b) {
                const size_t n = static_cast<size_t>(t->nb[1]) * count;
                if (at + n > bytes.size()) fail(Status::internal, "flow stream snapshot rows are truncated");
                ggml_backend_tensor_set(t, bytes.data() + at, b * t->nb[2] + first * t->nb[1], n);
                at += n;
            }
        }
    };
    for (size_t st = 0; st < cache_k_.size(); ++st) {
        for (size_t l = 0; l < n_layer; ++l) {
            copy_in(cache_k_[st][l], s.cache_k[st * n_layer + l]);
            copy_in(cache_v_[st][l], s.cache_v[st * n_layer + l]);
        }
    }
    n_steps_ = s.n_steps;
    prompt_frames_ = s.prompt_frames;
    spk_ = s.spk;
    enc_k_ = s.enc_k;
    enc_v_ = s.enc_v;
    enc_tok_len_ = s.enc_tok_len;
    enc_mel_len_ = s.enc_mel_len;
    enc_conv_ = s.enc_conv;
    est_conv_ = s.est_conv;
    est_order_ = s.est_order;
    free_slots_ = s.free_slots;
    stream_ready_ = true;
}

}  // namespace minicpmo
