// pybind11 module minicpmo_cpp._core: a thin binding of the C++ classes, exactly what the package
// (python/minicpmo_cpp, convert, quantize) uses. Numerics stay in C++; the GIL is released around
// every call that computes. The per-stage entry points the tests and benchmarks need are in the
// separate module minicpmo_cpp._testing (csrc/python/testing/).
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
#include "python/numpy_arrays.h"
#include "python/session_args.h"
#include "session/media_forward.h"
#include "session/media_prompt.h"
#include "cli/image_file.h"
#include "session/omni_model.h"
#include "session/omni_session.h"
#include "tts/tts_decoder.h"
#include "token2wav/token2wav.h"
#include "token2wav/voice_bank.h"
#include "vision/vision_model.h"

namespace py = pybind11;
using namespace minicpmo;

void bind_image_resize(py::module_ & m);  // bind_image_resize.cpp
void bind_audio_input(py::module_ & m);   // bind_audio_input.cpp
void bind_duplex(py::module_ & m);        // bind_duplex.cpp (duplex session, LLM side)
void bind_simplex(py::module_ & m);       // bind_simplex.cpp (simplex streaming conversation)
void bind_forward(py::module_ & m);       // bind_forward.cpp (all-positions forward of media prompts)
void bind_reply(py::module_ & m);         // bind_reply.cpp (the reply pipeline: chat, streaming replies)
void bind_defaults(py::module_ & m);      // bind_defaults.cpp (the defaults table)
void bind_voice(py::module_ & m);         // bind_voice.cpp (voices cloned at run time)

using minicpmo_py::attention_mode;
using minicpmo_py::to_f32_array;
using minicpmo_py::to_f32_rows;

