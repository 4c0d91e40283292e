#include "token2wav/speech_stream.h"

#include <algorithm>
#include <iterator>
#include <string>
#include <utility>

#include "core/error.h"

// Duplex rule (facts read in OpenBMB/MiniCPM-o-Demo, MiniCPMO45/modeling_minicpmo_unified.py, class
// DuplexCapability; restated here, not copied):
// * _init_token2wav_cache: set_stream_cache(prompt) once, the flow and HiFT caches kept as a base
//   copy; _reset_token2wav_for_new_turn puts copies of that base back and sets the token buffer to
//   [4218] x 3. It runs at every turn end (after that unit's audio) and when a forced listen closes
//   a speaking turn.
// * streaming_generate: each speaking unit's TTS tokens go to _generate_waveform_from_tokens with
//   is_last_chunk = end_of_turn and force_flush = true (the demo sets it for every unit; its
//   comment ties it to the turn start, where the TTS may also stop before 25 tokens).
// * _generate_waveform_from_tokens: tokens appended to the buffer; with force_flush, while the
//   buffer holds >= look-ahead + 5 tokens, stream the first min(25 + 3, len) as a non-final window
//   and drop min(25, window - 3) tokens; without it, the regular 28 / 25 rule. With is_last_chunk
//   the remaining buffer is streamed with last_chunk = true and emptied. The unit's chunks are
//   joined; a non-final unit shorter than 24000 samples is left-padded with zeros to 24000; no
//   chunk at all gives None, which the caller (_make_generate_result) replaces by 1 s of silence.
//   (The demo also treats a token equal to an LLM chunk-terminator id as a flush trigger; LLM
//   special ids are far outside the 6561 speech tokens, so that branch never fires for speech
//   tokens and is not reproduced. It converts to int16 PCM; this runtime keeps float samples.)

namespace minicpmo {

namespace {
constexpr int kFlushMinFresh = 5;  // forced-flush windows keep going while look-ahead + 5 tokens remain
}

SpeechStream::SpeechStream(FlowDecoder & flow, HiftVocoder & hift, const VoiceBank & voices)
    : flow_(flow), hift_(hift), voices_(voices) {}

int SpeechStream::unit_samples() const {
    const FlowHparams & hp = flow_.model().hparams();
    return hp.chunk_tokens * hp.token_mel_ratio * hift_.model().hparams().hop_samples();
}

void SpeechStream::require_active(const char * what) const {
    if (!active_) {
        fail(Status::invalid_argument, std::string("no speech stream is active (") + what +
                                           "): call stream_begin(voice) first");
    }
}

void SpeechStream::check_tokens(const int32_t * tokens, int n) const {
    const int vocab = flow_.model().hparams().vocab;
    if (n < 0) fail(Status::invalid_argument, "a negative number of speech tokens was given");
    if (n > 0 && !tokens) fail(Status::invalid_argument, "speech tokens are NULL");
    for (int i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= vocab) {
            fail(Status::invalid_argument, "tokens[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) +
                                               " is not a speech token: ids must be in [0, " + std::to_string(vocab) + ")");
        }
    }
}

void SpeechStream::begin(const std::string & voice) {
    if (voice.empty() && voices_.empty()) {
        fail(Status::invalid_argument, "the omni file has no voice; clone one from a reference recording or add one "
                                       "with minicpmo-convert --add-voice NAME=ref.wav");
    }
    const std::string name = voices_.get(voice)->name;  // throws naming the voices there are
    active_ = false;
    buffer_.clear();
    voice_ = name;
    restore_voice_base();
    active_ = true;
}

void SpeechStream::restore_voice_base() {
    try {
        // released cloned voices never come back under the same name: drop their caches
        for (auto p = primed_.begin(); p != primed_.end();) p = voices_.has(p->first) ? std::next(p) : primed_.erase(p);
        auto it = primed_.find(voice_);
        // primed caches depend on the CFM noise of the prompt pass: a new noise buffer re-primes
        if (it != primed_.end() && it->second.noise_version == flow_.noise_version()) {
            flow_.stream_restore(it->second);
        } else {
            flow_.stream_start(flow_prompt(*voices_.get(voice_), flow_.model().hparams()));
            ++voice_setups_;
            primed_[voice_] = flow_.stream_snapshot();
        }
    } catch (...) {
        active_ = false;
        buffer_.clear();
        throw;
    }
    hift_.reset_stream();
    const FlowHparams & hp = flow_.model().hparams();
    buffer_.assign(hp.lookahead, hp.silence_token);
}

