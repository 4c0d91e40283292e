#include "audio/audio_encoder.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "audio/audio_graph.h"
#include "core/error.h"

namespace minicpmo {

namespace {

// Block-causal attention runs in query groups of at least this many 1-s blocks: a group reads
// keys only up to its own last block (about 58% of one full product's scores for 30 s), while
// each product keeps enough queries for the GEMM kernels. At most kMaxQueryGroups groups (longer
// groups beyond that) bound the graph's size whatever the model's hyper-parameters.
constexpr int kBlocksPerQueryGroup = 5;
constexpr int kMaxQueryGroups = 8;

size_t graph_nodes(const AudioHparams & hp) {
    // about 48 tensors per layer outside attention, 16 per query group inside it
    return static_cast<size_t>(hp.n_layer) * (48 + 16 * kMaxQueryGroups) + 16 * kMaxQueryGroups + 256;
}

}  // namespace

AudioEncoder::AudioEncoder(std::shared_ptr<const AudioModel> model, ComputeDevice device, int n_threads,
                           ComputeType compute)
    : model_(std::move(model)), backend_(device, n_threads, compute, &model_->weights()), runner_(backend_, graph_nodes(model_->hparams())) {}

AudioEncoder::~AudioEncoder() {
    if (cache_buf_) ggml_backend_buffer_free(cache_buf_);
    if (cache_ctx_) ggml_free(cache_ctx_);
}

AudioEncoding AudioEncoder::encode(const MelFrames & mel, AudioAttention attention, bool want_hidden, int key_limit) {
    return run(mel, attention, 0, 0, false, want_hidden, key_limit);
}

AudioEncoding AudioEncoder::encode_streaming(const MelFrames & mel, int context_front, int context_back,
                                             bool want_hidden) {
    return run(mel, AudioAttention::full, context_front, context_back, true, want_hidden, 0);
}

void AudioEncoder::ensure_cache() {
    if (cache_ctx_) return;
    const AudioHparams & hp = model_->hparams();
    const size_t n_tensors = 2 * static_cast<size_t>(hp.n_layer);
    ggml_init_params ip{};
    ip.mem_size = ggml_tensor_overhead() * n_tensors;
    ip.no_alloc = true;
    cache_ctx_ = ggml_init(ip);
    if (!cache_ctx_) fail(Status::internal, "cannot create the audio cache context");
    // F16 halves the cache (150 MB for Whisper-medium) against F32
    const ggml_type type = backend_.attention_cache_type(model_->weights_f32());
    const int64_t rows = audio_padded_keys(hp.n_positions);  // room for the attention's key padding
    for (int i = 0; i < hp.n_layer; ++i) {
        cache_k_.push_back(ggml_new_tensor_2d(cache_ctx_, type, hp.n_embd, rows));
        cache_v_.push_back(ggml_new_tensor_2d(cache_ctx_, type, rows, hp.n_embd));  // transposed
    }
    cache_buf_ = ggml_backend_alloc_ctx_tensors_from_buft(cache_ctx_, weight_buffer_type(backend_.device()));
    if (!cache_buf_) fail(Status::internal, "out of memory allocating the audio encoder cache");
    // padded key rows are masked, but their values still meet a zero weight: they must be finite
    ggml_backend_buffer_clear(cache_buf_, 0);
}

AudioEncoding AudioEncoder::run(const MelFrames & mel, AudioAttention attention, int context_front, int context_back,
                                bool streaming, bool want_hidden, int key_limit) {
    const AudioHparams & hp = model_->hparams();
    if (!mel.data || mel.n_frames <= 0) fail(Status::invalid_argument, "no mel frames to encode");
    if (context_front < 0 || context_back < 0) fail(Status::invalid_argument, "negative conv context frames");
    // each context mel frame pair is one stem output frame: drop (n + 1) / 2 of them (spec §3.4);
    // the reference keeps the back frames when dropping them would leave nothing
    const int n_stem = audio_encoder_frames(mel.n_frames);
    const int drop_front = (context_front + 1) / 2;
    if (drop_front >= n_stem) fail(Status::invalid_argument, "audio chunk is shorter than its conv context frames");
    int drop_back = (context_back + 1) / 2;
    if (drop_back >= n_stem - drop_front) drop_back = 0;
    const int n_out = n_stem - drop_front - drop_back;
    if (n_out > hp.n_positions) {
        fail(Status::invalid_argument, "audio piece of " + std::to_string(mel.n_frames) + " mel frames exceeds the encoder's " +
                                           std::to_string(hp.n_positions) + " positions");
    }
    if (streaming) {
        ensure_cache();
        // the reference restarts its context when the chunk's stem length (context frames
        // included) would reach the end of the position table
        if (cache_len_ > 0 && cache_len_ + n_stem >= hp.n_positions) cache_len_ = 0;
    }
    const int offset = streaming ? cache_len_ : 0;
    const int n_keys = offset + n_out;
    const int n_keys_padded = static_cast<int>(audio_padded_keys(n_keys));

    const GraphContext graph = runner_.new_context("audio");
    ggml_context * ctx = graph.get();
    ggml_cgraph * gf = graph.new_graph();

    ggml_tensor * mel_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, mel.n_frames, hp.n_mel);
    ggml_set_input(mel_in);
    ggml_tensor * pos_ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_out);
    ggml_set_input(pos_ids);
    if (key_limit <= 0 || key_limit >= n_keys) key_limit = n_keys;
    // the last key frame i may see: block mode, frame i sees frame j iff j < (i / block + 1) * block
    // (Appendix A.2); `key_limit` cuts every frame's keys
    const bool block = attention == AudioAttention::block_causal;
    const int frames = hp.block_frames();
    auto key_end = [&](int i) { return std::min(block ? (i / frames + 1) * frames : n_keys, key_limit); };
    // BF16 and int8 sessions: the attention as one fused op per group, which the oneDNN backend takes (keys
    // and values straight from the projections, or from the F32 or F16 streaming cache)
    const bool fused = backend_.onednn_attention();
    std::vector<AudioQueryGroup> groups;
    int group_frames = n_out;
    if (block) {
        const int n_blocks = (n_out + frames - 1) / frames;
        group_frames = frames * std::max(kBlocksPerQueryGroup, (n_blocks + kMaxQueryGroups - 1) / kMaxQueryGroups);
    }
    for (int q0 = 0; q0 < n_out; q0 += group_frames) {
        AudioQueryGroup g;
        g.q_begin = q0;
        g.n_queries = std::min(group_frames, n_out - q0);
        // ggml's GEMMs want the key count aligned (padding keys, masked); the fused op takes any count
        const int last_key = key_end(q0 + static_cast<int>(g.n_queries) - 1);
        g.n_keys = fused ? last_key : audio_padded_keys(last_key);
        if (g.n_keys != key_end(q0)) {  // some query of the group does not see all n_keys keys
            g.mask = ggml_new_tensor_2d(ctx, fused ? GGML_TYPE_F16 : GGML_TYPE_F32, g.n_keys, g.n_queries);
            ggml_set_input(g.mask);
        }
        groups.push_back(g);
    }
    std::vector<AudioLayerCache> caches;
    if (streaming) {
        for (int i = 0; i < hp.n_layer; ++i) {
            ggml_tensor * K = cache_k_[i];
            ggml_tensor * V = cache_v_[i];
            AudioLayerCache c;
            c.store_k = ggml_view_2d(ctx, K, hp.n_embd, n_out, K->nb[1], static_cast<size_t>(offset) * K->nb[1]);
            c.store_vt = ggml_view_2d(ctx, V, n_out, hp.n_embd, V->nb[1], static_cast<size_t>(offset) * V->nb[0]);
            c.all_k = ggml_view_2d(ctx, K, hp.n_embd, n_keys_padded, K->nb[1], 0);
            c.all_vt = ggml_view_2d(ctx, V, n_keys_padded, hp.n_embd, V->nb[1], 0);
            caches.push_back(c);
        }
    }
    ggml_tensor * x = build_audio_stem(ctx, *model_, mel_in, drop_front, drop_back);
    ggml_tensor * h = build_audio_encoder(ctx, gf, *model_, x, pos_ids, groups, caches, fused);
    ggml_set_output(h);
    ggml_tensor * tokens = n_out >= hp.pool_step ? build_audio_projector(ctx, *model_, h) : nullptr;
    if (tokens) {
        ggml_set_output(tokens);
        ggml_build_forward_expand(gf, tokens);
    }
    ggml_build_forward_expand(gf, h);
    runner_.allocate(gf);

    ggml_backend_tensor_set(mel_in, mel.data, 0, static_cast<size_t>(mel.n_frames) * hp.n_mel * sizeof(float));
    std::vector<int32_t> ids(n_out);
    for (int i = 0; i < n_out; ++i) ids[i] = offset + i;
    ggml_backend_tensor_set(pos_ids, ids.data(), 0, ids.size() * sizeof(int32_t));
    for (const AudioQueryGroup & g : groups) {
        if (!g.mask) continue;
        std::vector<float> m(static_cast<size_t>(g.n_keys) * g.n_queries);
        for (int64_t r = 0; r < g.n_queries; ++r) {
            const int limit = key_end(static_cast<int>(g.q_begin + r));
            for (int64_t j = 0; j < g.n_keys; ++j) {
                m[static_cast<size_t>(r * g.n_keys + j)] = j < limit ? 0.0f : -std::numeric_limits<float>::infinity();
            }
        }
        if (g.mask->type == GGML_TYPE_F16) {
            std::vector<ggml_fp16_t> half(m.size());
            ggml_fp32_to_fp16_row(m.data(), half.data(), static_cast<int64_t>(m.size()));
            ggml_backend_tensor_set(g.mask, half.data(), 0, half.size() * sizeof(ggml_fp16_t));
        } else {
            ggml_backend_tensor_set(g.mask, m.data(), 0, m.size() * sizeof(float));
        }
    }

    runner_.compute(gf);
    if (streaming) cache_len_ = n_keys;

    AudioEncoding out;
    if (tokens) {
        out.n_tokens = static_cast<int>(tokens->ne[1]);
        out.tokens.resize(static_cast<size_t>(out.n_tokens) * hp.n_embd_out);
        ggml_backend_tensor_get(tokens, out.tokens.data(), 0, out.tokens.size() * sizeof(float));
    }
    if (want_hidden) {
        out.n_hidden = n_out;
        out.hidden.resize(static_cast<size_t>(n_out) * hp.n_embd);
        ggml_backend_tensor_get(h, out.hidden.data(), 0, out.hidden.size() * sizeof(float));
    }
    return out;
}

}  // namespace minicpmo
