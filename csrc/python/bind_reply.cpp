// pybind11 binding of the reply pipeline (session/reply_stream.h): OmniSession.chat and
// streaming_generate start a reply here and only pull its chunks.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "python/generate_args.h"
#include "python/media_args.h"
#include "python/numpy_arrays.h"
#include "python/speech_args.h"
#include "session/reply_stream.h"
#include "session/simplex_stream.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

ReplySpeech speech_mode(const std::string & name) {
    if (name == "none") return ReplySpeech::none;
    if (name == "whole") return ReplySpeech::whole;
    if (name == "streamed") return ReplySpeech::streamed;
    fail(Status::invalid_argument, "speech must be 'none', 'whole' or 'streamed', got '" + name + "'");
}

// The reply settings every start call takes, as keyword arguments.
ReplyOptions reply_options(const py::kwargs & kw) {
    auto get = [&](const char * key) -> py::object {
        if (!kw.contains(key)) fail(Status::internal, std::string("start_reply: missing argument ") + key);
        return kw[key];
    };
    ReplyOptions o;
    o.generate = minicpmo_py::make_generate_params(
        get("do_sample").cast<bool>(), get("temperature").cast<float>(), get("top_p").cast<float>(),
        get("top_k").cast<int>(), get("repetition_penalty").cast<float>(), get("seed").cast<uint64_t>(),
        get("max_new_tokens").cast<int>());
    o.speech = speech_mode(get("speech").cast<std::string>());
    o.voice = get("voice").cast<std::string>();
    o.max_speech_tokens = get("max_speech_tokens").cast<int>();
    const auto speech_seed = get("speech_seed").cast<std::optional<uint64_t>>();
    o.noise_seed = speech_seed;
    o.speech_draw = minicpmo_py::make_uniform_draw(std::nullopt, speech_seed);
    return o;
}

}  // namespace

void bind_reply(py::module_ & m) {
    py::class_<ReplyStream>(m, "Reply")
        .def("next",
             [](ReplyStream & r) {
                 ReplyChunk chunk;
                 bool more;
                 {
                     py::gil_scoped_release release;
                     more = r.next(chunk);
                 }
                 return py::make_tuple(more, chunk.text, minicpmo_py::to_f32_arrays(chunk.audio));
             },
             "(more, text piece, list of 24 kHz waveforms finished by this step)")
        .def("cancel", &ReplyStream::cancel, py::call_guard<py::gil_scoped_release>())
        .def("abandon", &ReplyStream::abandon, py::call_guard<py::gil_scoped_release>(),
             "stops the reply unless the session moved on, is busy or closed")
        .def("request_stop", &ReplyStream::request_stop)
        .def_property_readonly("finish_reason",
                               [](const ReplyStream & r) { return std::string(finish_reason_name(r.finish_reason())); })
        .def_property_readonly("text", &ReplyStream::text)
        .def_property_readonly("speech_tokens", &ReplyStream::speech_tokens)
        .def_property_readonly("sample_rate", &ReplyStream::sample_rate);

    m.def(
        "start_reply",
        [](OmniSession & s, const std::vector<std::pair<std::string, std::string>> & messages, const py::list & images,
           const std::vector<int> & max_slice_nums, int use_image_id, const py::list & audios, bool enable_thinking,
           std::optional<bool> use_tts_template, const std::vector<uint64_t> & image_keys,
           const std::vector<uint64_t> & audio_keys, const py::kwargs & kw) {
            const minicpmo_py::HeldMedia media =
                minicpmo_py::hold_media(images, audios, max_slice_nums, 0, image_keys, audio_keys);
            const ChatRequest request =
                minicpmo_py::chat_request(messages, media, use_image_id, enable_thinking, use_tts_template);
            const ReplyOptions options = reply_options(kw);
            py::gil_scoped_release release;
            return start_reply(s, request, options);
        },
        py::arg("session"), py::arg("messages"), py::arg("images"), py::arg("max_slice_nums"), py::arg("use_image_id"),
        py::arg("audios"), py::arg("enable_thinking"), py::arg("use_tts_template"), py::arg("image_keys"),
        py::arg("audio_keys"), py::keep_alive<0, 1>(),
        "renders and prefills the conversation and starts its reply (messages: (role, text with media markers))");

    m.def(
        "start_streaming_reply",
        [](SimplexStream & stream, bool enable_thinking, const py::kwargs & kw) {
            const ReplyOptions options = reply_options(kw);
            py::gil_scoped_release release;
            return stream.start_reply(enable_thinking, options);
        },
        py::arg("stream"), py::arg("enable_thinking"), py::keep_alive<0, 1>(),
        "closes the simplex user turn and starts the reply");
}
