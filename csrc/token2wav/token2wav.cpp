#include "token2wav/token2wav.h"

#include <utility>

#include "core/error.h"

namespace minicpmo {

Token2Wav::Token2Wav(std::shared_ptr<const FlowModel> flow, std::shared_ptr<const HiftModel> hift,
                                     std::shared_ptr<const VoiceBank> voices, ComputeDevice device, int n_threads, uint64_t seed,
                                     ComputeType compute)
    : flow_(std::move(flow), device, n_threads, seed, compute), hift_(std::move(hift), device, n_threads, seed ^ 0x5eedu, compute),
      voices_(std::move(voices)), stream_(flow_, hift_, *voices_) {}

void Token2Wav::set_n_threads(int n_threads) {
    flow_.set_n_threads(n_threads);
    hift_.set_n_threads(n_threads);
}

void Token2Wav::reseed(uint64_t seed) {
    flow_.reseed_noise(seed);
    hift_.reseed(seed ^ 0x5eedu);
}

int Token2Wav::sample_rate() const { return hift_.model().hparams().sample_rate; }

std::vector<float> Token2Wav::synthesize(const std::vector<int32_t> & tokens, const std::string & voice) {
    if (tokens.empty()) fail(Status::invalid_argument, "there are no speech tokens to synthesize");
    if (voice.empty() && voices_->empty()) {
        fail(Status::invalid_argument, "the omni file has no voice; clone one from a reference recording or add one "
                                       "with minicpmo-convert --add-voice NAME=ref.wav");
    }
    const std::shared_ptr<const VoicePrompt> held = voices_->get(voice);  // alive while the prompt points into it
    const FlowPrompt prompt = flow_prompt(*held, flow_.model().hparams());
    // the flow gives frame-major mel (frames x n_mel); HiFT reads n_mel rows of frames
    const std::vector<float> mel = flow_.inference(tokens.data(), static_cast<int>(tokens.size()), prompt);
    const int n_mel = flow_.model().hparams().n_mel;
    const int n_frames = static_cast<int>(mel.size() / n_mel);
    std::vector<float> rows(mel.size());
    for (int t = 0; t < n_frames; ++t) {
        for (int b = 0; b < n_mel; ++b) rows[static_cast<size_t>(b) * n_frames + t] = mel[static_cast<size_t>(t) * n_mel + b];
    }
    return hift_.synthesize(HiftMel{rows.data(), n_frames});
}

}  // namespace minicpmo
