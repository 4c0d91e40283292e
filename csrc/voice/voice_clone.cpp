#include "voice/voice_clone.h"

#include <cmath>
#include <string>

#include "core/error.h"
#include "core/gguf_header.h"
#include "voice/sinc_resample.h"
#include "voice/speaker_encoder.h"
#include "voice/speech_tokenizer.h"

namespace minicpmo {

namespace {

int required_int(const GgufHeader & h, const std::string & key) {
    const auto v = h.get_int(key.c_str());
    if (!v || *v <= 0 || *v > (1 << 24)) fail(Status::bad_model, "omni file '" + h.path() + "' lacks a valid key " + key);
    return static_cast<int>(*v);
}

double required_float(const GgufHeader & h, const std::string & key) {
    const auto v = h.get_float(key.c_str());
    if (!v || !std::isfinite(*v)) fail(Status::bad_model, "omni file '" + h.path() + "' lacks a valid key " + key);
    return *v;
}

}  // namespace

VoiceCloner::VoiceCloner(const std::string & omni_path, ComputeDevice device, bool map_file) : path_(omni_path) {
    const GgufHeader header(omni_path, "omni file");
    const std::vector<std::string> comps = header.get_str_array("minicpmo.components");
    auto has = [&](const char * c) {
        for (const auto & x : comps) {
            if (x == c) return true;
        }
        return false;
    };
    std::string missing;
    for (const char * c : {"token2wav", "speech_tokenizer", "speaker_encoder"}) {
        if (!has(c)) missing += std::string(missing.empty() ? "" : ", ") + c;
    }
    if (!missing.empty()) {
        fail(Status::unsupported, "cloning a voice needs the voice encoders in the omni file, and '" + omni_path +
                                      "' lacks: " + missing + ". Convert the model again with the release's "
                                      "assets/token2wav folder (speech_tokenizer_v2_25hz.onnx, campplus.onnx) present");
    }
    const std::string t = "minicpmo.token2wav.";
    vocab_ = required_int(header, t + "vocab_size");
    spk_dim_ = required_int(header, t + "flow.spk_embed_dim");
    token_mel_ratio_ = required_int(header, t + "token_mel_ratio");
    PromptMelConfig mc;
    mc.sample_rate = required_int(header, t + "sample_rate");
    mc.hop = required_int(header, t + "mel_hop");
    mc.n_mel = required_int(header, t + "n_mel");
    mc.n_fft = required_int(header, t + "prompt_mel.n_fft");
    mc.f_min = required_float(header, t + "prompt_mel.f_min");
    mc.f_max = required_float(header, t + "prompt_mel.f_max");
    mel_ = std::make_unique<PromptMel>(mc);
    tokenizer_ = std::make_unique<SpeechTokenizer>(omni_path, device, map_file);
    speaker_ = std::make_unique<SpeakerEncoder>(omni_path, device, map_file);
}

VoiceCloner::~VoiceCloner() = default;

VoicePrompt VoiceCloner::clone(const float * pcm, size_t n, int sample_rate, int n_threads) const {
    if (sample_rate < 1 || sample_rate > 768000) {
        fail(Status::invalid_argument, "reference audio: sample rate " + std::to_string(sample_rate) + " Hz is outside [1, 768000]");
    }
    if (n > 0 && !pcm) fail(Status::invalid_argument, "reference audio: the samples are NULL");
    const double seconds = static_cast<double>(n) / sample_rate;
    if (seconds < kMinVoiceSeconds) {
        fail(Status::invalid_argument, "reference audio: " + std::to_string(seconds).substr(0, 4) + " s; a voice needs at least " +
                                           std::to_string(kMinVoiceSeconds).substr(0, 3) + " s");
    }
    // the prompt bound, checked before any work: 25 tokens per second, token_mel_ratio frames each
    const double max_seconds = static_cast<double>(kMaxVoicePromptFrames) / token_mel_ratio_ / 25.0;
    if (seconds > max_seconds + 0.04) {
        fail(Status::invalid_argument, "reference audio: " + std::to_string(static_cast<int>(seconds)) +
                                           " s is longer than the " + std::to_string(static_cast<int>(max_seconds)) +
                                           " s the streaming caches allow for a voice prompt: use a shorter reference");
    }
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(pcm[i])) fail(Status::invalid_argument, "reference audio: sample " + std::to_string(i) + " is NaN or Inf");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    const std::vector<float> a16 = sinc_hann_resample(pcm, n, sample_rate, kVoiceRate);
    const std::vector<float> a24 = sinc_hann_resample(pcm, n, sample_rate, mel_->config().sample_rate);
    VoicePrompt v;
    v.tokens = tokenizer_->tokenize(a16.data(), a16.size(), n_threads).ids;
    v.spk = speaker_->embed(a16.data(), a16.size(), n_threads);
    const size_t frames = static_cast<size_t>(token_mel_ratio_) * v.tokens.size();
    if (v.tokens.empty()) fail(Status::invalid_argument, "reference audio: the speech tokenizer gave no token");
    if (frames > static_cast<size_t>(kMaxVoicePromptFrames)) {
        fail(Status::invalid_argument, "reference audio gives " + std::to_string(v.tokens.size()) + " prompt tokens, more than the " +
                                           std::to_string(kMaxVoicePromptFrames / token_mel_ratio_) +
                                           " the streaming caches allow: use a shorter reference");
    }
    for (int32_t id : v.tokens) {
        if (id < 0 || id >= vocab_) fail(Status::bad_model, "omni file '" + path_ + "': the speech tokenizer made id " +
                                                                std::to_string(id) + ", outside the flow's vocabulary");
    }
    if (static_cast<int>(v.spk.size()) != spk_dim_) {
        fail(Status::bad_model, "omni file '" + path_ + "': the speaker encoder gives " + std::to_string(v.spk.size()) +
                                    " values, the flow takes " + std::to_string(spk_dim_));
    }
    v.n_mel = mel_->config().n_mel;
    v.mel = fit_mel_frames(mel_->compute(a24.data(), a24.size()), v.n_mel, frames);
    return v;
}

}  // namespace minicpmo
