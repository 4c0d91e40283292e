// The voice prompts of the omni file (speech contract §3): per voice the prompt speech tokens, the
// CAM++ x-vector and the prompt log-mel, read once into host memory. A file without voices is
// valid (speech output then needs a voice from the caller). Voices cloned at run time join the bank
// under names no file voice can have, until released.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace minicpmo {

struct VoicePrompt {
    std::string name;
    std::vector<int32_t> tokens;  // n prompt speech tokens
    std::vector<float> spk;       // spk_dim values (not normalized)
    std::vector<float> mel;       // (mel_per_token * n) frames x n_mel, frame-major
    int n_mel = 0;
};

class VoiceBank {
public:
    // Reads `minicpmo.voice.names` / `.default` and the voice.<name>.* tensors; throws bad_model
    // naming the file and voice when one is inconsistent.
    explicit VoiceBank(const std::string & omni_path);

    const std::vector<std::string> & names() const { return names_; }
    const std::string & default_name() const { return default_; }
    bool empty() const { return voices_.empty(); }  // no voice in the file
    // "" = the file's default voice. Throws invalid_argument naming the voices there are. The
    // pointer keeps a cloned voice alive for its user even if it is released meanwhile.
    std::shared_ptr<const VoicePrompt> get(const std::string & name) const;
    bool has(const std::string & name) const;

    // A cloned voice (its name is ignored) joins the bank as "@voice-<n>": '@' is not allowed in file
    // voice names, and n is never reused, so caches keyed by voice name never go stale. Thread-safe:
    // the sessions of a model share the bank, so these are const and lock.
    std::string add_cloned(VoicePrompt voice) const;
    void remove_cloned(const std::string & name) const;

private:
    std::string path_;
    std::vector<std::string> names_;
    std::string default_;
    std::vector<std::shared_ptr<const VoicePrompt>> voices_;
    mutable std::mutex cloned_mutex_;
    mutable std::map<std::string, std::shared_ptr<const VoicePrompt>> cloned_;
    mutable uint64_t n_cloned_ = 0;
};

}  // namespace minicpmo
