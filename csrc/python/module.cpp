// pybind11 module minicpmo_cpp._core: a thin binding of the C++ classes. Numerics stay in C++;
// the GIL is released around every call that computes.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/llama_log.h"
#include "llm/chat_prompt.h"
#include "llm/quantize.h"
#include "python/generate_args.h"
#include "python/numpy_arrays.h"
#include "python/speech_args.h"
#include "session/media_forward.h"
#include "session/media_prompt.h"
#include "cli/image_file.h"
#include "session/omni_model.h"
#include "session/omni_session.h"
#include "tts/tts_decoder.h"
#include "tts/tts_generate.h"
#include "token2wav/token2wav.h"
#include "vision/vision_model.h"

namespace py = pybind11;
using namespace minicpmo;

void bind_image_preprocess(py::module_ & m);  // bind_image_preprocess.cpp
void bind_audio_frontend(py::module_ & m);    // bind_audio_frontend.cpp
void bind_audio_input(py::module_ & m);       // bind_audio_input.cpp
void bind_flow(py::module_ & m);              // bind_flow.cpp
void bind_speech(py::module_ & m);            // bind_speech.cpp (HiFT vocoder)
void bind_speech_stream(py::module_ & m);     // bind_speech_stream.cpp (streaming Token2Wav)
void bind_tts_stream(py::module_ & m);        // bind_tts_stream.cpp (simplex / duplex speech tokens)
void bind_duplex(py::module_ & m);            // bind_duplex.cpp (duplex session, LLM side)
void bind_simplex(py::module_ & m);           // bind_simplex.cpp (simplex streaming conversation)
void bind_forward(py::module_ & m);           // bind_forward.cpp (all-positions forward of media prompts)
void bind_reply(py::module_ & m);             // bind_reply.cpp (the reply pipeline: chat, streaming replies)
void bind_defaults(py::module_ & m);          // bind_defaults.cpp (the defaults table)

using minicpmo_py::make_generate_params;
using minicpmo_py::make_uniform_draw;
using minicpmo_py::to_f32_array;

