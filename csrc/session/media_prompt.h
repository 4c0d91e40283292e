// Expands the media placeholders of a rendered chat prompt into MiniCPM-o's token layout.
// Images (spec §1.3): [<image_id>k</image_id>]<image><unk>×Q</image> followed by the slice rows
// (<slice><unk>×Q</slice> per cell, rows joined by "\n"). Audio (spec §3.3, §4.4):
// <|audio_start|><unk>×N<|audio_end|>. Each <unk> run is a span that encoder rows replace; keys
// identify the content so the KV cache is reused only for the same pixels or samples.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llm/llm_model.h"

namespace minicpmo {

// The literals a message uses for "an image / an audio goes here" (what the official processor expands).
inline constexpr std::string_view kImageMarker = "<image>./</image>";
inline constexpr std::string_view kAudioMarker = "<audio>./</audio>";

struct PromptImage {
    int grid_cols = 0;    // 0 when the image is not sliced
    int grid_rows = 0;
    uint64_t hash = 0;    // content hash (pixels + slicing settings)
};

struct PromptAudio {
    int n_tokens = 0;     // audio embeddings the encoder produces for it
    uint64_t hash = 0;    // content hash (samples + encoding mode)
};

struct MediaPrompt {
    std::vector<llama_token> tokens;
    std::vector<uint64_t> keys;  // 0 for text positions
    struct Span {
        enum class Kind { image, audio } kind = Kind::image;
        size_t index = 0;  // into the images or the audios
        size_t slice = 0;  // images: 0 = source image, then the slices row by row; audio: 0
        size_t pos = 0;    // first prompt position of its rows
        size_t n_rows = 0;
    };
    std::vector<Span> spans;  // in prompt order
};

// The cache key of row `index` of media content with hash `hash` (never 0, the key of text).
uint64_t position_key(uint64_t hash, uint64_t index);

// `text` holds one kImageMarker per image and one kAudioMarker per audio, each kind in order.
// Image ids count from `first_image_id`. Throws invalid_argument when markers and inputs differ.
MediaPrompt build_media_prompt(const LlmModel & model, std::string_view text, const std::vector<PromptImage> & images,
                               const std::vector<PromptAudio> & audios, int n_query, bool use_image_id,
                               int first_image_id = 0);

}  // namespace minicpmo
