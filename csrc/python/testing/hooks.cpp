// _testing.hooks(x): the test hooks of a package object. The package's objects keep their native
// _core objects in private attributes; hooks() is the one place that reads them, so tests and
// benchmarks never touch a private attribute. Each hooks object has the test-only entry points of its
// native object (the per-stage calls bound here, with the same names, arguments and call guard as the
// methods _core.Session had) and passes every other attribute on to the native object, so
// hooks(s).prefill(ids) is the native session's public prefill.
#include "python/testing/hooks.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "audio/audio_encoder.h"
#include "audio/audio_model.h"
#include "core/error.h"
#include "python/generate_args.h"
#include "python/media_args.h"
#include "python/numpy_arrays.h"
#include "python/session_args.h"
#include "python/speech_args.h"
#include "session/duplex_session.h"
#include "session/media_prompt.h"
#include "session/omni_model.h"
#include "session/omni_session.h"
#include "session/simplex_stream.h"
#include "token2wav/token2wav.h"
#include "tts/tts_decoder.h"
#include "tts/tts_generate.h"
#include "vision/vision_model.h"

namespace py = pybind11;
using namespace minicpmo;
using minicpmo_py::attention_mode;
using minicpmo_py::make_uniform_draw;
using minicpmo_py::to_f32_array;
using minicpmo_py::to_f32_rows;

namespace minicpmo_testing {

OmniSession & native_session(const py::handle & obj) {
    if (py::isinstance<SessionHooks>(obj)) return obj.cast<SessionHooks &>().s();
    return obj.cast<OmniSession &>();
}

}  // namespace minicpmo_testing

using minicpmo_testing::SessionHooks;

namespace {

using F32C = py::array_t<float, py::array::c_style | py::array::forcecast>;

// (n_mel, n_frames) float32 mel from numpy for the encoder-level test entry points.
F32C mel_array(const OmniSession & s, const F32C & mel) {
    const int n_mel = s.omni_model().audio()->hparams().n_mel;
    if (mel.ndim() != 2 || mel.shape(0) != n_mel) {
        fail(Status::invalid_argument, "mel must have shape (" + std::to_string(n_mel) + ", n_frames)");
    }
    return mel;
}

py::tuple encoding_tuple(const AudioEncoding & e, size_t n_embd_out, size_t n_embd) {
    return py::make_tuple(to_f32_rows(e.tokens.data(), static_cast<size_t>(e.n_tokens), n_embd_out),
                          to_f32_rows(e.hidden.data(), static_cast<size_t>(e.n_hidden), n_embd));
}

// (n, width) float32 rows from numpy, checked.
F32C rows_array(const F32C & a, int64_t width, const char * what) {
    if (a.ndim() != 2 || a.shape(1) != width) {
        fail(Status::invalid_argument, std::string(what) + " must have shape (n, " + std::to_string(width) + ")");
    }
    return a;
}

// A native object with the test-only entry points of its type (ModelHooks, SimplexHooks, DuplexHooks).
template <typename T>
struct NativeHooks {
    py::object native;
    explicit NativeHooks(py::object n) : native(std::move(n)) { native.cast<T &>(); }  // checks the type
    T & get() const { return native.cast<T &>(); }
};

struct ModelHooks : NativeHooks<OmniModel> {
    using NativeHooks::NativeHooks;
};
struct SimplexHooks : NativeHooks<SimplexStream> {
    using NativeHooks::NativeHooks;
};
struct DuplexHooks : NativeHooks<DuplexSession> {
    using NativeHooks::NativeHooks;
};

// attributes the hooks object does not have come from its native object
template <typename H>
py::object forward_attr(const H & h, const std::string & name) {
    return h.native.attr(name.c_str());
}

}  // namespace