namespace {

std::vector<ChatMessage> to_messages(const std::vector<std::pair<std::string, std::string>> & msgs) {
    std::vector<ChatMessage> out;
    out.reserve(msgs.size());
    for (const auto & m : msgs) out.push_back({m.first, m.second});
    return out;
}

py::array_t<float> to_array(const float * data, size_t rows, size_t cols) {
    py::array_t<float> a({rows, cols});
    std::memcpy(a.mutable_data(), data, rows * cols * sizeof(float));
    return a;
}

// An RGB8 image from numpy: exactly uint8 (H, W, 3); other dtypes are refused rather than
// silently rescaled. The returned array is C-contiguous and must outlive the ImageInput.
py::array_t<uint8_t> rgb_array(const py::handle & obj) {
    auto arr = py::reinterpret_borrow<py::object>(obj);
    if (!py::isinstance<py::array>(arr)) fail(Status::invalid_argument, "an image must be a numpy uint8 array of shape (H, W, 3)");
    py::array a = arr.cast<py::array>();
    if (!a.dtype().is(py::dtype::of<uint8_t>())) {
        fail(Status::invalid_argument, "an image array must have dtype uint8, got " + std::string(py::str(a.dtype())));
    }
    if (a.ndim() != 3 || a.shape(2) != 3) {
        fail(Status::invalid_argument, "an image array must have shape (H, W, 3), got ndim " + std::to_string(a.ndim()));
    }
    return py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(a);
}

ImageInput image_input(const py::array_t<uint8_t> & a, int max_slice_nums) {
    ImageInput im;
    im.rgb = a.data();
    im.height = static_cast<int>(std::min<py::ssize_t>(a.shape(0), INT32_MAX));
    im.width = static_cast<int>(std::min<py::ssize_t>(a.shape(1), INT32_MAX));
    im.max_slice_nums = max_slice_nums;
    return im;
}

// Keeps the arrays alive and gives the C++ views of a list of images.
struct ImageList {
    std::vector<py::array_t<uint8_t>> arrays;
    std::vector<ImageInput> inputs;
    ImageList(const py::list & images, const std::vector<int> & max_slice_nums) {
        if (!max_slice_nums.empty() && max_slice_nums.size() != images.size()) {
            fail(Status::invalid_argument, "max_slice_nums must give one value per image");
        }
        for (size_t i = 0; i < images.size(); ++i) {
            arrays.push_back(rgb_array(images[i]));
            inputs.push_back(image_input(arrays.back(), max_slice_nums.empty() ? 0 : max_slice_nums[i]));
        }
    }
};

// 16 kHz mono PCM from numpy: exactly float32 1-D (the Python layer converts and resamples).
py::array_t<float> pcm_array(const py::handle & obj) {
    auto arr = py::reinterpret_borrow<py::object>(obj);
    if (!py::isinstance<py::array>(arr)) fail(Status::invalid_argument, "audio must be a numpy float32 array of shape (n,)");
    py::array a = arr.cast<py::array>();
    if (!a.dtype().is(py::dtype::of<float>())) {
        fail(Status::invalid_argument, "an audio array must have dtype float32, got " + std::string(py::str(a.dtype())));
    }
    if (a.ndim() != 1) fail(Status::invalid_argument, "an audio array must be 1-D (mono), got ndim " + std::to_string(a.ndim()));
    return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
}

AudioAttention attention_mode(const std::string & mode) {
    if (mode == "block") return AudioAttention::block_causal;
    if (mode == "full") return AudioAttention::full;
    fail(Status::invalid_argument, "audio attention mode must be 'block' or 'full', got '" + mode + "'");
}

// Keeps the arrays alive and gives the C++ views of a list of audios.
struct AudioList {
    std::vector<py::array_t<float>> arrays;
    std::vector<AudioInput> inputs;
    AudioList(const py::list & audios, const std::vector<std::string> & modes) {
        if (!modes.empty() && modes.size() != audios.size()) {
            fail(Status::invalid_argument, "audio_modes must give one value per audio");
        }
        for (size_t i = 0; i < audios.size(); ++i) {
            arrays.push_back(pcm_array(audios[i]));
            AudioInput a;
            a.pcm = arrays.back().data();
            a.n_samples = static_cast<size_t>(arrays.back().shape(0));
            a.attention = modes.empty() ? AudioAttention::block_causal : attention_mode(modes[i]);
            inputs.push_back(a);
        }
    }
};

// (n_mel, n_frames) float32 mel from numpy for the encoder-level test entry points.
py::array_t<float, py::array::c_style | py::array::forcecast> mel_array(const OmniSession & s, const py::array_t<float, py::array::c_style | py::array::forcecast> & mel) {
    const int n_mel = s.omni_model().audio()->hparams().n_mel;
    if (mel.ndim() != 2 || mel.shape(0) != n_mel) {
        fail(Status::invalid_argument, "mel must have shape (" + std::to_string(n_mel) + ", n_frames)");
    }
    return mel;
}

py::tuple encoding_tuple(const AudioEncoding & e, size_t n_embd_out, size_t n_embd) {
    return py::make_tuple(to_array(e.tokens.data(), static_cast<size_t>(e.n_tokens), n_embd_out),
                          to_array(e.hidden.data(), static_cast<size_t>(e.n_hidden), n_embd));
}

using F32C = py::array_t<float, py::array::c_style | py::array::forcecast>;

// (n, width) float32 rows from numpy, checked.
F32C rows_array(const F32C & a, int64_t width, const char * what) {
    if (a.ndim() != 2 || a.shape(1) != width) {
        fail(Status::invalid_argument, std::string(what) + " must have shape (n, " + std::to_string(width) + ")");
    }
    return a;
}

// Session.hold(what): the session's CallGuard held across several calls from Python (one request);
// a context manager, also released when collected.
struct SessionHold {
    std::string name;  // declared first so it outlives the hold: the guard shows it to refused callers
    std::optional<CallGuard::Hold> hold;
    SessionHold(OmniSession & s, const std::string & what) : name(what) { hold.emplace(s.enter(name.c_str())); }
    void release() {
        if (hold) hold->release();
        hold.reset();
    }
};

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "minicpmo-cpp native core";
    py::register_exception<Error>(m, "MinicpmoError", PyExc_RuntimeError);
    bind_image_preprocess(m);
    bind_audio_frontend(m);
    bind_audio_input(m);
    // limits on encoded images, the CLI's (csrc/cli/image_file.h), applied by minicpmo_cpp.media too
    m.attr("IMAGE_MAX_SIDE") = minicpmo_cli::kMaxImageSide;
    m.attr("IMAGE_MAX_PIXELS") = minicpmo_cli::kMaxImagePixels;
    bind_flow(m);
    bind_speech(m);
    bind_speech_stream(m);
    bind_tts_stream(m);

