// pybind11 binding of the duplex session (LLM side, spec §6.2-6.5); its decision function alone is
// bound for the tests in _testing (csrc/python/testing/bind_duplex_decode.cpp).
// Numerics stay in C++; the GIL is released around every call that computes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "python/duplex_args.h"
#include "python/numpy_arrays.h"
#include "session/duplex_session.h"
#include "session/omni_session.h"

namespace py = pybind11;
using namespace minicpmo;
using minicpmo_py::checked_f32;
using minicpmo_py::decode_params;
using minicpmo_py::checked_rgb8;
using minicpmo_py::U8Array;
using minicpmo_py::F32Array;
using minicpmo_py::shape_text;

namespace {

py::array_t<float> rows_to_array(const std::vector<float> & data, size_t cols) {
    const size_t rows = cols ? data.size() / cols : 0;
    py::array_t<float> a({rows, cols});
    if (!data.empty()) std::memcpy(a.mutable_data(), data.data(), data.size() * sizeof(float));
    return a;
}

}  // namespace

void bind_duplex(py::module_ & m) {
    const DuplexOptions opt;        // the defaults table (see bind_defaults.cpp)
    const DuplexGenerateParams gen;
    const DuplexDecodeParams & dec = gen.decode;
    py::class_<DuplexSession>(m, "DuplexSession")
        .def(py::init([](OmniSession & session, bool sliding_window, int window_high, int window_low, uint64_t seed,
                         const std::string & window_mode, int context_max_units, int context_previous_max_tokens,
                         const std::string & context_previous_marker) {
                 DuplexOptions o;
                 o.sliding_window = sliding_window;
                 o.window_high = window_high;
                 o.window_low = window_low;
                 if (window_mode == "off") {
                     o.window_mode = DuplexWindowMode::off;
                 } else if (window_mode == "basic") {
                     o.window_mode = DuplexWindowMode::basic;
                 } else if (window_mode == "context") {
                     o.window_mode = DuplexWindowMode::context;
                 } else {
                     fail(Status::invalid_argument,
                          "window_mode must be 'off', 'basic' or 'context', got '" + window_mode + "'");
                 }
                 o.context.max_units = context_max_units;
                 o.context.previous_max_tokens = context_previous_max_tokens;
                 o.context.previous_marker = context_previous_marker;
                 return std::make_unique<DuplexSession>(session, o, seed);
             }),
             py::arg("session"), py::arg("sliding_window") = false, py::arg("window_high") = opt.window_high,
             py::arg("window_low") = opt.window_low, py::arg("seed") = 0, py::arg("window_mode") = "off",
             py::arg("context_max_units") = opt.context.max_units,
             py::arg("context_previous_max_tokens") = opt.context.previous_max_tokens,
             py::arg("context_previous_marker") = opt.context.previous_marker, py::keep_alive<1, 2>())
        .def("prepare",
             [](DuplexSession & d, const std::string & prefix, const std::string & suffix, const py::object & ref_audio) {
                 F32Array ref;
                 const float * pcm = nullptr;
                 size_t n = 0;
                 if (!ref_audio.is_none()) {
                     ref = checked_f32(ref_audio, 1, "ref_audio");
                     if (ref.shape(0) == 0) fail(Status::invalid_argument, "ref_audio is empty (no samples)");
                     pcm = ref.data();
                     n = static_cast<size_t>(ref.shape(0));
                 }
                 py::gil_scoped_release release;
                 d.prepare(prefix, suffix, pcm, n);
             },
             py::arg("prefix") = "", py::arg("suffix") = "", py::arg("ref_audio") = py::none())
        .def("prefill_unit",
             [](DuplexSession & d, const py::object & audio, const py::list & frames, const std::string & text,
                const std::vector<int> & max_slice_nums) {
                 if (!max_slice_nums.empty() && max_slice_nums.size() != frames.size()) {
                     fail(Status::invalid_argument, "max_slice_nums must give one value per frame (" +
                                                        std::to_string(frames.size()) + "), got " +
                                                        std::to_string(max_slice_nums.size()));
                 }
                 DuplexUnitInput in;
                 F32Array pcm;
                 if (!audio.is_none()) {
                     pcm = checked_f32(audio, 1, "audio_waveform");
                     if (pcm.shape(0) == 0) fail(Status::invalid_argument, "audio_waveform is empty (no samples)");
                     in.pcm = pcm.data();
                     in.n_samples = static_cast<size_t>(pcm.shape(0));
                 }
                 std::vector<U8Array> keep;
                 for (size_t i = 0; i < frames.size(); ++i) {
                     keep.push_back(checked_rgb8(frames[i], "frame " + std::to_string(i)));
                     ImageInput im;
                     im.rgb = keep.back().data();
                     im.height = static_cast<int>(keep.back().shape(0));
                     im.width = static_cast<int>(keep.back().shape(1));
                     im.max_slice_nums = max_slice_nums.empty() ? 1 : max_slice_nums[i];
                     in.frames.push_back(im);
                 }
                 in.text = text;
                 py::gil_scoped_release release;
                 d.prefill_unit(in);
             },
             py::arg("audio") = py::none(), py::arg("frames") = py::list(), py::arg("text") = "",
             py::arg("max_slice_nums") = std::vector<int>())
        .def("generate_unit",
             [](DuplexSession & d, bool greedy, int max_new_speak_tokens, float temperature, int top_k, float top_p,
                float repetition_penalty, int repetition_window, float length_penalty, float listen_prob_scale,
                bool force_listen, const std::vector<int32_t> & scripted, bool wait_audio, int listen_top_k) {
                 DuplexGenerateParams g;
                 g.decode = decode_params(greedy, temperature, top_k, top_p, repetition_penalty, repetition_window,
                                          length_penalty, listen_prob_scale, listen_top_k);
                 g.max_new_speak_tokens = max_new_speak_tokens;
                 g.force_listen = force_listen;
                 g.scripted = scripted;
                 g.wait_audio = wait_audio;
                 DuplexUnitResult r;
                 {
                     py::gil_scoped_release release;
                     r = d.generate_unit(g);
                 }
                 py::dict out;
                 out["is_listen"] = r.is_listen;
                 out["text"] = py::bytes(r.text);
                 out["end_of_turn"] = r.end_of_turn;
                 out["current_time"] = r.current_time;
                 out["decided"] = r.decided;
                 out["speak_token_ids"] = r.speak_tokens;
                 out["speak_hidden"] = rows_to_array(r.speak_hidden, static_cast<size_t>(d.session().context().n_embd()));
                 out["n_dropped"] = r.n_dropped;
                 out["unit"] = r.unit;
                 if (r.has_audio) {
                     out["audio"] = minicpmo_py::to_f32_array(r.audio);
                     out["speech_tokens"] = r.speech_tokens;
                 }
                 return out;
             },
             py::arg("greedy") = false, py::arg("max_new_speak_tokens") = gen.max_new_speak_tokens,
             py::arg("temperature") = dec.temperature, py::arg("top_k") = dec.top_k, py::arg("top_p") = dec.top_p,
             py::arg("repetition_penalty") = dec.repetition_penalty, py::arg("repetition_window") = dec.repetition_window,
             py::arg("length_penalty") = dec.length_penalty, py::arg("listen_prob_scale") = dec.listen_prob_scale,
             py::arg("force_listen") = false, py::arg("scripted") = std::vector<int32_t>(), py::arg("wait_audio") = true,
             py::arg("listen_top_k") = dec.listen_top_k)
        .def("set_speech", &DuplexSession::set_speech, py::arg("on"), py::arg("voice") = "", py::arg("seed") = 0,
             "speech for speaking units from the next prepare() on")
        .def("take_audio",
             [](DuplexSession & d, bool wait) -> py::object {
                 DuplexSpeechResult r;
                 bool got;
                 {
                     py::gil_scoped_release release;
                     got = d.take_audio(r, wait);
                 }
                 if (!got) return py::none();
                 return py::make_tuple(r.unit, minicpmo_py::to_f32_array(r.audio), r.speech_tokens);
             },
             py::arg("wait") = true, "(unit, 24 kHz audio, speech tokens) of the oldest unit not waited for")
        .def("interrupt",
             [](DuplexSession & d) {
                 py::gil_scoped_release release;
                 d.interrupt();
             })
        .def("reseed", &DuplexSession::reseed, py::arg("seed"))
        .def("close",
             [](DuplexSession & d) {
                 py::gil_scoped_release release;
                 d.close();
             },
             "stops the speech threads and ends the conversation")
        .def_property_readonly("pending_logits",
                               [](DuplexSession & d) -> py::object {
                                   const auto hold = d.session().enter("duplex pending_logits");
                                   if (!d.has_pending_unit()) return py::none();
                                   const auto & l = d.pending_logits();
                                   py::array_t<float> a(l.size());
                                   std::memcpy(a.mutable_data(), l.data(), l.size() * sizeof(float));
                                   return a;
                               })
        .def_property_readonly("system_length", &DuplexSession::system_length)
        .def_property_readonly("current_time", &DuplexSession::current_time)
        .def_property_readonly("decode_history",
                               [](DuplexSession & d) {
                                   const auto hold = d.session().enter("duplex decode_history");
                                   return d.decode_history();
                               })
        .def_property_readonly("unit_lengths",
                               [](DuplexSession & d) {
                                   const auto hold = d.session().enter("duplex unit_lengths");
                                   return d.unit_lengths();
                               })
        .def_property_readonly("previous_tokens",
                               [](DuplexSession & d) {
                                   const auto hold = d.session().enter("duplex previous_tokens");
                                   return d.previous_tokens();
                               })
        .def_property_readonly("forbidden_ids", [](const DuplexSession & d) { return d.decode_ids().forbidden; });
}
