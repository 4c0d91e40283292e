// Expands the image placeholders of a rendered chat prompt into MiniCPM-o's token layout
// (spec §1.3): [<image_id>k</image_id>]<image><unk>×Q</image> followed by the slice rows
// (<slice><unk>×Q</slice> per cell, rows joined by "\n"). Each <unk> run is a span that the
// vision encoder's rows replace; keys identify the image so the KV cache is reused only for the
// same pixels.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llm/llm_model.h"

namespace minicpmo {

// The literal a message uses for "an image goes here" (what the official processor expands).
inline constexpr std::string_view kImageMarker = "<image>./</image>";

struct PromptImage {
    int grid_cols = 0;    // 0 when the image is not sliced
    int grid_rows = 0;
    uint64_t hash = 0;    // content hash (pixels + slicing settings)
};

struct ImagePrompt {
    std::vector<llama_token> tokens;
    std::vector<uint64_t> keys;  // 0 for text positions
    struct Span {
        size_t image = 0;  // index into the images
        size_t slice = 0;  // 0 = source image, then the slices row by row
        size_t pos = 0;    // first prompt position of its n_query rows
    };
    std::vector<Span> spans;  // in prompt order
};

// `text` holds one kImageMarker per image, in order. Image ids count from `first_image_id`.
// Throws invalid_argument when the number of markers and images differ.
ImagePrompt build_image_prompt(const LlmModel & model, std::string_view text, const std::vector<PromptImage> & images,
                               int n_query, bool use_image_id, int first_image_id = 0);

}  // namespace minicpmo
