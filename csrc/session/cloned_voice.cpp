#include "session/cloned_voice.h"

#include "session/omni_model.h"
#include "voice/voice_clone.h"

namespace minicpmo {

ClonedVoice::ClonedVoice(const OmniModel & model, const float * pcm, size_t n, int sample_rate, int n_threads) {
    const auto cloner = model.voice_cloner();
    VoicePrompt prompt = cloner->clone(pcm, n, sample_rate, n_threads);
    bank_ = model.voices();
    name_ = bank_->add_cloned(std::move(prompt));
    prompt_ = bank_->get(name_);
}

ClonedVoice::~ClonedVoice() {
    if (bank_) bank_->remove_cloned(name_);
}

}  // namespace minicpmo
