// Token2Wav for one session (spec §5.2): speech tokens -> flow (encoder + CFM with the voice
// prompt) -> 80-bin mel -> HiFT -> 24 kHz samples, for whole utterances or streamed (spec §5.2.4,
// duplex units §6.3: csrc/token2wav/speech_stream.h). Randomness (CFM noise, NSF noise) comes from the
// session's seeded generators unless a test injects it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "token2wav/flow_decoder.h"
#include "token2wav/hift_vocoder.h"
#include "token2wav/speech_stream.h"
#include "token2wav/voice_bank.h"

namespace minicpmo {

class Token2Wav {
public:
    Token2Wav(std::shared_ptr<const FlowModel> flow, std::shared_ptr<const HiftModel> hift,
                      std::shared_ptr<const VoiceBank> voices, ComputeDevice device, int n_threads, uint64_t seed,
                      ComputeType compute = ComputeType::f32);  // bf16: the flow's products in BF16, HiFT's in F32 through oneDNN

    void set_n_threads(int n_threads);
    void reseed(uint64_t seed);
    int sample_rate() const;
    const VoiceBank & voices() const { return *voices_; }

    // Samples of `tokens` spoken with voice `voice` ("" = the file's default voice).
    std::vector<float> synthesize(const std::vector<int32_t> & tokens, const std::string & voice);

    // ---- streaming (see SpeechStream for the exact rules) ----
    // Starts an utterance / turn with voice `voice` ("" = default). Voice setup runs once per voice
    // (and noise buffer) per session; later begins restore the primed caches.
    void stream_begin(const std::string & voice) { stream_.begin(voice); }
    // Appends speech tokens; returns the waveform chunks released (each 24000 samples = 25 tokens).
    std::vector<std::vector<float>> stream_push(const int32_t * tokens, int n) { return stream_.push(tokens, n); }
    // Duplex: forced flush of what is buffered (windows down to look-ahead + 5 tokens).
    std::vector<std::vector<float>> stream_flush_turn_start() { return stream_.flush_turn_start(); }
    // Duplex: one unit's tokens -> the unit's waveform (official demo rule, speech_stream.cpp).
    std::vector<float> stream_push_duplex(const int32_t * tokens, int n, bool force_flush, bool turn_end) {
        return stream_.push_duplex(tokens, n, force_flush, turn_end);
    }
    // Ends the utterance: last_chunk over the rest; the remaining samples (may be empty).
    std::vector<float> stream_finish() { return stream_.finish(); }
    bool stream_active() const { return stream_.active(); }
    const SpeechStream & stream() const { return stream_; }
    const GraphPlacement & flow_placement() const { return flow_.placement(); }
    const GraphPlacement & hift_placement() const { return hift_.placement(); }

    // ---- injected randomness (tests) ----
    // CFM noise buffer (n_frames x n_mel, frame-major); primed voice caches are redone after it.
    void set_cfm_noise(const float * noise, int n_frames) { flow_.set_noise(noise, n_frames); }
    // NSF source randomness per HiFT pass of the streams (empty function: the seeded generator).
    void set_source_random(HiftRandomSource source) { stream_.set_source_random(std::move(source)); }

private:
    FlowDecoder flow_;
    HiftVocoder hift_;
    std::shared_ptr<const VoiceBank> voices_;
    SpeechStream stream_;  // after the members it refers to
};

}  // namespace minicpmo
