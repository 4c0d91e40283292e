#include "session/omni_model.h"

#include <sys/stat.h>

#include "core/error.h"
#include "audio/audio_model.h"
#include "token2wav/flow_model.h"
#include "token2wav/hift_model.h"
#include "tts/tts_model.h"
#include "token2wav/voice_bank.h"
#include "voice/voice_clone.h"
#include "vision/vision_model.h"

namespace minicpmo {

namespace {

bool file_exists(const std::string & p) {
    struct stat st {};
    return !p.empty() && stat(p.c_str(), &st) == 0;
}

const LlmModelParams & checked(const LlmModelParams & p) {
    if (p.n_gpu_layers < -1) {
        fail(Status::invalid_argument, "n_gpu_layers must be -1 (all) or >= 0, got " + std::to_string(p.n_gpu_layers));
    }
    return p;
}

// "auto" with n_gpu_layers = 0 keeps the whole model on the CPU (what that setting always meant here)
ComputeDevice chosen_device(const LlmModelParams & p) {
    return is_automatic_device(p.device) && p.n_gpu_layers == 0 ? nullptr : resolve_device(p.device);
}

}  // namespace

OmniModel::OmniModel(const std::string & llm_path, const std::string & omni_path, const LlmModelParams & params)
    : params_(checked(params)),
      device_(chosen_device(params_)),
      llm_(std::make_shared<LlmModel>(llm_path, params_, device_)) {
    const LlmIdentity identity{llm_path, llm_->n_embd(), llm_->meta(kLlmFingerprintKey)};
    std::string path = omni_path;
    if (path.empty()) {
        const std::string key = llm_->meta(kOmniFileKey);
        const std::string resolved = resolve_omni_path(llm_path, key);
        if (key.empty()) {
            omni_missing_reason_ = "model file '" + llm_path + "' names no omni companion (key " + kOmniFileKey +
                                   "); pass the omni file explicitly";
        } else if (!file_exists(resolved)) {
            omni_missing_reason_ = "the omni companion '" + (resolved.empty() ? key : resolved) +
                                   "' named by model file '" + llm_path + "' was not found";
        } else {
            path = resolved;
        }
    }
    if (path.empty()) {
        load_warnings_.push_back(omni_missing_reason_ + "; loaded text-only (images, audio and speech are unavailable)");
        return;
    }
    omni_ = load_omni_info(path, identity);
    load_warnings_ = omni_->warnings;
}

std::shared_ptr<const VisionModel> OmniModel::vision() const {
    std::lock_guard<std::mutex> lock(load_mutex_);
    if (!vision_) {
        if (!omni_) fail(Status::unsupported, "images need the omni companion file: " + omni_missing_reason_);
        vision_ = std::make_shared<const VisionModel>(omni_->path, device_, params_.use_mmap);
    }
    return vision_;
}

std::shared_ptr<const AudioModel> OmniModel::audio() const {
    std::lock_guard<std::mutex> lock(load_mutex_);
    if (!audio_) {
        if (!omni_) fail(Status::unsupported, "audio input needs the omni companion file: " + omni_missing_reason_);
        audio_ = std::make_shared<const AudioModel>(omni_->path, device_, params_.use_mmap);
    }
    return audio_;
}

std::shared_ptr<const TtsModel> OmniModel::tts() const {
    std::lock_guard<std::mutex> lock(load_mutex_);
    if (!tts_) {
        if (!omni_) fail(Status::unsupported, "speech output needs the omni companion file: " + omni_missing_reason_);
        tts_ = std::make_shared<const TtsModel>(omni_->path, device_, params_.use_mmap);
    }
    return tts_;
}

namespace {

// Loads a component on first use under the model's lock.
template <typename T>
std::shared_ptr<const T> load_once(std::mutex & m, std::shared_ptr<const T> & slot, const std::optional<OmniInfo> & omni,
                                   const std::string & missing, ComputeDevice device, bool map_file) {
    std::lock_guard<std::mutex> lock(m);
    if (!slot) {
        if (!omni) fail(Status::unsupported, "speech output needs the omni companion file: " + missing);
        slot = std::make_shared<const T>(omni->path, device, map_file);
    }
    return slot;
}

}  // namespace

std::shared_ptr<const FlowModel> OmniModel::flow() const {
    return load_once(load_mutex_, flow_, omni_, omni_missing_reason_, device_, params_.use_mmap);
}

std::shared_ptr<const HiftModel> OmniModel::hift() const {
    return load_once(load_mutex_, hift_, omni_, omni_missing_reason_, device_, params_.use_mmap);
}

std::shared_ptr<const VoiceBank> OmniModel::voices() const {
    std::lock_guard<std::mutex> lock(load_mutex_);
    if (!voices_) {
        if (!omni_) fail(Status::unsupported, "speech output needs the omni companion file: " + omni_missing_reason_);
        voices_ = std::make_shared<const VoiceBank>(omni_->path);
    }
    return voices_;
}

std::shared_ptr<const VoiceCloner> OmniModel::voice_cloner() const {
    std::lock_guard<std::mutex> lock(load_mutex_);
    if (!voice_cloner_) {
        if (!omni_) fail(Status::unsupported, "cloning a voice needs the omni companion file: " + omni_missing_reason_);
        voice_cloner_ = std::make_shared<const VoiceCloner>(omni_->path, device_, params_.use_mmap);
    }
    return voice_cloner_;
}

}  // namespace minicpmo
