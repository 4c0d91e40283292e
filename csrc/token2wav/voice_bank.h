// The voice prompts of the omni file (speech contract §3): per voice the prompt speech tokens, the
// CAM++ x-vector and the prompt log-mel, read once into host memory. A file without voices is
// valid (speech output then needs a voice from the caller).
#pragma once

#include <cstdint>
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
    bool empty() const { return voices_.empty(); }
    // "" = the default voice. Throws invalid_argument naming the voices there are.
    const VoicePrompt & get(const std::string & name) const;

private:
    std::string path_;
    std::vector<std::string> names_;
    std::string default_;
    std::vector<VoicePrompt> voices_;
};

}  // namespace minicpmo