void bind_hooks(py::module_ & m) {
    py::class_<SessionHooks>(m, "SessionHooks",
                             "test hooks of a native _core.Session; other attributes are the session's own")
        .def(py::init([](py::object session, py::object model, py::object simplex) {
                 session.cast<OmniSession &>();  // a _core.Session, else TypeError
                 return SessionHooks{std::move(session), std::move(model), std::move(simplex)};
             }),
             py::arg("session"), py::arg("model") = py::none(), py::arg("simplex") = py::none())
        .def_property_readonly("native", [](const SessionHooks & hk) { return hk.session; }, "the _core.Session")
        .def_property_readonly("model",
                               [](const SessionHooks & hk) {
                                   if (hk.model.is_none()) fail(Status::invalid_argument, "these hooks have no model");
                                   return ModelHooks(hk.model);
                               })
        .def_property_readonly("simplex",
                               [](const SessionHooks & hk) {
                                   if (hk.simplex.is_none()) {
                                       fail(Status::invalid_argument, "the session has no simplex stream yet "
                                                                      "(streaming_prefill makes it)");
                                   }
                                   return SimplexHooks(hk.simplex);
                               })
        .def("__getattr__", [](const SessionHooks & hk, const std::string & name) { return hk.session.attr(name.c_str()); })
        .def_property_readonly("closed", [](SessionHooks & hk) { return hk.s().closed(); })
        .def("audio_encode_mel",
             [](SessionHooks & hk, const py::array_t<float, py::array::c_style | py::array::forcecast> & mel,
                const std::string & mode, int key_limit) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("audio_encode_mel");
                 const auto m = mel_array(s, mel);
                 const AudioAttention att = attention_mode(mode);
                 AudioEncoding e;
                 {
                     py::gil_scoped_release release;
                     e = s.audio_encoder().encode(MelFrames{m.data(), static_cast<int>(m.shape(1))}, att, true,
                                                  key_limit);
                 }
                 const AudioHparams & hp = s.audio_encoder().model().hparams();
                 return encoding_tuple(e, hp.n_embd_out, hp.n_embd);
             },
             py::arg("mel"), py::arg("mode") = "block", py::arg("key_limit") = 0,
             "encoder on given log-mel frames (n_mel, n_frames): (tokens, post-LN encoder output); "
             "key_limit > 0 masks keys j >= key_limit")
        .def("audio_stream_chunk",
             [](SessionHooks & hk, const py::array_t<float, py::array::c_style | py::array::forcecast> & mel,
                int context_front, int context_back) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("audio_stream_chunk");
                 const auto m = mel_array(s, mel);
                 AudioEncoding e;
                 {
                     py::gil_scoped_release release;
                     e = s.audio_encoder().encode_streaming(MelFrames{m.data(), static_cast<int>(m.shape(1))},
                                                            context_front, context_back, true);
                 }
                 const AudioHparams & hp = s.audio_encoder().model().hparams();
                 return encoding_tuple(e, hp.n_embd_out, hp.n_embd);
             },
             py::arg("mel"), py::arg("context_front") = 0, py::arg("context_back") = 0,
             "one streaming chunk through the encoder's key/value cache: (tokens, encoder output)")
        .def("audio_stream_reset",
             [](SessionHooks & hk) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("audio_stream_reset");
                 s.audio_encoder().reset_streaming();
             })
        .def_property_readonly("audio_stream_cache_len",
                               [](SessionHooks & hk) {
                                   OmniSession & s = hk.s();
                                   const auto hold = s.enter("audio_stream_cache_len");
                                   return s.audio_encoder().streaming_cache_len();
                               })
        .def("tts_condition_rows",
             [](SessionHooks & hk, const std::vector<int32_t> & ids, const F32C & hidden) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("tts_condition_rows");
                 s.require_speech_free("tts_condition_rows");
                 TtsDecoder & d = s.tts_decoder();
                 const auto h = rows_array(hidden, d.model().hparams().n_embd_llm, "hidden");
                 if (static_cast<size_t>(h.shape(0)) != ids.size()) fail(Status::invalid_argument, "one hidden row per text id");
                 std::vector<float> rows;
                 {
                     py::gil_scoped_release release;
                     rows = d.condition_rows(ids.data(), h.data(), static_cast<int>(ids.size()));
                 }
                 return to_f32_rows(rows.data(), ids.size(), static_cast<size_t>(d.model().hparams().n_embd));
             })
        .def("tts_text_rows",
             [](SessionHooks & hk, const std::vector<int32_t> & ids) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("tts_text_rows");
                 s.require_speech_free("tts_text_rows");
                 TtsDecoder & d = s.tts_decoder();
                 std::vector<float> rows;
                 {
                     py::gil_scoped_release release;
                     rows = d.text_rows(ids.data(), static_cast<int>(ids.size()));
                 }
                 return to_f32_rows(rows.data(), ids.size(), static_cast<size_t>(d.model().hparams().n_embd));
             })
        .def("tts_reset",
             [](SessionHooks & hk) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("tts_reset");
                 s.require_speech_free("tts_reset");
                 s.tts_decoder().reset();
             })
        .def("tts_forward_rows",
             [](SessionHooks & hk, const F32C & rows, const std::vector<int32_t> & positions) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("tts_forward_rows");
                 s.require_speech_free("tts_forward_rows");
                 TtsDecoder & d = s.tts_decoder();
                 const auto r = rows_array(rows, d.model().hparams().n_embd, "rows");
                 if (static_cast<size_t>(r.shape(0)) != positions.size()) fail(Status::invalid_argument, "one position per row");
                 std::vector<float> logits;
                 {
                     py::gil_scoped_release release;
                     logits = d.forward_rows(r.data(), positions.data(), static_cast<int>(positions.size()));
                 }
                 return to_f32_rows(logits.data(), 1, logits.size());
             },
             "feeds rows after the cached ones; logits (1, n_vocab_audio) of the last")
        .def("tts_forward_code",
             [](SessionHooks & hk, int32_t code, int32_t position) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("tts_forward_code");
                 s.require_speech_free("tts_forward_code");
                 std::vector<float> logits;
                 {
                     py::gil_scoped_release release;
                     logits = s.tts_decoder().forward_code(code, position);
                 }
                 return to_f32_rows(logits.data(), 1, logits.size());
             })
        .def("tts_generate_chat",
             [](SessionHooks & hk, const std::vector<int32_t> & ids, const F32C & hidden,
                const std::optional<std::vector<double>> & draws, const std::optional<uint64_t> & seed,
                int max_new_tokens) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("tts_generate_chat");
                 s.require_speech_free("tts_generate_chat");
                 TtsDecoder & d = s.tts_decoder();
                 TtsSampling sampling = d.model().hparams().chat;
                 if (max_new_tokens > 0) sampling.max_new_tokens = max_new_tokens;
                 const auto h = rows_array(hidden, d.model().hparams().n_embd_llm, "hidden");
                 if (static_cast<size_t>(h.shape(0)) != ids.size()) fail(Status::invalid_argument, "one hidden row per text id");
                 const UniformDraw draw = make_uniform_draw(draws, seed);
                 TtsChatResult r;
                 {
                     py::gil_scoped_release release;
                     r = generate_chat_speech(d, ids.data(), h.data(), static_cast<int>(ids.size()), sampling, draw);
                 }
                 return std::make_pair(r.tokens, r.finished);
             },
             py::arg("text_ids"), py::arg("hidden"), py::arg("draws") = py::none(), py::arg("seed") = py::none(),
             py::arg("max_new_tokens") = 0,
             "chat-layout speech tokens (EOS excluded) and whether EOS was sampled; greedy without draws/seed")
        .def_property_readonly("audio_marker", [](const SessionHooks &) { return std::string(kAudioMarker); })
        .def("append_text",
             [](SessionHooks & hk, const std::string & text) {
                 OmniSession & s = hk.s();
                 py::gil_scoped_release release;
                 const PrefillStats st = s.append_text(text);
                 return std::make_pair(st.n_reused, st.n_prefilled);
             })
        // the generation step by step (the package drives it through _core.start_reply)
        .def("prefill",
             [](SessionHooks & hk, const std::vector<llama_token> & ids) {
                 OmniSession & s = hk.s();
                 py::gil_scoped_release release;
                 const PrefillStats st = s.prefill(ids);
                 return std::make_pair(st.n_reused, st.n_prefilled);
             })
        .def("prefill_media",
             [](SessionHooks & hk, const std::string & text, const py::list & images,
                const std::vector<int> & max_slice_nums, int use_image_id, const py::list & audios) {
                 OmniSession & s = hk.s();
                 const minicpmo_py::HeldMedia media = minicpmo_py::hold_media(images, audios, max_slice_nums, 0);
                 MediaPromptOptions o;
                 o.use_image_id = use_image_id;
                 py::gil_scoped_release release;
                 const PrefillStats st = s.prefill_media(text, media.images, media.audios, o);
                 return std::make_pair(st.n_reused, st.n_prefilled);
             },
             py::arg("text"), py::arg("images") = py::list(), py::arg("max_slice_nums") = std::vector<int>(),
             py::arg("use_image_id") = -1, py::arg("audios") = py::list())
        .def("begin_generation",
             [](SessionHooks & hk, bool do_sample, float temperature, float top_p, int top_k, float repetition_penalty,
                uint64_t seed, int max_new_tokens, bool capture_hidden) {
                 GenerateParams g = minicpmo_py::make_generate_params(do_sample, temperature, top_p, top_k,
                                                                      repetition_penalty, seed, max_new_tokens);
                 g.capture_hidden = capture_hidden;
                 hk.s().begin_generation(g);
             },
             py::arg("do_sample"), py::arg("temperature"), py::arg("top_p"), py::arg("top_k"),
             py::arg("repetition_penalty"), py::arg("seed"), py::arg("max_new_tokens"), py::arg("capture_hidden") = false)
        .def("step",
             [](SessionHooks & hk) {
                 OmniSession & s = hk.s();
                 std::string piece;
                 bool more;
                 {
                     py::gil_scoped_release release;
                     more = s.step(piece);
                 }
                 return std::make_pair(more, piece);
             })
        .def("cancel", [](SessionHooks & hk) { hk.s().cancel(); })
        .def_property_readonly("finish_reason",
                               [](SessionHooks & hk) {
                                   OmniSession & s = hk.s();
                                   const auto hold = s.enter("finish_reason");
                                   return std::string(finish_reason_name(s.finish_reason()));
                               },
                               "why the last generation ended: 'stop', 'length', 'context', 'cancelled' ('' while none)")
        .def_property_readonly("voice_names",
                               [](SessionHooks & hk) {
                                   OmniSession & s = hk.s();
                                   const auto hold = s.enter("voice_names");
                                   return s.token2wav().voices().names();
                               })
        .def("generated_hidden",
             [](SessionHooks & hk) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("generated_hidden");
                 const size_t n_embd = static_cast<size_t>(s.context().n_embd());
                 return to_f32_rows(s.generated_hidden().data(), s.generated_hidden().size() / n_embd, n_embd);
             })
        .def("reply_speech_tokens",
             [](SessionHooks & hk, const std::optional<std::vector<double>> & draws, const std::optional<uint64_t> & seed,
                int max_new_tokens) {
                 OmniSession & s = hk.s();
                 const UniformDraw draw = make_uniform_draw(draws, seed);
                 bool finished = false;
                 std::vector<int32_t> tokens;
                 {
                     py::gil_scoped_release release;
                     tokens = s.reply_speech_tokens(draw, max_new_tokens, &finished);
                 }
                 return std::make_pair(tokens, finished);
             },
             py::arg("draws") = py::none(), py::arg("seed") = py::none(), py::arg("max_new_tokens") = 0,
             "speech tokens of the last reply (generated with capture_hidden after <|tts_bos|>)")
        .def("append_embeddings",
             [](SessionHooks & hk, const py::array_t<float, py::array::c_style | py::array::forcecast> & embd) {
                 OmniSession & s = hk.s();
                 if (embd.ndim() != 2 || embd.shape(1) != s.context().n_embd()) {
                     fail(Status::invalid_argument, "embeddings must have shape (n, " +
                                                        std::to_string(s.context().n_embd()) + ")");
                 }
                 const float * data = embd.data();
                 const size_t n = static_cast<size_t>(embd.shape(0));
                 py::gil_scoped_release release;
                 s.append_embeddings(data, n);
             })
        .def("remove_range", [](SessionHooks & hk, int p0, int p1) { hk.s().remove_range(p0, p1); }, py::arg("p0"),
             py::arg("p1"))
        .def_property_readonly("image_marker", [](const SessionHooks &) { return std::string(kImageMarker); })
        .def("last_logits",
             [](SessionHooks & hk) {
                 OmniSession & s = hk.s();
                 const auto hold = s.enter("last_logits");
                 const float * l = s.context().logits(-1);
                 return to_f32_rows(l, 1, static_cast<size_t>(s.context().n_vocab()));
             });

    py::class_<ModelHooks>(m, "ModelHooks", "test hooks of a native _core.Model; other attributes are the model's own")
        .def(py::init<py::object>(), py::arg("model"))
        .def_property_readonly("native", [](const ModelHooks & h) { return h.native; })
        .def_property_readonly("omni_missing_reason", [](const ModelHooks & h) { return h.get().omni_missing_reason(); })
        .def_property_readonly("vision_packed_matrices",
                               [](const ModelHooks & h) { return h.get().vision()->weights().kernel_copies(); },
                               "matrices of the vision tower packed for oneDNN's kernels so far (loads the tower)")
        .def_property_readonly("n_embd", [](const ModelHooks & h) { return h.get().llm()->n_embd(); })
        .def_property_readonly("n_vocab", [](const ModelHooks & h) { return h.get().llm()->n_vocab(); })
        .def_property_readonly("n_ctx_train", [](const ModelHooks & h) { return h.get().llm()->n_ctx_train(); })
        .def("meta", [](const ModelHooks & h, const std::string & key) { return h.get().llm()->meta(key.c_str()); })
        .def("is_eog", [](const ModelHooks & h, llama_token t) { return h.get().llm()->is_eog(t); })
        .def("__getattr__", &forward_attr<ModelHooks>);

    py::class_<SimplexHooks>(m, "SimplexHooks",
                             "test hooks of a native _core.SimplexStream; other attributes are the stream's own")
        .def(py::init<py::object>(), py::arg("stream"))
        .def_property_readonly("native", [](const SimplexHooks & h) { return h.native; })
        .def("reset", [](const SimplexHooks & h) {
            SimplexStream & s = h.get();
            py::gil_scoped_release release;
            s.reset();
        })
        .def_property_readonly("next_user_prefix",
                               [](const SimplexHooks & h) {
                                   const SimplexStream & s = h.get();
                                   const auto hold = s.session().enter("next_user_prefix");
                                   return s.next_user_prefix();
                               })
        .def_property_readonly("user_turn_open", [](const SimplexHooks & h) { return h.get().user_turn_open(); })
        .def_property_readonly("last_audio_rows",
                               [](const SimplexHooks & h) {
                                   const SimplexStream & s = h.get();
                                   const auto hold = s.session().enter("last_audio_rows");
                                   return to_f32_array(s.last_audio_rows());  // flat: n_tokens x n_embd
                               })
        .def("__getattr__", &forward_attr<SimplexHooks>);

    py::class_<DuplexHooks>(m, "DuplexHooks",
                            "test hooks of a native _core.DuplexSession; other attributes are the session's own")
        .def(py::init<py::object>(), py::arg("duplex"))
        .def_property_readonly("native", [](const DuplexHooks & h) { return h.native; })
        .def_property_readonly("speech_on", [](const DuplexHooks & h) { return h.get().speech_on(); })
        .def_property_readonly("prepared", [](const DuplexHooks & h) { return h.get().prepared(); })
        .def_property_readonly("has_pending_unit", [](const DuplexHooks & h) { return h.get().has_pending_unit(); })
        .def_property_readonly("turn_ended", [](const DuplexHooks & h) { return h.get().turn_ended(); })
        .def_property_readonly("stage_turns",
                               [](const DuplexHooks & h) {
                                   const StageTurns::Stats t = h.get().stage_turns();
                                   py::dict d;
                                   d["taken"] = t.taken;
                                   d["most_at_once"] = t.most_at_once;
                                   d["at_once"] = t.at_once;
                                   return d;
                               },
                               "the turns the stages computed in (session/stage_turns.h): taken, the most "
                               "stages computing at once, the limit")
        .def("__getattr__", &forward_attr<DuplexHooks>);

    m.def(
        "hooks",
        [](const py::object & obj) -> py::object {
            // the one place the package's private attributes are read (python/minicpmo_cpp)
            if (py::hasattr(obj, "_duplex")) return py::cast(DuplexHooks(obj.attr("_duplex")));
            if (!py::hasattr(obj, "_session")) {
                throw py::type_error("hooks() takes an OmniSession or a DuplexSession of minicpmo_cpp, got " +
                                     std::string(py::str(py::type::of(obj))));
            }
            return py::cast(SessionHooks{obj.attr("_session"), obj.attr("_model"), obj.attr("_simplex_stream")});
        },
        py::arg("obj"),
        "SessionHooks of an OmniSession (its native session, model and simplex stream) or DuplexHooks of a "
        "DuplexSession");

}