namespace {

std::vector<ChatMessage> to_messages(const std::vector<std::pair<std::string, std::string>> & msgs) {
    std::vector<ChatMessage> out;
    out.reserve(msgs.size());
    for (const auto & m : msgs) out.push_back({m.first, m.second});
    return out;
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
    bind_image_resize(m);
    bind_audio_input(m);
    // limits on encoded images, the CLI's (csrc/cli/image_file.h), applied by minicpmo_cpp.media too
    m.attr("IMAGE_MAX_SIDE") = minicpmo_cli::kMaxImageSide;
    m.attr("IMAGE_MAX_PIXELS") = minicpmo_cli::kMaxImagePixels;
    m.def("device_names", &device_names, "the devices this build can compute on: 'cpu', then each GPU ggml lists");
    m.def("cpu_features", &cpu_features,
          "the features ggml's CPU kernels in this process were compiled with ('AVX2', 'AVX512_BF16', ...)");

    py::class_<OmniModel, std::shared_ptr<OmniModel>>(m, "Model")
        .def(py::init([](const std::string & path, const std::string & omni_path, int n_gpu_layers, bool use_mmap,
                         const std::string & device) {
                 LlmModelParams p;
                 p.n_gpu_layers = n_gpu_layers;
                 p.use_mmap = use_mmap;
                 p.device = device;
                 py::gil_scoped_release release;
                 return std::make_shared<OmniModel>(path, omni_path, p);
             }),
             py::arg("path"), py::arg("omni_path") = "", py::arg("n_gpu_layers") = -1, py::arg("use_mmap") = true,
             py::arg("device") = "")
        .def_property_readonly("device", [](const OmniModel & o) { return device_name(o.device()); })
        .def_property_readonly("llm_weight_buffers", [](const OmniModel & o) { return o.llm()->weight_buffers(); })
        .def_property_readonly("has_omni", &OmniModel::has_omni)
        .def_property_readonly("load_warnings", &OmniModel::load_warnings)
        .def_property_readonly("omni_path", [](const OmniModel & o) { return o.omni() ? o.omni()->path : ""; })
        .def_property_readonly("omni_components",
                               [](const OmniModel & o) { return o.omni() ? o.omni()->components : std::vector<std::string>(); })
        .def_property_readonly("path", [](const OmniModel & o) { return o.llm()->path(); })
        // (names, default name) of the voices of the omni file; throws when it has no voice component
        .def_property_readonly("voices",
                               [](const OmniModel & o) {
                                   std::shared_ptr<const VoiceBank> bank;
                                   {
                                       py::gil_scoped_release release;  // the first call reads the voices
                                       bank = o.voices();
                                   }
                                   return py::make_tuple(bank->names(), bank->default_name());
                               })
        .def("tokenize",
             [](const OmniModel & o, const std::string & text, bool parse_special) {
                 return o.llm()->tokenize(text, parse_special);
             },
             py::arg("text"), py::arg("parse_special") = true)
        .def("detokenize",
             [](const OmniModel & o, const std::vector<llama_token> & ids) { return py::bytes(o.llm()->detokenize(ids)); });

    py::class_<SessionHold>(m, "SessionHold")
        .def("__enter__", [](SessionHold & h) -> SessionHold & { return h; }, py::return_value_policy::reference)
        .def("__exit__", [](SessionHold & h, const py::args &) { h.release(); })
        .def("release", &SessionHold::release);

    py::class_<OmniSession>(m, "Session")
        .def(py::init([](const std::shared_ptr<OmniModel> & model, int64_t n_ctx, int64_t n_threads, int64_t n_batch,
                         const std::string & kv_cache_type, const std::string & compute_type) {
                 check_context_params(*model->llm(), n_ctx, n_threads, n_batch);  // before narrowing
                 const ComputeType compute = resolve_compute_type(compute_type);
                 LlmContextParams p;
                 p.kv_cache_type = kv_cache_type;
                 p.n_ctx = static_cast<uint32_t>(n_ctx);
                 p.n_threads = static_cast<int>(n_threads);
                 p.n_batch = static_cast<uint32_t>(n_batch);
                 py::gil_scoped_release release;
                 return std::make_unique<OmniSession>(model, p, compute);
             }),
             py::arg("model"), py::arg("n_ctx") = LlmContextParams().n_ctx,
             py::arg("n_threads") = LlmContextParams().n_threads, py::arg("n_batch") = LlmContextParams().n_batch,
             py::arg("kv_cache_type") = LlmContextParams().kv_cache_type, py::arg("compute_type") = "auto")
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
        .def_property_readonly("compute_type",  // fixed when the session was made: no guard needed
                               [](const OmniSession & s) { return compute_type_name(s.compute_type()); })
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
        .def("graph_placements",
             [](OmniSession & s) {
                 const auto hold = s.enter("graph_placements");
                 py::dict out;
                 py::dict llm;
                 llm["splits_prompt"] = s.context().graph_splits_prompt();
                 llm["splits_token"] = s.context().graph_splits_token();
                 out["llm"] = llm;
                 for (const auto & [name, g] : s.graph_placements()) {
                     py::dict d;
                     d["graphs"] = g.graphs;
                     d["splits"] = g.splits;
                     d["device_nodes"] = g.device_nodes;
                     d["cpu_nodes"] = g.cpu_nodes;
                     d["ggml_weight_products"] = g.ggml_weight_products;
                     out[py::str(name)] = d;
                 }
                 return out;
             },
             "where each component's graphs ran so far: scheduler splits and nodes on the device / CPU")
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
                 return to_f32_rows(rows.data(), rows.size() / n_embd, n_embd);
             },
             py::arg("image"), py::arg("max_slice_nums") = 0)
        .def("prepare_images",
             [](OmniSession & s, int width, int height, int max_slice_nums) {
                 py::gil_scoped_release release;
                 s.prepare_images(width, height, max_slice_nums);
             },
             py::arg("width"), py::arg("height"), py::arg("max_slice_nums") = 0)
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
                 for (const auto & f : feats) out.append(to_f32_rows(f.data(), f.size() / d, d));
                 return out;
             },
             py::arg("image"), py::arg("max_slice_nums") = 0)
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
                 return to_f32_rows(rows.data(), rows.size() / n_embd, n_embd);
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
        .def("reset", &Session::reset)
        .def_property_readonly("speech_sample_rate",
                               [](OmniSession & s) {
                                   const auto hold = s.enter("speech_sample_rate");
                                   return s.token2wav().sample_rate();
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
                 return std::make_pair(to_f32_rows(r.logits.data(), ids.size(), static_cast<size_t>(s.context().n_vocab())),
                                       to_f32_rows(r.hidden.data(), ids.size(), static_cast<size_t>(s.context().n_embd())));
             });

    bind_duplex(m);  // after Session: its constructor takes one
    bind_simplex(m);  // likewise
    bind_forward(m);  // adds Session.forward_media
    bind_reply(m);    // needs Session and SimplexStream
    bind_defaults(m);
    bind_voice(m);

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
