// A MiniCPM-o model as users name it: the LLM file plus, when present, its omni companion.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/omni_file.h"
#include "llm/llm_model.h"

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

private:
    std::shared_ptr<const LlmModel> llm_;
    std::optional<OmniInfo> omni_;
    std::string omni_missing_reason_;
};

}  // namespace minicpmo
