// pybind11 binding of a conversation's prompt (what chat() prefills): its token ids and the
// all-positions forward pass over it (csrc/session/media_forward.h). The Python faces are
// OmniSession.prompt_token_ids and forward_messages.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "core/error.h"
#include "python/media_args.h"
#include "python/numpy_arrays.h"
#include "session/media_forward.h"
#include "session/omni_session.h"
#include "session/reply_stream.h"

namespace py = pybind11;
using namespace minicpmo;
using minicpmo_py::checked_f32;
using minicpmo_py::checked_rgb8;
using minicpmo_py::F32Array;
using minicpmo_py::U8Array;

namespace {

// A numpy array that takes over `v` (no copy: logits of a long prompt are hundreds of MB).
template <typename T>
py::array_t<T> adopt(std::vector<T> && v, std::vector<py::ssize_t> shape) {
    auto * owned = new std::vector<T>(std::move(v));
    py::capsule free_it(owned, [](void * p) { delete static_cast<std::vector<T> *>(p); });
    return py::array_t<T>(std::move(shape), owned->data(), free_it);
}

}  // namespace

void bind_forward(py::module_ & m) {
    auto session = py::reinterpret_borrow<py::class_<OmniSession>>(m.attr("Session"));
    // the conversation's prompt: (role, text with media markers) pairs rendered here, as chat does
    session.def(
        "conversation_tokens",
        [](OmniSession & s, const std::vector<std::pair<std::string, std::string>> & messages, const py::list & images,
           const std::vector<int> & max_slice_nums, int use_image_id, const py::list & audios, bool enable_thinking,
           std::optional<bool> use_tts_template) {
            const minicpmo_py::HeldMedia media = minicpmo_py::hold_media(images, audios, max_slice_nums, 0);
            const ChatRequest request =
                minicpmo_py::chat_request(messages, media, use_image_id, enable_thinking, use_tts_template);
            py::gil_scoped_release release;
            const auto hold = s.enter("prompt_token_ids");
            return s.media_prompt(render_request(request, false), request.images, request.audios, request.media).tokens;
        },
        py::arg("messages"), py::arg("images"), py::arg("max_slice_nums"), py::arg("use_image_id"), py::arg("audios"),
        py::arg("enable_thinking"), py::arg("use_tts_template"),
        "token ids of the prompt chat() prefills for the conversation, media expanded to their placeholders");
    session.def(
        "forward_conversation",
        [](OmniSession & s, const std::vector<std::pair<std::string, std::string>> & messages, const py::list & images,
           const std::vector<int> & max_slice_nums, int use_image_id, const py::list & audios, bool enable_thinking,
           std::optional<bool> use_tts_template, bool add_generation_prompt, bool want_logits) {
            const minicpmo_py::HeldMedia media = minicpmo_py::hold_media(images, audios, max_slice_nums, 0);
            const ChatRequest request = minicpmo_py::chat_request(messages, media, use_image_id, enable_thinking,
                                                                  use_tts_template, add_generation_prompt);
            PromptForward r;
            {
                py::gil_scoped_release release;
                const auto hold = s.enter("forward_media");
                const std::string text = render_request(request, false);
                r = forward_media(s, s.media_prompt(text, request.images, request.audios, request.media), request.images,
                                  request.audios, want_logits);
            }
            const auto n = static_cast<py::ssize_t>(r.tokens.size());
            py::object logits = py::none();
            if (want_logits) logits = adopt(std::move(r.logits), {n, static_cast<py::ssize_t>(s.context().n_vocab())});
            py::array_t<bool> is_media(n);
            for (py::ssize_t i = 0; i < n; ++i) is_media.mutable_data()[i] = r.is_media[static_cast<size_t>(i)] != 0;
            return py::make_tuple(std::move(r.tokens), is_media, logits,
                                  adopt(std::move(r.hidden), {n, static_cast<py::ssize_t>(s.context().n_embd())}));
        },
        py::arg("messages"), py::arg("images"), py::arg("max_slice_nums"), py::arg("use_image_id"), py::arg("audios"),
        py::arg("enable_thinking"), py::arg("use_tts_template"), py::arg("add_generation_prompt"), py::arg("logits"),
        "(token ids, media mask, logits or None, final-norm hidden states) of every position of the conversation's "
        "prompt, media included, on an empty cache (the conversation is cleared)");
}
