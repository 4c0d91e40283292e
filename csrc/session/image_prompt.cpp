#include "session/image_prompt.h"

#include "core/error.h"

namespace minicpmo {

namespace {

// splitmix64: spreads (image hash, position in the image) into a key that is never 0
uint64_t position_key(uint64_t hash, uint64_t index) {
    uint64_t z = hash + 0x9E3779B97F4A7C15ull * (index + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 1;
}

class PromptWriter {
public:
    PromptWriter(const LlmModel & model, ImagePrompt & out) : model_(model), out_(out) {}

    void text(std::string_view s, bool parse_special) {
        if (s.empty()) return;
        for (llama_token t : model_.tokenize(s, parse_special)) push(t, 0);
    }
    void token(llama_token t) { push(t, 0); }
    void image_rows(llama_token unk, int n, size_t image, size_t slice, uint64_t hash) {
        out_.spans.push_back({image, slice, out_.tokens.size()});
        for (int i = 0; i < n; ++i) push(unk, position_key(hash, slice * static_cast<uint64_t>(n) + i));
    }

private:
    void push(llama_token t, uint64_t key) {
        out_.tokens.push_back(t);
        out_.keys.push_back(key);
    }
    const LlmModel & model_;
    ImagePrompt & out_;
};

}  // namespace

ImagePrompt build_image_prompt(const LlmModel & model, std::string_view text, const std::vector<PromptImage> & images,
                               int n_query, bool use_image_id, int first_image_id) {
    const llama_token im_start = model.special_token("<image>"), im_end = model.special_token("</image>");
    const llama_token sl_start = model.special_token("<slice>"), sl_end = model.special_token("</slice>");
    const llama_token id_start = model.special_token("<image_id>"), id_end = model.special_token("</image_id>");
    const llama_token unk = model.special_token("<unk>");

    ImagePrompt out;
    PromptWriter w(model, out);
    size_t start = 0, image = 0;
    while (true) {
        const size_t at = text.find(kImageMarker, start);
        w.text(text.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start), true);
        if (at == std::string_view::npos) break;
        if (image >= images.size()) {
            fail(Status::invalid_argument, "the prompt has more image placeholders than the " +
                                               std::to_string(images.size()) + " image(s) given");
        }
        const PromptImage & im = images[image];
        if (use_image_id) {
            w.token(id_start);
            w.text(std::to_string(first_image_id + static_cast<int>(image)), false);
            w.token(id_end);
        }
        w.token(im_start);
        w.image_rows(unk, n_query, image, 0, im.hash);
        w.token(im_end);
        size_t slice = 1;
        for (int r = 0; r < im.grid_rows; ++r) {
            if (r > 0) w.text("\n", false);
            for (int c = 0; c < im.grid_cols; ++c) {
                w.token(sl_start);
                w.image_rows(unk, n_query, image, slice++, im.hash);
                w.token(sl_end);
            }
        }
        ++image;
        start = at + kImageMarker.size();
    }
    if (image != images.size()) {
        fail(Status::invalid_argument, std::to_string(images.size()) + " image(s) given but the prompt has " +
                                           std::to_string(image) + " image placeholder(s)");
    }
    return out;
}

}  // namespace minicpmo
