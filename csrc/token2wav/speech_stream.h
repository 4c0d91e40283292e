// Streaming Token2Wav for one session (spec §5.2.4, §6.3): speech tokens arrive a few at a time and
// leave as 24 kHz waveform chunks, one per 25 tokens, through the flow's and HiFT's streaming caches.
//
// Caller protocol (the TokenStreamer of MiniCPM-o's streaming mode): the token buffer starts as
// look-ahead silence tokens ([4218] x 3); whenever it holds chunk + look-ahead tokens (28), that
// window is streamed (24000 samples out) and the buffer advances by one chunk (25); the end of the
// utterance streams what is left with last_chunk = true.
//
// Voice setup (Token2wav.set_stream_cache: the prompt through the encoder and the CFM) runs once per
// voice and noise buffer: the primed caches are kept as a FlowStreamSnapshot and restored at every
// later begin (and at each duplex turn end), as the official duplex code does with its base caches.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "token2wav/flow_decoder.h"
#include "token2wav/hift_source.h"
#include "token2wav/hift_vocoder.h"
#include "token2wav/voice_bank.h"

namespace minicpmo {

// Supplies the NSF source randomness of one HiFT pass over n_samples samples (tests inject the
// reference's numbers); unset, the vocoder draws from its seeded generator.
using HiftRandomSource = std::function<HiftSourceRandom(int64_t n_samples)>;

class SpeechStream {
public:
    // The decoders and the voices are owned by the caller (Token2Wav) and outlive this.
    SpeechStream(FlowDecoder & flow, HiftVocoder & hift, const VoiceBank & voices);

    // Starts an utterance with voice `voice` ("" = the default voice); abandons one in progress.
    void begin(const std::string & voice);
    // Appends speech tokens; returns the waveform chunks released, each exactly one unit
    // (chunk_tokens x token_mel_ratio x hop = 24000 samples for 25 tokens).
    std::vector<std::vector<float>> push(const int32_t * tokens, int n);
    // Ends the utterance: the rest through last_chunk = true (possibly no samples). The next
    // utterance needs begin().
    std::vector<float> finish();
    bool active() const { return active_; }

    // ---- duplex (spec §6.3; rule of the official demo, see speech_stream.cpp) ----
    // Forced flush of what is buffered: windows of min(28, buffered) tokens while at least
    // look-ahead + 5 tokens are buffered (non-final windows, so the chunks can be shorter than a unit).
    std::vector<std::vector<float>> flush_turn_start();
    // One duplex unit's speech tokens -> the unit's waveform: the new tokens are appended, then
    // windows are streamed (forced flush, or the regular 28/25 rule when force_flush is false); at
    // turn_end the rest goes through last_chunk = true and the caches are reset to the voice's primed
    // base (the stream stays active for the next turn). A non-final unit's waveform is left-padded
    // with zeros to one unit when shorter (one unit of silence when nothing was released); it can be
    // longer than one unit when several windows were released.
    std::vector<float> push_duplex(const int32_t * tokens, int n, bool force_flush, bool turn_end);

    // Tokens waiting in the buffer (the look-ahead included).
    int buffered_tokens() const { return static_cast<int>(buffer_.size()); }
    // How many times a voice prompt was run through the flow (the rest were restored snapshots).
    int voice_setups() const { return voice_setups_; }
    const std::string & voice() const { return voice_; }
    void set_source_random(HiftRandomSource source) { source_random_ = std::move(source); }
    int unit_samples() const;

private:
    void require_active(const char * what) const;
    void check_tokens(const int32_t * tokens, int n) const;
    // one window through the flow and HiFT: the samples HiFT releases
    std::vector<float> window(int n_tokens, bool last_chunk);
    void advance(int n_tokens);
    // windows of the regular rule (28 tokens, stride 25) / the forced flush (down to look-ahead + 5)
    std::vector<std::vector<float>> full_windows();
    std::vector<std::vector<float>> forced_windows();
    void restore_voice_base();

    FlowDecoder & flow_;
    HiftVocoder & hift_;
    const VoiceBank & voices_;
    std::map<std::string, FlowStreamSnapshot> primed_;  // voice name -> caches after set_stream_cache
    std::string voice_;
    std::vector<int32_t> buffer_;
    bool active_ = false;
    int voice_setups_ = 0;
    HiftRandomSource source_random_;
};

}  // namespace minicpmo
