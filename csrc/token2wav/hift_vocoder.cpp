#include "token2wav/hift_vocoder.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "core/error.h"
#include "token2wav/hift_graph.h"

namespace minicpmo {

namespace {

// One pass holds every activation of the utterance at once (the 64-channel stage runs at 1/4 of the
// sample rate): ~164 s per call is far beyond a TTS reply's 2048 speech tokens (82 s) and keeps a
// hostile length from overflowing sizes.
constexpr int kMaxFrames = 8192;

// numpy.hamming(M): 0.54 + 0.46 cos(pi n / (M - 1)) for n = 1-M, 3-M, ..., M-1 (numpy's formula,
// kept so the rounding matches)
std::vector<double> numpy_hamming(int M) {
    std::vector<double> w(M, 1.0);
    if (M == 1) return w;
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < M; ++i) {
        const double n = static_cast<double>(1 - M + 2 * i);
        w[i] = 0.54 + 0.46 * std::cos(pi * n / static_cast<double>(M - 1));
    }
    return w;
}

}  // namespace

HiftVocoder::HiftVocoder(std::shared_ptr<const HiftModel> model, ComputeDevice device, int n_threads, uint64_t seed,
                         ComputeType compute)
    : model_(std::move(model)),
      backend_(device, n_threads, compute, nullptr, /*f32_products=*/true),
      runner_(backend_, hift_graph_nodes(*model_), 2),  // twice the tensors: many leaves and views
      rng_(seed) {
    crossfade_ = numpy_hamming(2 * model_->hparams().stream_source_cache_samples);
}

void HiftVocoder::check_mel(const HiftMel & mel, bool allow_empty) const {
    const HiftHparams & hp = model_->hparams();
    if (mel.n_frames < 0 || (mel.n_frames == 0 && !allow_empty)) {
        fail(Status::invalid_argument, "HiFT needs at least one mel frame, got " + std::to_string(mel.n_frames));
    }
    if (mel.n_frames > kMaxFrames) {
        fail(Status::invalid_argument, "HiFT mel of " + std::to_string(mel.n_frames) + " frames exceeds the " +
                                           std::to_string(kMaxFrames) + " frames one pass takes");
    }
    if (mel.n_frames > 0 && !mel.data) fail(Status::invalid_argument, "HiFT mel has no data");
    const size_t n = static_cast<size_t>(mel.n_frames) * hp.n_mel;
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(mel.data[i])) fail(Status::invalid_argument, "HiFT mel contains non-finite values");
    }
}

std::vector<float> HiftVocoder::run_f0(const float * mel, int n_frames) {
    const HiftHparams & hp = model_->hparams();
    const GraphContext graph = runner_.new_context("HiFT");
    ggml_context * ctx = graph.get();
    ggml_cgraph * gf = graph.new_graph();
    ggml_tensor * mel_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_frames, hp.n_mel);
    ggml_set_input(mel_in);
    ggml_tensor * f0 = build_hift_f0(ctx, *model_, mel_in, backend_.onednn_products());
    ggml_set_output(f0);
    ggml_build_forward_expand(gf, f0);
    runner_.allocate(gf);
    ggml_backend_tensor_set(mel_in, mel, 0, ggml_nbytes(mel_in));
    runner_.compute(gf);
    std::vector<float> out(n_frames);
    ggml_backend_tensor_get(f0, out.data(), 0, out.size() * sizeof(float));
    return out;
}

std::vector<float> HiftVocoder::f0(const HiftMel & mel) {
    check_mel(mel, false);
    return run_f0(mel.data, mel.n_frames);
}

HiftForward HiftVocoder::forward(const HiftMel & mel, const float * cache_source, int n_cache,
                                 const HiftSourceRandom * random, const float * f0_override) {
    const HiftHparams & hp = model_->hparams();
    check_mel(mel, false);
    const int64_t L = static_cast<int64_t>(mel.n_frames) * hp.hop_samples();
    if (n_cache < 0 || n_cache > L) {
        fail(Status::invalid_argument, "source cache of " + std::to_string(n_cache) + " samples does not fit the " +
                                           std::to_string(L) + "-sample source");
    }
    if (n_cache > 0 && !cache_source) fail(Status::invalid_argument, "source cache has no data");
    for (int i = 0; i < n_cache; ++i) {
        if (!std::isfinite(cache_source[i])) fail(Status::invalid_argument, "source cache contains non-finite values");
    }
    HiftSourceRandom drawn;
    if (!random) {
        drawn = rng_.draw(hp.n_harmonic_sines(), L);
        random = &drawn;
    }
    const std::vector<float> f0 =
        f0_override ? std::vector<float>(f0_override, f0_override + mel.n_frames) : run_f0(mel.data, mel.n_frames);
    const std::vector<float> sines = hift_sine_excitation(hp, f0.data(), mel.n_frames, *random);

    const GraphContext graph = runner_.new_context("HiFT");
    ggml_context * ctx = graph.get();
    ggml_cgraph * gf = graph.new_graph();
    ggml_tensor * mel_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, mel.n_frames, hp.n_mel);
    ggml_set_input(mel_in);
    ggml_tensor * sines_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_harmonic_sines(), L);
    ggml_set_input(sines_in);
    ggml_tensor * cache_in = nullptr;
    if (n_cache > 0) {
        cache_in = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n_cache);
        ggml_set_input(cache_in);
    }
    HiftDecoderOutputs out = build_hift_decoder(ctx, *model_, mel_in, sines_in, cache_in, backend_.onednn_products());
    ggml_set_output(out.audio);
    ggml_set_output(out.source);
    ggml_build_forward_expand(gf, out.audio);
    ggml_build_forward_expand(gf, out.source);
    runner_.allocate(gf);
    ggml_backend_tensor_set(mel_in, mel.data, 0, ggml_nbytes(mel_in));
    // a cache covering the whole source leaves the sines unused (and unallocated)
    if (sines_in->buffer) ggml_backend_tensor_set(sines_in, sines.data(), 0, ggml_nbytes(sines_in));
    if (cache_in) ggml_backend_tensor_set(cache_in, cache_source, 0, ggml_nbytes(cache_in));
    runner_.compute(gf);

    HiftForward r;
    r.audio.resize(L);
    r.source.resize(L);
    if (out.audio->ne[0] != L || out.source->ne[0] != L) fail(Status::internal, "HiFT graph produced a wrong length");
    ggml_backend_tensor_get(out.audio, r.audio.data(), 0, L * sizeof(float));
    ggml_backend_tensor_get(out.source, r.source.data(), 0, L * sizeof(float));
    return r;
}