std::vector<float> SpeechStream::window(int n_tokens, bool last_chunk) {
    const int n_mel = flow_.model().hparams().n_mel;
    try {
        const std::vector<float> mel = flow_.stream_chunk(buffer_.data(), n_tokens, last_chunk);
        // the flow gives frame-major mel; HiFT reads n_mel rows of frames
        const int frames = static_cast<int>(mel.size() / n_mel);
        std::vector<float> rows(mel.size());
        for (int t = 0; t < frames; ++t) {
            for (int b = 0; b < n_mel; ++b) rows[static_cast<size_t>(b) * frames + t] = mel[static_cast<size_t>(t) * n_mel + b];
        }
        HiftSourceRandom injected;
        if (source_random_) injected = source_random_(hift_.stream_pass_samples(frames));
        return hift_.stream(HiftMel{rows.data(), frames}, last_chunk, source_random_ ? &injected : nullptr);
    } catch (...) {
        // the caches may be half-updated: this utterance cannot continue consistently
        active_ = false;
        buffer_.clear();
        hift_.reset_stream();
        throw;
    }
}

void SpeechStream::advance(int n_tokens) { buffer_.erase(buffer_.begin(), buffer_.begin() + n_tokens); }

std::vector<std::vector<float>> SpeechStream::full_windows() {
    const FlowHparams & hp = flow_.model().hparams();
    const int full = hp.chunk_tokens + hp.lookahead;
    std::vector<std::vector<float>> out;
    while (static_cast<int>(buffer_.size()) >= full) {
        out.push_back(window(full, false));
        advance(hp.chunk_tokens);
    }
    return out;
}

std::vector<std::vector<float>> SpeechStream::forced_windows() {
    const FlowHparams & hp = flow_.model().hparams();
    const int L = hp.lookahead, full = hp.chunk_tokens + L;
    std::vector<std::vector<float>> out;
    while (static_cast<int>(buffer_.size()) >= L + kFlushMinFresh) {
        const int n = std::min(full, static_cast<int>(buffer_.size()));
        out.push_back(window(n, false));
        advance(std::min(hp.chunk_tokens, n - L));  // keeps the last look-ahead tokens
    }
    return out;
}

std::vector<std::vector<float>> SpeechStream::push(const int32_t * tokens, int n) {
    require_active("push");
    check_tokens(tokens, n);
    buffer_.insert(buffer_.end(), tokens, tokens + n);
    return full_windows();
}

std::vector<float> SpeechStream::finish() {
    require_active("finish");
    // the buffer always keeps the look-ahead tokens, so the final window is never empty
    std::vector<float> rest = window(static_cast<int>(buffer_.size()), true);
    active_ = false;
    buffer_.clear();
    return rest;
}

std::vector<std::vector<float>> SpeechStream::flush_turn_start() {
    require_active("flush");
    return forced_windows();
}

std::vector<float> SpeechStream::push_duplex(const int32_t * tokens, int n, bool force_flush, bool turn_end) {
    require_active("duplex push");
    check_tokens(tokens, n);
    buffer_.insert(buffer_.end(), tokens, tokens + n);
    std::vector<std::vector<float>> chunks = force_flush ? forced_windows() : full_windows();
    if (turn_end) {
        chunks.push_back(window(static_cast<int>(buffer_.size()), true));
        // _reset_token2wav_for_new_turn: the voice's primed caches and a fresh silence look-ahead
        restore_voice_base();
    }
    std::vector<float> wave;
    for (const auto & c : chunks) wave.insert(wave.end(), c.begin(), c.end());
    const size_t unit = static_cast<size_t>(unit_samples());
    if (!turn_end && wave.size() < unit) wave.insert(wave.begin(), unit - wave.size(), 0.0f);
    return wave;
}

}  // namespace minicpmo
