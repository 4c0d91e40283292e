// A MiniCPM-o model as users name it: the LLM file plus, when present, its omni companion.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/omni_file.h"
#include "llm/llm_model.h"

namespace minicpmo {
class VisionModel;
class AudioModel;
class TtsModel;
class FlowModel;
class HiftModel;
class VoiceBank;
class VoiceCloner;
}

namespace minicpmo {

class OmniModel {
public:
    // `omni_path` empty: use the companion named by the LLM's minicpmo.omni_file key when that file
    // exists beside it (text-only otherwise). Given explicitly, it must exist and be valid.
    OmniModel(const std::string & llm_path, const std::string & omni_path, const LlmModelParams & params);

    std::shared_ptr<const LlmModel> llm() const { return llm_; }
    bool has_omni() const { return omni_.has_value(); }
    const std::optional<OmniInfo> & omni() const { return omni_; }
    // Why there is no companion (for errors when media input is given), "" when there is one.
    const std::string & omni_missing_reason() const { return omni_missing_reason_; }
    // What the user should know about a load that went ahead: no companion found (text-only), or
    // files without the LLM fingerprint. The front ends show them (Python warnings, stderr).
    const std::vector<std::string> & load_warnings() const { return load_warnings_; }
    // The device the components compute on (nullptr: the CPU), chosen at load from params.device.
    ComputeDevice device() const { return device_; }

    // The vision tower + resampler, loaded on first use (throws unsupported naming what is missing
    // when there is no companion or it has no vision component). Thread-safe.
    std::shared_ptr<const VisionModel> vision() const;
    // The Whisper encoder + audio projector, loaded on first use; same rules as vision().
    std::shared_ptr<const AudioModel> audio() const;
    // The speech-token decoder (TTS), loaded on first use; same rules as vision().
    std::shared_ptr<const TtsModel> tts() const;
    // Token2Wav (flow + HiFT) and the voice prompts, loaded on first use; same rules.
    std::shared_ptr<const FlowModel> flow() const;
    std::shared_ptr<const HiftModel> hift() const;
    std::shared_ptr<const VoiceBank> voices() const;
    // The voice encoders (speech tokenizer + CAM++) that clone a voice from a recording, loaded on first
    // use; throws unsupported naming what the file lacks. A cloned voice joins voices() (add_cloned).
    std::shared_ptr<const VoiceCloner> voice_cloner() const;

private:
    LlmModelParams params_;
    ComputeDevice device_ = nullptr;
    std::shared_ptr<const LlmModel> llm_;
    std::optional<OmniInfo> omni_;
    std::string omni_missing_reason_;
    std::vector<std::string> load_warnings_;
    mutable std::mutex load_mutex_;
    mutable std::shared_ptr<const VisionModel> vision_;
    mutable std::shared_ptr<const AudioModel> audio_;
    mutable std::shared_ptr<const TtsModel> tts_;
    mutable std::shared_ptr<const FlowModel> flow_;
    mutable std::shared_ptr<const HiftModel> hift_;
    mutable std::shared_ptr<const VoiceBank> voices_;
    mutable std::shared_ptr<const VoiceCloner> voice_cloner_;
};

}  // namespace minicpmo