std::vector<float> HiftVocoder::synthesize(const HiftMel & mel, const HiftSourceRandom * random) {
    return forward(mel, nullptr, 0, random).audio;
}

void HiftVocoder::reset_stream() {
    mel_cache_.clear();
    mel_cache_frames_ = 0;
    source_cache_.clear();
    speech_cache_.clear();
}

int64_t HiftVocoder::stream_pass_samples(int n_frames) const {
    return static_cast<int64_t>(mel_cache_frames_ + std::max(n_frames, 0)) * model_->hparams().hop_samples();
}

std::vector<float> HiftVocoder::stream(const HiftMel & chunk, bool last, const HiftSourceRandom * random) {
    const HiftHparams & hp = model_->hparams();
    check_mel(chunk, last);
    const int n = hp.stream_source_cache_samples;
    const int frames = mel_cache_frames_ + chunk.n_frames;
    const bool first = speech_cache_.empty();
    if (frames == 0) {  // a final call on a stream that never started: nothing to flush
        reset_stream();
        return {};
    }
    if (first && !last && frames < hp.stream_mel_cache_frames) {
        fail(Status::invalid_argument, "the first streamed chunk needs at least " +
                                           std::to_string(hp.stream_mel_cache_frames) + " mel frames (the " +
                                           std::to_string(n) + "-sample cross-fade), got " + std::to_string(frames));
    }
    if (frames > kMaxFrames) {
        fail(Status::invalid_argument, "HiFT stream chunk of " + std::to_string(chunk.n_frames) + " frames is too long");
    }
    // mel = mel cache || chunk, channels first
    std::vector<float> mel(static_cast<size_t>(hp.n_mel) * frames);
    for (int c = 0; c < hp.n_mel; ++c) {
        float * row = mel.data() + static_cast<size_t>(c) * frames;
        std::copy_n(mel_cache_.data() + static_cast<size_t>(c) * mel_cache_frames_, mel_cache_frames_, row);
        std::copy_n(chunk.data + static_cast<size_t>(c) * chunk.n_frames, chunk.n_frames, row + mel_cache_frames_);
    }
    HiftForward r = forward(HiftMel{mel.data(), frames}, source_cache_.data(), static_cast<int>(source_cache_.size()),
                            random);
    std::vector<float> & speech = r.audio;
    const int64_t L = static_cast<int64_t>(speech.size());
    if (!first) {
        // Hamming cross-fade of the first n samples: rising half on the new, falling half on the old
        // (float32 x float64 in numpy: computed in double, stored as float32)
        for (int i = 0; i < n; ++i) {
            speech[i] = static_cast<float>(static_cast<double>(speech[i]) * crossfade_[i] +
                                           static_cast<double>(speech_cache_[speech_cache_.size() - n + i]) *
                                               crossfade_[n + i]);
        }
    }
    if (last) {
        reset_stream();
        return std::move(speech);
    }
    const int keep = std::min(frames, hp.stream_mel_cache_frames);
    std::vector<float> new_mel(static_cast<size_t>(hp.n_mel) * keep);
    for (int c = 0; c < hp.n_mel; ++c) {
        std::copy_n(mel.data() + static_cast<size_t>(c) * frames + (frames - keep), keep,
                    new_mel.data() + static_cast<size_t>(c) * keep);
    }
    mel_cache_ = std::move(new_mel);
    mel_cache_frames_ = keep;
    source_cache_.assign(r.source.end() - std::min<int64_t>(n, L), r.source.end());
    speech_cache_.assign(speech.end() - std::min<int64_t>(n, L), speech.end());
    // emit all but the last n samples (kept for the next cross-fade); the first call starts with n zeros
    std::vector<float> out;
    out.reserve(static_cast<size_t>(L));
    if (first) out.assign(n, 0.0f);
    out.insert(out.end(), speech.begin(), speech.end() - n);
    return out;
}

}  // namespace minicpmo