    py::class_<OmniModel, std::shared_ptr<OmniModel>>(m, "Model")
        .def(py::init([](const std::string & path, const std::string & omni_path, int n_gpu_layers, bool use_mmap) {
                 LlmModelParams p;
                 p.n_gpu_layers = n_gpu_layers;
                 p.use_mmap = use_mmap;
                 py::gil_scoped_release release;
                 return std::make_shared<OmniModel>(path, omni_path, p);
             }),
             py::arg("path"), py::arg("omni_path") = "", py::arg("n_gpu_layers") = -1, py::arg("use_mmap") = true)
        .def_property_readonly("has_omni", &OmniModel::has_omni)
        .def_property_readonly("omni_missing_reason", &OmniModel::omni_missing_reason)
        .def_property_readonly("load_warnings", &OmniModel::load_warnings)
        .def_property_readonly("omni_path", [](const OmniModel & o) { return o.omni() ? o.omni()->path : ""; })
        .def_property_readonly("omni_components",
                               [](const OmniModel & o) { return o.omni() ? o.omni()->components : std::vector<std::string>(); })
        .def_property_readonly("n_embd", [](const OmniModel & o) { return o.llm()->n_embd(); })
        .def_property_readonly("n_vocab", [](const OmniModel & o) { return o.llm()->n_vocab(); })
        .def_property_readonly("n_ctx_train", [](const OmniModel & o) { return o.llm()->n_ctx_train(); })
        .def_property_readonly("path", [](const OmniModel & o) { return o.llm()->path(); })
        .def("meta", [](const OmniModel & o, const std::string & key) { return o.llm()->meta(key.c_str()); })
        .def("tokenize",
             [](const OmniModel & o, const std::string & text, bool parse_special) {
                 return o.llm()->tokenize(text, parse_special);
             },
             py::arg("text"), py::arg("parse_special") = true)
        .def("detokenize",
             [](const OmniModel & o, const std::vector<llama_token> & ids) { return py::bytes(o.llm()->detokenize(ids)); })
        .def("is_eog", [](const OmniModel & o, llama_token t) { return o.llm()->is_eog(t); });

    py::class_<SessionHold>(m, "SessionHold")
        .def("__enter__", [](SessionHold & h) -> SessionHold & { return h; }, py::return_value_policy::reference)
        .def("__exit__", [](SessionHold & h, const py::args &) { h.release(); })
        .def("release", &SessionHold::release);

