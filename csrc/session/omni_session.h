// A conversation that can see: the LLM session plus, created on first use, the session's own
// vision encoder. Images are encoded only when the part of the prompt that holds them is not
// already in the KV cache (earlier turns keep their images without re-encoding).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "session/omni_model.h"
#include "session/session.h"

namespace minicpmo {

class VisionEncoder;

// Decoded RGB8 pixels owned by the caller for the duration of a call.
struct ImageInput {
    const uint8_t * rgb = nullptr;  // height rows of width * 3 bytes
    int width = 0;
    int height = 0;
    int max_slice_nums = 0;         // 0 = the model's default (9 for chat)
};

struct ImagePromptOptions {
    int use_image_id = -1;          // -1 = the model's default (true), 0 / 1 = off / on
};

class OmniSession : public Session {
public:
    OmniSession(std::shared_ptr<const OmniModel> model, const LlmContextParams & params);
    ~OmniSession();

    const OmniModel & omni_model() const { return *omni_; }
    void set_n_threads(int n_threads);

    // LLM embeddings of one image: (1 + slices) * n_query rows of n_embd, source first, then the
    // slices row by row. `vit_features` (optional) receives each slice's ViT output.
    std::vector<float> encode_image(const ImageInput & image, std::vector<std::vector<float>> * vit_features = nullptr);

    // Prefills a rendered prompt whose image placeholders (kImageMarker) stand for `images`.
    PrefillStats prefill_with_images(const std::string & text, const std::vector<ImageInput> & images,
                                     const ImagePromptOptions & options);
    // Token ids and content keys the prompt expands to (what prefill_with_images decodes).
    std::vector<llama_token> image_prompt_tokens(const std::string & text, const std::vector<ImageInput> & images,
                                                 const ImagePromptOptions & options);

    // Appends one image's token layout after what the cache holds; image_id < 0 writes no
    // <image_id> tag.
    PrefillStats append_image(const ImageInput & image, int image_id);

    std::string chat(const std::vector<ChatMessage> & messages, const std::vector<ImageInput> & images,
                     const ImagePromptOptions & image_options, const ChatTemplateOptions & options,
                     const GenerateParams & params, const std::function<bool(const std::string &)> & on_piece);
    using Session::chat;

private:
    VisionEncoder & vision();

    std::shared_ptr<const OmniModel> omni_;
    std::unique_ptr<VisionEncoder> vision_;
    int n_threads_;
};

}  // namespace minicpmo
