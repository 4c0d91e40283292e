// A voice cloned from a reference recording, registered in its model's voice bank for as long as this
// object lives, so every speaking call of the model's sessions can name it. The C API's minicpmo_voice
// and Python's Voice are this object.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "token2wav/voice_bank.h"

namespace minicpmo {

class OmniModel;

class ClonedVoice {
public:
    // Mono PCM at sample_rate; n_threads 0 = all cores. Throws what VoiceCloner::clone throws, and
    // unsupported when the model files lack the voice encoders.
    ClonedVoice(const OmniModel & model, const float * pcm, size_t n, int sample_rate, int n_threads);
    ~ClonedVoice();
    ClonedVoice(const ClonedVoice &) = delete;
    ClonedVoice & operator=(const ClonedVoice &) = delete;

    const std::string & name() const { return name_; }
    const VoicePrompt & prompt() const { return *prompt_; }

private:
    std::shared_ptr<const VoiceBank> bank_;  // kept alive to deregister from it
    std::shared_ptr<const VoicePrompt> prompt_;
    std::string name_;
};

}  // namespace minicpmo
