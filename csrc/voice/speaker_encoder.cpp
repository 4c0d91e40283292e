#include "voice/speaker_encoder.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "audio/pcm_checks.h"
#include "core/error.h"
#include "voice/speaker_encoder_graph.h"

namespace minicpmo {

namespace {

using Use = GgufWeights::Use;
constexpr const char * kKey = "minicpmo.speaker_encoder.";
constexpr int64_t kMaxDim = 1 << 14;
// One pass holds every activation: 60 s of reference audio (6000 fbank frames) is far beyond the
// ~17 s a voice prompt may hold and keeps a hostile length from exhausting memory.
constexpr double kMaxSeconds = 60.0;

std::string key(const char * k) { return std::string(kKey) + k; }

int req_int(const GgufWeights & w, const char * k, int64_t lo, int64_t hi) {
    return static_cast<int>(w.require_int(key(k), lo, hi));
}

std::vector<int> req_ints(const GgufWeights & w, const char * k, size_t n_expected, int64_t lo, int64_t hi) {
    const std::string name = key(k);
    const auto v = w.header().get_int_array(name.c_str());
    const std::string where = "omni file '" + w.path() + "': " + name;
    if (!v) fail(Status::bad_model, where + " is missing or not an integer array");
    if (n_expected != 0 && v->size() != n_expected) {
        fail(Status::bad_model, where + " has " + std::to_string(v->size()) + " entries, expected " +
                                    std::to_string(n_expected));
    }
    std::vector<int> out;
    for (int64_t x : *v) {
        if (x < lo || x > hi) fail(Status::bad_model, where + " holds " + std::to_string(x) + ", outside [" +
                                                          std::to_string(lo) + ", " + std::to_string(hi) + "]");
        out.push_back(static_cast<int>(x));
    }
    return out;
}

SpeakerEncoderHparams read_hparams(const GgufWeights & w) {
    SpeakerEncoderHparams hp;
    hp.fbank.sample_rate = req_int(w, "fbank.sample_rate", 1000, 768000);
    hp.fbank.n_mel = req_int(w, "fbank.n_mel", 8, 1024);
    hp.fbank.frame_ms = w.require_float(key("fbank.frame_ms"));
    hp.fbank.shift_ms = w.require_float(key("fbank.shift_ms"));
    hp.fbank.low_hz = w.require_float(key("fbank.low_hz"));
    hp.fbank.preemph = w.require_float(key("fbank.preemph"));
    hp.head_channels = req_int(w, "head.channels", 1, kMaxDim);
    hp.head_kernel = req_int(w, "head.kernel", 1, 15);
    hp.res_strides = req_ints(w, "head.res_strides", 0, 1, 8);
    hp.res_shortcuts = req_ints(w, "head.res_shortcuts", hp.res_strides.size(), 0, 1);
    hp.head_out_stride = req_int(w, "head.out_stride", 1, 8);
    hp.freq_bins = req_int(w, "head.freq_bins", 1, 1024);
    hp.tdnn_channels = req_int(w, "tdnn.channels", 1, kMaxDim);
    hp.tdnn_kernel = req_int(w, "tdnn.kernel", 1, 31);
    hp.tdnn_stride = req_int(w, "tdnn.stride", 1, 8);
    hp.n_layers = req_ints(w, "block.n_layers", 0, 1, 256);
    const size_t nb = hp.n_layers.size();
    if (nb == 0 || nb > 16) fail(Status::bad_model, "omni file '" + w.path() + "': 1 to 16 dense blocks expected");
    hp.kernels = req_ints(w, "block.kernels", nb, 1, 31);
    hp.dilations = req_ints(w, "block.dilations", nb, 1, 64);
    hp.transit_channels = req_ints(w, "block.transit_channels", nb, 1, kMaxDim);
    hp.growth = req_int(w, "growth", 1, kMaxDim);
    hp.bottleneck = req_int(w, "bottleneck_channels", 1, kMaxDim);
    hp.mask_channels = req_int(w, "mask_channels", 1, kMaxDim);
    hp.seg_len = req_int(w, "seg_len", 1, 1 << 16);
    hp.embedding_length = req_int(w, "embedding_length", 1, kMaxDim);
    const std::string where = "omni file '" + w.path() + "': speaker encoder ";
    int freq = hp.fbank.n_mel;
    for (int s : hp.res_strides) freq = (freq - 1) / s + 1;
    freq = (freq - 1) / hp.head_out_stride + 1;
    if (freq != hp.freq_bins) fail(Status::bad_model, where + "head.freq_bins does not follow from n_mel and the strides");
    if (hp.head_kernel % 2 == 0 || hp.tdnn_kernel % 2 == 0) fail(Status::bad_model, where + "kernels must be odd");
    for (int k : hp.kernels) {
        if (k % 2 == 0) fail(Status::bad_model, where + "block kernels must be odd");
    }
    return hp;
}

}  // namespace

SpeakerEncoder::SpeakerEncoder(const std::string & omni_path, ComputeDevice device, bool map_file)
    : device_(device),
      weights_(std::make_unique<GgufWeights>(omni_path, "omni file", std::vector<std::string>{"spk_enc."},
                                             weight_buffer_type(device), map_file)),
      hp_((weights_->require_component("speaker_encoder", "cloning a voice"), read_hparams(*weights_))),
      fbank_(hp_.fbank) {
    const GgufWeights & w = *weights_;
    auto vec = [&](const std::string & name, int64_t n) { return w.get(name, {n}, Use::vector); };
    auto conv2d = [&](const std::string & name, int c_in, int c_out, int k, int stride) {
        SpkConv c;
        c.w = w.get(name + ".weight", {c_in, c_out, int64_t(k) * k}, Use::matrix);
        c.b = vec(name + ".bias", c_out);
        c.c_in = c_in, c.c_out = c_out, c.kernel = k, c.stride = stride;
        return c;
    };
    auto conv1d = [&](const std::string & name, int c_in, int c_out, int k, int stride, int dilation) {
        SpkConv c;
        c.w = w.get(name + ".weight", {c_in, c_out, k}, Use::matrix);
        c.b = vec(name + ".bias", c_out);
        c.c_in = c_in, c.c_out = c_out, c.kernel = k, c.stride = stride, c.dilation = dilation;
        return c;
    };
    auto affine = [&](const std::string & name, int c) { return SpkAffine{vec(name + ".scale", c), vec(name + ".shift", c)}; };

    const int m = hp_.head_channels, k2 = hp_.head_kernel;
    head_in_ = conv2d("spk_enc.head.conv_in", 1, m, k2, 1);
    for (size_t i = 0; i < hp_.res_strides.size(); ++i) {
        const std::string p = "spk_enc.head.res." + std::to_string(i);
        SpkResBlock b;
        b.conv1 = conv2d(p + ".conv1", m, m, k2, hp_.res_strides[i]);
        b.conv2 = conv2d(p + ".conv2", m, m, k2, 1);
        if (hp_.res_shortcuts[i]) b.shortcut = conv2d(p + ".shortcut", m, m, 1, hp_.res_strides[i]);
        else if (hp_.res_strides[i] != 1) {
            fail(Status::bad_model, "omni file '" + w.path() + "': " + p + " strides without a shortcut");
        }
        head_blocks_.push_back(b);
    }
    head_out_ = conv2d("spk_enc.head.conv_out", m, m, k2, hp_.head_out_stride);
    tdnn_ = conv1d("spk_enc.tdnn", m * hp_.freq_bins, hp_.tdnn_channels, hp_.tdnn_kernel, hp_.tdnn_stride, 1);
    int c = hp_.tdnn_channels;
    for (int b = 0; b < hp_.n_blocks(); ++b) {
        SpkBlock block;
        for (int l = 0; l < hp_.n_layers[b]; ++l) {
            const std::string p = "spk_enc.block." + std::to_string(b) + ".layer." + std::to_string(l);
            SpkDenseLayer d;
            d.bn_in = affine(p + ".bn_in", c);
            d.fc_in = conv1d(p + ".fc_in", c, hp_.bottleneck, 1, 1, 1);
            d.local = conv1d(p + ".local", hp_.bottleneck, hp_.growth, hp_.kernels[b], 1, hp_.dilations[b]);
            d.ctx1 = conv1d(p + ".ctx1", hp_.bottleneck, hp_.mask_channels, 1, 1, 1);
            d.ctx2 = conv1d(p + ".ctx2", hp_.mask_channels, hp_.growth, 1, 1, 1);
            block.layers.push_back(d);
            c += hp_.growth;
        }
        const std::string p = "spk_enc.transit." + std::to_string(b);
        block.transit_bn = affine(p + ".bn", c);
        block.transit = conv1d(p, c, hp_.transit_channels[b], 1, 1, 1);
        c = hp_.transit_channels[b];
        blocks_.push_back(std::move(block));
    }
    out_bn_ = affine("spk_enc.out_bn", c);
    dense_ = conv1d("spk_enc.dense", 2 * c, hp_.embedding_length, 1, 1, 1);
}

SpeakerEncoder::~SpeakerEncoder() = default;

int64_t SpeakerEncoder::tdnn_frames(int64_t n_frames) const {
    const int pad = (hp_.tdnn_kernel - 1) / 2;
    return (n_frames + 2 * pad - hp_.tdnn_kernel) / hp_.tdnn_stride + 1;
}

size_t SpeakerEncoder::min_samples() const {
    // the fewest fbank frames that leave two frames after the TDNN (an unbiased std needs two)
    int64_t frames = 1;
    while (tdnn_frames(frames) < 2) ++frames;
    return static_cast<size_t>(fbank_.frame_length() + (frames - 1) * fbank_.frame_shift());
}

size_t SpeakerEncoder::max_samples() const {
    return static_cast<size_t>(kMaxSeconds * hp_.fbank.sample_rate);
}

std::vector<float> SpeakerEncoder::features(const float * pcm, size_t n) const {
    std::vector<float> f = fbank_.compute(pcm, n);
    const int n_mel = hp_.fbank.n_mel;
    const size_t frames = f.size() / n_mel;
    for (int k = 0; k < n_mel; ++k) {
        double mean = 0.0;
        for (size_t t = 0; t < frames; ++t) mean += f[t * n_mel + k];
        mean /= static_cast<double>(frames);
        for (size_t t = 0; t < frames; ++t) f[t * n_mel + k] = static_cast<float>(f[t * n_mel + k] - mean);
    }
    return f;
}

std::vector<float> SpeakerEncoder::embed(const float * pcm, size_t n, int n_threads) const {
    const int sr = hp_.fbank.sample_rate;
    if (n == 0 || pcm == nullptr) fail(Status::invalid_argument, "speaker encoder: the reference audio is empty");
    if (n < min_samples()) {
        fail(Status::invalid_argument, "speaker encoder: reference audio of " + std::to_string(n) +
                                           " samples is too short (needs at least " + std::to_string(min_samples()) +
                                           " samples at " + std::to_string(sr) + " Hz)");
    }
    if (n > max_samples()) {
        fail(Status::invalid_argument, "speaker encoder: reference audio of " + std::to_string(n) +
                                           " samples is longer than the " + std::to_string(max_samples()) + " samples (" +
                                           std::to_string(int(kMaxSeconds)) +
                                           " s at " + std::to_string(sr) + " Hz) one pass takes");
    }
    require_finite_pcm(pcm, n, "speaker encoder reference audio");
    const std::vector<float> f = features(pcm, n);
    return embed_features(f.data(), static_cast<int64_t>(f.size() / hp_.fbank.n_mel), n_threads);
}

std::vector<float> SpeakerEncoder::embed_features(const float * feats, int64_t n_frames, int n_threads) const {
    const int64_t max_frames = fbank_.n_frames(max_samples());
    if (n_frames < 1 || tdnn_frames(n_frames) < 2 || n_frames > max_frames) {
        fail(Status::invalid_argument, "speaker encoder: " + std::to_string(n_frames) +
                                           " fbank frames given, it takes " + std::to_string(fbank_.n_frames(min_samples())) +
                                           " to " + std::to_string(max_frames));
    }
    const size_t n_values = static_cast<size_t>(n_frames) * hp_.fbank.n_mel;
    for (size_t i = 0; i < n_values; ++i) {
        if (!std::isfinite(feats[i])) {
            fail(Status::invalid_argument, "speaker encoder: the features hold a non-finite value");
        }
    }
    ComputeBackend backend(device_, n_threads);  // 0 = all cores
    GraphRunner runner(backend, speaker_encoder_graph_nodes(*this), 3);
    const GraphContext graph = runner.new_context("speaker encoder");
    ggml_context * ctx = graph.get();
    ggml_cgraph * gf = graph.new_graph();
    SpeakerEncoderGraphInputs in;
    ggml_tensor * out = build_speaker_encoder(ctx, *this, n_frames, in);
    ggml_set_output(out);
    ggml_build_forward_expand(gf, out);
    runner.allocate(gf);
    std::vector<float> pooling;
    std::vector<int32_t> segment;
    speaker_encoder_pooling(tdnn_frames(n_frames), hp_.seg_len, pooling, segment);
    ggml_backend_tensor_set(in.feats, feats, 0, n_values * sizeof(float));
    ggml_backend_tensor_set(in.pooling, pooling.data(), 0, pooling.size() * sizeof(float));
    ggml_backend_tensor_set(in.segment, segment.data(), 0, segment.size() * sizeof(int32_t));
    runner.compute(gf);
    std::vector<float> emb(hp_.embedding_length);
    ggml_backend_tensor_get(out, emb.data(), 0, emb.size() * sizeof(float));
    return emb;
}

}  // namespace minicpmo
