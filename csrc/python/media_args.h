// Python lists of images (uint8 H x W x 3) and audios (float32 mono) as the session's ImageInput /
// AudioInput, shared by the bindings that take a message's media. The checked arrays are kept
// beside the inputs because the inputs point into them.
#pragma once

#include <pybind11/pybind11.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "python/numpy_arrays.h"
#include "session/omni_session.h"
#include "session/reply_stream.h"

namespace minicpmo_py {

struct HeldMedia {
    std::vector<U8Array> image_arrays;
    std::vector<F32Array> audio_arrays;
    std::vector<minicpmo::ImageInput> images;
    std::vector<minicpmo::AudioInput> audios;
};

// `max_slice_nums`: one value per image, or empty for `default_slices` on every image. The content
// keys (ImageInput::content_key), when given, hold one value per image / audio.
inline HeldMedia hold_media(const py::list & images, const py::list & audios, const std::vector<int> & max_slice_nums,
                            int default_slices, const std::vector<uint64_t> & image_keys = {},
                            const std::vector<uint64_t> & audio_keys = {}) {
    if (!max_slice_nums.empty() && max_slice_nums.size() != images.size()) {
        minicpmo::fail(minicpmo::Status::invalid_argument, "max_slice_nums must give one value per image");
    }
    if ((!image_keys.empty() && image_keys.size() != images.size()) ||
        (!audio_keys.empty() && audio_keys.size() != audios.size())) {
        minicpmo::fail(minicpmo::Status::invalid_argument, "content keys must give one value per image and audio");
    }
    HeldMedia m;
    for (size_t i = 0; i < images.size(); ++i) {
        m.image_arrays.push_back(checked_rgb8(images[i], "image " + std::to_string(i)));
        minicpmo::ImageInput im;
        im.rgb = m.image_arrays.back().data();
        im.height = static_cast<int>(m.image_arrays.back().shape(0));
        im.width = static_cast<int>(m.image_arrays.back().shape(1));
        im.max_slice_nums = max_slice_nums.empty() ? default_slices : max_slice_nums[i];
        if (!image_keys.empty()) im.content_key = image_keys[i];
        m.images.push_back(im);
    }
    for (size_t i = 0; i < audios.size(); ++i) {
        m.audio_arrays.push_back(checked_f32(audios[i], 1, "audio " + std::to_string(i)));
        minicpmo::AudioInput a;
        a.pcm = m.audio_arrays.back().data();
        a.n_samples = static_cast<size_t>(m.audio_arrays.back().shape(0));
        if (!audio_keys.empty()) a.content_key = audio_keys[i];
        m.audios.push_back(a);
    }
    return m;
}

// A conversation from Python: (role, text with one marker per medium) pairs and the held media,
// which must outlive the request (it points into them).
inline minicpmo::ChatRequest chat_request(const std::vector<std::pair<std::string, std::string>> & messages,
                                          const HeldMedia & media, int use_image_id, bool enable_thinking,
                                          std::optional<bool> use_tts_template, bool add_generation_prompt = true) {
    minicpmo::ChatRequest r;
    for (const auto & m : messages) r.messages.push_back({m.first, m.second});
    r.images = media.images;
    r.audios = media.audios;
    r.media.use_image_id = use_image_id;
    r.enable_thinking = enable_thinking;
    r.use_tts_template = use_tts_template;
    r.add_generation_prompt = add_generation_prompt;
    return r;
}

}  // namespace minicpmo_py
