// Token2Wav for one session, whole utterances (spec §5.2): speech tokens -> flow (encoder + CFM
// with the voice prompt) -> 80-bin mel -> HiFT -> 24 kHz samples. Randomness (CFM noise, NSF
// noise) comes from the session's seeded generators.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "speech/flow_decoder.h"
#include "speech/hift_vocoder.h"
#include "speech/voice_bank.h"

namespace minicpmo {

class SpeechSynthesizer {
public:
    SpeechSynthesizer(std::shared_ptr<const FlowModel> flow, std::shared_ptr<const HiftModel> hift,
                      std::shared_ptr<const VoiceBank> voices, bool use_gpu, int n_threads, uint64_t seed);

    void set_n_threads(int n_threads);
    void reseed(uint64_t seed);
    int sample_rate() const;
    const VoiceBank & voices() const { return *voices_; }

    // Samples of `tokens` spoken with voice `voice` ("" = the file's default voice).
    std::vector<float> synthesize(const std::vector<int32_t> & tokens, const std::string & voice);

private:
    FlowDecoder flow_;
    HiftVocoder hift_;
    std::shared_ptr<const VoiceBank> voices_;
};

}  // namespace minicpmo
