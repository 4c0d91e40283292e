#include "session/media_prompt.h"

#include "core/error.h"

namespace minicpmo {

// splitmix64: spreads (content hash, position in the content) into a key that is never 0
uint64_t position_key(uint64_t hash, uint64_t index) {
    uint64_t z = hash + 0x9E3779B97F4A7C15ull * (index + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 1;
}

namespace {

class PromptWriter {
public:
    PromptWriter(const LlmModel & model, MediaPrompt & out) : model_(model), out_(out) {}

    void text(std::string_view s, bool parse_special) {
        if (s.empty()) return;
        for (llama_token t : model_.tokenize(s, parse_special)) push(t, 0);
    }
    void token(llama_token t) { push(t, 0); }
    void rows(MediaPrompt::Span::Kind kind, llama_token unk, int n, size_t index, size_t slice, uint64_t hash) {
        out_.spans.push_back({kind, index, slice, out_.tokens.size(), static_cast<size_t>(n)});
        for (int i = 0; i < n; ++i) push(unk, position_key(hash, slice * static_cast<uint64_t>(n) + i));
    }

private:
    void push(llama_token t, uint64_t key) {
        out_.tokens.push_back(t);
        out_.keys.push_back(key);
    }
    const LlmModel & model_;
    MediaPrompt & out_;
};

std::string count_mismatch(size_t given, size_t markers, const char * what) {
    return std::to_string(given) + " " + what + "(s) given but the prompt has " + std::to_string(markers) + " " + what +
           " placeholder(s)";
}

}  // namespace

MediaPrompt build_media_prompt(const LlmModel & model, std::string_view text, const std::vector<PromptImage> & images,
                               const std::vector<PromptAudio> & audios, int n_query, bool use_image_id,
                               int first_image_id) {
    using Kind = MediaPrompt::Span::Kind;
    const llama_token unk = model.special_token(Special::unk);
    MediaPrompt out;
    PromptWriter w(model, out);
    size_t start = 0, image = 0, audio = 0;
    while (true) {
        const size_t at_image = text.find(kImageMarker, start), at_audio = text.find(kAudioMarker, start);
        const size_t at = std::min(at_image, at_audio);
        w.text(text.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start), true);
        if (at == std::string_view::npos) break;
        if (at == at_audio) {
            if (audio >= audios.size()) fail(Status::invalid_argument, count_mismatch(audios.size(), audio + 1, "audio"));
            w.token(model.special_token(Special::audio_start));
            w.rows(Kind::audio, unk, audios[audio].n_tokens, audio, 0, audios[audio].hash);
            w.token(model.special_token(Special::audio_end));
            ++audio;
            start = at + kAudioMarker.size();
            continue;
        }
        if (image >= images.size()) fail(Status::invalid_argument, count_mismatch(images.size(), image + 1, "image"));
        const PromptImage & im = images[image];
        if (use_image_id) {
            w.token(model.special_token(Special::image_id));
            w.text(std::to_string(first_image_id + static_cast<int>(image)), false);
            w.token(model.special_token(Special::image_id_end));
        }
        w.token(model.special_token(Special::image));
        w.rows(Kind::image, unk, n_query, image, 0, im.hash);
        w.token(model.special_token(Special::image_end));
        size_t slice = 1;
        for (int r = 0; r < im.grid_rows; ++r) {
            if (r > 0) w.text("\n", false);
            for (int c = 0; c < im.grid_cols; ++c) {
                w.token(model.special_token(Special::slice));
                w.rows(Kind::image, unk, n_query, image, slice++, im.hash);
                w.token(model.special_token(Special::slice_end));
            }
        }
        ++image;
        start = at + kImageMarker.size();
    }
    if (image != images.size()) fail(Status::invalid_argument, count_mismatch(images.size(), image, "image"));
    if (audio != audios.size()) fail(Status::invalid_argument, count_mismatch(audios.size(), audio, "audio"));
    return out;
}

}  // namespace minicpmo