    py::class_<OmniSession>(m, "Session")
        .def(py::init([](const std::shared_ptr<OmniModel> & model, int64_t n_ctx, int64_t n_threads, int64_t n_batch,
                         const std::string & kv_cache_type) {
                 check_context_params(*model->llm(), n_ctx, n_threads, n_batch);  // before narrowing
                 LlmContextParams p;
                 p.kv_cache_type = kv_cache_type;
                 p.n_ctx = static_cast<uint32_t>(n_ctx);
                 p.n_threads = static_cast<int>(n_threads);
                 p.n_batch = static_cast<uint32_t>(n_batch);
                 py::gil_scoped_release release;
                 return std::make_unique<OmniSession>(model, p);
             }),
             py::arg("model"), py::arg("n_ctx") = LlmContextParams().n_ctx,
             py::arg("n_threads") = LlmContextParams().n_threads, py::arg("n_batch") = LlmContextParams().n_batch,
             py::arg("kv_cache_type") = LlmContextParams().kv_cache_type)
        // every read goes through the guard too: another thread's call is changing these values
        .def_property_readonly("n_past",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("n_past");
                                   return s.n_past();
                               })
        .def_property_readonly("n_ctx",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("n_ctx");
                                   return s.context().n_ctx();
                               })
        .def_property_readonly("kv_tokens",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("kv_tokens");
                                   return s.kv_tokens();  // a copy made while held
                               })
        .def_property_readonly("last_generated",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("last_generated");
                                   return s.last_generated();
                               })
        .def_property_readonly("finish_reason",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("finish_reason");
                                   return std::string(finish_reason_name(s.finish_reason()));
                               },
                               "why the last reply ended: 'stop', 'length', 'context', 'cancelled' ('' while none)")
        .def("hold", [](OmniSession & s, const std::string & what) { return std::make_unique<SessionHold>(s, what); },
             py::arg("what"), py::keep_alive<0, 1>(),
             "holds the session for a sequence of calls (a context manager); another thread's calls get "
             "'session is busy' meanwhile")
        .def("close",
             [](OmniSession & s) {
                 py::gil_scoped_release release;
                 s.close();
             },
             "frees the KV cache, encoders and model reference; later calls raise 'the session is closed'")
        .def_property_readonly("closed", &OmniSession::closed)
        .def_property_readonly("last_prefill",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("last_prefill");
                                   return std::make_pair(s.last_prefill().n_reused, s.last_prefill().n_prefilled);
                               })
        .def("set_n_threads",
             [](OmniSession & s, int64_t n) {
                 check_n_threads(n);  // before narrowing
                 s.set_n_threads(static_cast<int>(n));
             })
        .def("encode_image",
             [](OmniSession & s, const py::object & image, int max_slice_nums) {
                 const py::array_t<uint8_t> a = rgb_array(image);
                 const ImageInput im = image_input(a, max_slice_nums);
                 std::vector<float> rows;
                 {
                     py::gil_scoped_release release;
                     rows = s.encode_image(im);
                 }
                 const size_t n_embd = static_cast<size_t>(s.context().n_embd());
                 return to_array(rows.data(), rows.size() / n_embd, n_embd);
             },
             py::arg("image"), py::arg("max_slice_nums") = 0)
        .def("vision_features",
             [](OmniSession & s, const py::object & image, int max_slice_nums) {
                 const py::array_t<uint8_t> a = rgb_array(image);
                 const ImageInput im = image_input(a, max_slice_nums);
                 std::vector<std::vector<float>> feats;
                 {
                     py::gil_scoped_release release;
                     s.encode_image(im, &feats);
                 }
                 const size_t d = static_cast<size_t>(s.omni_model().vision()->hparams().n_embd);
                 py::list out;
                 for (const auto & f : feats) out.append(to_array(f.data(), f.size() / d, d));
                 return out;
             },
             py::arg("image"), py::arg("max_slice_nums") = 0)
        .def("prefill_media",
             [](OmniSession & s, const std::string & text, const py::list & images, const std::vector<int> & max_slice_nums,
                int use_image_id, const py::list & audios, const std::vector<std::string> & audio_modes) {
                 ImageList list(images, max_slice_nums);
                 AudioList sounds(audios, audio_modes);
                 MediaPromptOptions o;
                 o.use_image_id = use_image_id;
                 py::gil_scoped_release release;
                 const PrefillStats st = s.prefill_media(text, list.inputs, sounds.inputs, o);
                 return std::make_pair(st.n_reused, st.n_prefilled);
             },
             py::arg("text"), py::arg("images") = py::list(), py::arg("max_slice_nums") = std::vector<int>(),
             py::arg("use_image_id") = -1, py::arg("audios") = py::list(),
             py::arg("audio_modes") = std::vector<std::string>())
        .def("encode_audio",
             [](OmniSession & s, const py::object & pcm, const std::string & mode) {
                 const py::array_t<float> a = pcm_array(pcm);
                 AudioInput in;
                 in.pcm = a.data();
                 in.n_samples = static_cast<size_t>(a.shape(0));
                 in.attention = attention_mode(mode);
                 std::vector<float> rows;
                 {
                     py::gil_scoped_release release;
                     rows = s.encode_audio(in);
                 }
                 const size_t n_embd = static_cast<size_t>(s.context().n_embd());
                 return to_array(rows.data(), rows.size() / n_embd, n_embd);
             },
             py::arg("pcm"), py::arg("mode") = "block")
        .def("audio_token_count",
             [](OmniSession & s, const py::object & pcm) {
                 const py::array_t<float> a = pcm_array(pcm);
                 AudioInput in;
                 in.pcm = a.data();
                 in.n_samples = static_cast<size_t>(a.shape(0));
                 return s.audio_token_count(in);
             })
        .def("audio_encode_mel",
             [](OmniSession & s, const py::array_t<float, py::array::c_style | py::array::forcecast> & mel,
                const std::string & mode, int key_limit) {
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
             [](OmniSession & s, const py::array_t<float, py::array::c_style | py::array::forcecast> & mel,
                int context_front, int context_back) {
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
             [](OmniSession & s) {
                 const auto hold = s.enter("audio_stream_reset");
                 s.audio_encoder().reset_streaming();
             })
        .def_property_readonly("audio_stream_cache_len",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("audio_stream_cache_len");
                                   return s.audio_encoder().streaming_cache_len();
                               })
        .def("tts_condition_rows",
             [](OmniSession & s, const std::vector<int32_t> & ids, const F32C & hidden) {
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
                 return to_array(rows.data(), ids.size(), static_cast<size_t>(d.model().hparams().n_embd));
             })
        .def("tts_text_rows",
             [](OmniSession & s, const std::vector<int32_t> & ids) {
                 const auto hold = s.enter("tts_text_rows");
                 s.require_speech_free("tts_text_rows");
                 TtsDecoder & d = s.tts_decoder();
                 std::vector<float> rows;
                 {
                     py::gil_scoped_release release;
                     rows = d.text_rows(ids.data(), static_cast<int>(ids.size()));
                 }
                 return to_array(rows.data(), ids.size(), static_cast<size_t>(d.model().hparams().n_embd));
             })
        .def("tts_reset",
             [](OmniSession & s) {
                 const auto hold = s.enter("tts_reset");
                 s.require_speech_free("tts_reset");
                 s.tts_decoder().reset();
             })
        .def("tts_forward_rows",
             [](OmniSession & s, const F32C & rows, const std::vector<int32_t> & positions) {
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
                 return to_array(logits.data(), 1, logits.size());
             },
             "feeds rows after the cached ones; logits (1, n_vocab_audio) of the last")
        .def("tts_forward_code",
             [](OmniSession & s, int32_t code, int32_t position) {
                 const auto hold = s.enter("tts_forward_code");
                 s.require_speech_free("tts_forward_code");
                 std::vector<float> logits;
                 {
                     py::gil_scoped_release release;
                     logits = s.tts_decoder().forward_code(code, position);
                 }
                 return to_array(logits.data(), 1, logits.size());
             })
        .def("tts_generate_chat",
             [](OmniSession & s, const std::vector<int32_t> & ids, const F32C & hidden,
                const std::optional<std::vector<double>> & draws, const std::optional<uint64_t> & seed,
                int max_new_tokens) {
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
        .def_property_readonly("audio_marker", [](const OmniSession &) { return std::string(kAudioMarker); })
        .def("reset", &Session::reset)
        .def("prefill",
             [](OmniSession & s, const std::vector<llama_token> & ids) {
                 py::gil_scoped_release release;
                 const PrefillStats st = s.prefill(ids);
                 return std::make_pair(st.n_reused, st.n_prefilled);
             })
        .def("append_text",
             [](OmniSession & s, const std::string & text) {
                 py::gil_scoped_release release;
                 const PrefillStats st = s.append_text(text);
                 return std::make_pair(st.n_reused, st.n_prefilled);
             })
        .def("begin_generation",
             [](OmniSession & s, bool do_sample, float temperature, float top_p, int top_k, float repetition_penalty,
                uint64_t seed, int max_new_tokens, bool capture_hidden) {
                 GenerateParams g = make_generate_params(do_sample, temperature, top_p, top_k, repetition_penalty, seed,
                                                         max_new_tokens);
                 g.capture_hidden = capture_hidden;
                 s.begin_generation(g);
             },
             py::arg("do_sample"), py::arg("temperature"), py::arg("top_p"), py::arg("top_k"),
             py::arg("repetition_penalty"), py::arg("seed"), py::arg("max_new_tokens"), py::arg("capture_hidden") = false)
        .def("generated_hidden",
             [](OmniSession & s) {
                 const auto hold = s.enter("generated_hidden");
                 const size_t n_embd = static_cast<size_t>(s.context().n_embd());
                 return to_array(s.generated_hidden().data(), s.generated_hidden().size() / n_embd, n_embd);
             })
        .def_property_readonly("speech_sample_rate",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("speech_sample_rate");
                                   return s.token2wav().sample_rate();
                               })
        .def_property_readonly("voice_names",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("voice_names");
                                   return s.token2wav().voices().names();
                               })
        .def("reply_speech_tokens",
             [](OmniSession & s, const std::optional<std::vector<double>> & draws, const std::optional<uint64_t> & seed,
                int max_new_tokens) {
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
        .def("step",
             [](OmniSession & s) {
                 std::string piece;
                 bool more;
                 {
                     py::gil_scoped_release release;
                     more = s.step(piece);
                 }
                 return std::make_pair(more, piece);
             })
        .def("cancel", &Session::cancel)
        .def("append_embeddings",
             [](OmniSession & s, const py::array_t<float, py::array::c_style | py::array::forcecast> & embd) {
                 if (embd.ndim() != 2 || embd.shape(1) != s.context().n_embd()) {
                     fail(Status::invalid_argument, "embeddings must have shape (n, " +
                                                        std::to_string(s.context().n_embd()) + ")");
                 }
                 const float * data = embd.data();
                 const size_t n = static_cast<size_t>(embd.shape(0));
                 py::gil_scoped_release release;
                 s.append_embeddings(data, n);
             })
        .def("remove_range", &Session::remove_range, py::arg("p0"), py::arg("p1"))
        .def_property_readonly("image_marker", [](const OmniSession &) { return std::string(kImageMarker); })
        .def("last_logits",
             [](OmniSession & s) {
                 const auto hold = s.enter("last_logits");
                 const float * l = s.context().logits(-1);
                 return to_array(l, 1, static_cast<size_t>(s.context().n_vocab()));
             })
        .def("forward",
             [](OmniSession & s, const std::vector<llama_token> & ids) {
                 // fresh cache, every position's logits and final-norm hidden state; leaves the
                 // session empty because the conversation was replaced (session/media_forward.h)
                 const auto hold = s.enter("forward");
                 if (ids.empty()) fail(Status::invalid_argument, "forward() needs at least one token");
                 PromptForward r;
                 {
                     py::gil_scoped_release release;
                     r = forward_prompt(s, ids, {});
                 }
                 return std::make_pair(to_array(r.logits.data(), ids.size(), static_cast<size_t>(s.context().n_vocab())),
                                       to_array(r.hidden.data(), ids.size(), static_cast<size_t>(s.context().n_embd())));
             });

    bind_duplex(m);  // after Session: its constructor takes one
    bind_simplex(m);  // likewise
    bind_forward(m);  // adds Session.forward_media
    bind_reply(m);    // needs Session and SimplexStream
    bind_defaults(m);

    m.def("render_chat",
          [](const std::vector<std::pair<std::string, std::string>> & msgs, bool add_generation_prompt,
             bool enable_thinking, bool use_tts_template) {
              ChatTemplateOptions o;
              o.add_generation_prompt = add_generation_prompt;
              o.enable_thinking = enable_thinking;
              o.use_tts_template = use_tts_template;
              return render_chat(to_messages(msgs), o);
          },
          py::arg("messages"), py::arg("add_generation_prompt") = true, py::arg("enable_thinking") = false,
          py::arg("use_tts_template") = false);

    m.def("system_info", [] {
        ensure_llama_initialized();
        return std::string(llama_print_system_info());
    }, "ggml CPU features and backends of this build (which kernels run)");
    m.def("quantize_types", &quantize_type_names);
    m.def("quantize_llm",
          [](const std::string & in, const std::string & out, const std::string & type, int n_threads,
             const std::function<void(const std::string &)> & progress) {
              std::function<void(const std::string &)> sink;
              if (progress) {
                  sink = [&progress](const std::string & line) {
                      py::gil_scoped_acquire acquire;
                      progress(line);
                  };
              }
              py::gil_scoped_release release;
              quantize_llm(in, out, type, n_threads, sink);
          },
          py::arg("in_path"), py::arg("out_path"), py::arg("type"), py::arg("n_threads") = 0,
          py::arg("progress") = nullptr);
}
