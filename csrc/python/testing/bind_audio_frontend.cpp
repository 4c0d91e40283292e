// Python bindings of the audio front end (csrc/audio): the batch log-mel and the streaming mel
// processor, so tests can compare them with numpy and transformers. The runtime itself needs no
// Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "audio/log_mel.h"
#include "audio/streaming_mel.h"
#include "core/error.h"
#include "python/numpy_arrays.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

using minicpmo_py::F32Array;
using minicpmo_py::checked_f32;
using minicpmo_py::shape_text;

MelConfig make_config(const F32Array & filters, int sample_rate, int n_fft, int hop, int64_t chunk_samples,
                      float dynamic_range_db) {
    MelConfig c;
    c.sample_rate = sample_rate;
    c.n_fft = n_fft;
    c.hop = hop;
    c.n_mel = int(std::min<py::ssize_t>(filters.shape(0), kMaxMelBands + 1));
    c.chunk_samples = chunk_samples;
    c.dynamic_range_db = dynamic_range_db;
    validate_mel_config(c);
    if (filters.shape(1) != c.n_bins()) {
        fail(Status::invalid_argument, "filters must have shape (n_mel, n_fft/2 + 1) = (n_mel, " +
                                           std::to_string(c.n_bins()) + "), got " + shape_text(filters));
    }
    return c;
}

std::vector<float> to_vector(const F32Array & a) { return std::vector<float>(a.data(), a.data() + a.size()); }

py::array_t<float> mel_array(const std::vector<float> & data, int n_mel, int64_t n_frames) {
    py::array_t<float> a({py::ssize_t(n_mel), py::ssize_t(n_frames)});
    if (!data.empty()) std::memcpy(a.mutable_data(), data.data(), data.size() * sizeof(float));
    return a;
}

StreamingFeed parse_feed(const std::string & s) {
    if (s == "raw") return StreamingFeed::raw;
    if (s == "simplex") return StreamingFeed::simplex;
    if (s == "duplex") return StreamingFeed::duplex;
    fail(Status::invalid_argument, "feed must be 'raw', 'simplex' or 'duplex', got '" + s + "'");
}

}  // namespace

void bind_audio_frontend(py::module_ & m) {
    m.def(
        "log_mel",
        [](const py::object & pcm, const py::object & filters, int sample_rate, int n_fft, int hop,
           int64_t chunk_samples, float dynamic_range_db, bool return_pieces) -> py::object {
            const F32Array f = checked_f32(filters, 2, "filters");
            const MelConfig c = make_config(f, sample_rate, n_fft, hop, chunk_samples, dynamic_range_db);
            const F32Array x = checked_f32(pcm, 1, "pcm");
            LogMelSpectrogram mel;
            {
                py::gil_scoped_release release;
                const MelFrameAnalyzer analyzer(c, to_vector(f));
                mel = log_mel_spectrogram(analyzer, x.data(), size_t(x.size()));
            }
            py::array_t<float> a = mel_array(mel.data, mel.n_mel, mel.n_frames);
            if (return_pieces) return py::make_tuple(a, mel.piece_frames);
            return std::move(a);
        },
        py::arg("pcm"), py::arg("filters"), py::arg("sample_rate") = 16000, py::arg("n_fft") = 400,
        py::arg("hop") = 160, py::arg("chunk_samples") = 480000, py::arg("dynamic_range_db") = 8.0f,
        py::arg("return_pieces") = false,
        "batch Whisper log-mel of float32 PCM (MODEL_SPEC §3.1): float32 (n_mel, n_frames); with "
        "return_pieces also the frame count of every 30-s piece");

    py::class_<StreamingMel>(m, "StreamingMel")
        .def(py::init([](const py::object & filters, const std::string & feed, int redundancy_frames, int chunk_ms,
                         int first_chunk_ms, bool sliding_window, double slide_trigger_seconds,
                         double slide_stride_seconds, double slide_min_keep_seconds, double dynamic_clip_min_seconds,
                         float log_floor, int sample_rate, int n_fft, int hop, int64_t chunk_samples,
                         float dynamic_range_db) {
                 const F32Array f = checked_f32(filters, 2, "filters");
                 const MelConfig c = make_config(f, sample_rate, n_fft, hop, chunk_samples, dynamic_range_db);
                 StreamingMelOptions o;
                 o.feed = parse_feed(feed);
                 o.redundancy_frames = redundancy_frames;
                 o.chunk_ms = chunk_ms;
                 o.first_chunk_ms = first_chunk_ms;
                 o.sliding_window = sliding_window;
                 o.slide_trigger_seconds = slide_trigger_seconds;
                 o.slide_stride_seconds = slide_stride_seconds;
                 o.slide_min_keep_seconds = slide_min_keep_seconds;
                 o.dynamic_clip_min_seconds = dynamic_clip_min_seconds;
                 o.log_floor = log_floor;
                 return std::make_unique<StreamingMel>(c, to_vector(f), o);
             }),
             py::arg("filters"), py::arg("feed") = "raw", py::arg("redundancy_frames") = 0, py::arg("chunk_ms") = 1000,
             py::arg("first_chunk_ms") = 1035, py::arg("sliding_window") = true, py::arg("slide_trigger_seconds") = 30.0,
             py::arg("slide_stride_seconds") = 10.0, py::arg("slide_min_keep_seconds") = 1.0,
             py::arg("dynamic_clip_min_seconds") = 5.0, py::arg("log_floor") = -10.0f, py::arg("sample_rate") = 16000,
             py::arg("n_fft") = 400, py::arg("hop") = 160, py::arg("chunk_samples") = 480000,
             py::arg("dynamic_range_db") = 8.0f)
        .def(
            "push",
            [](StreamingMel & s, const py::object & pcm, bool is_last_chunk) {
                const F32Array x = checked_f32(pcm, 1, "pcm");
                py::gil_scoped_release release;
                return s.push(x.data(), size_t(x.size()), is_last_chunk);
            },
            py::arg("pcm"), py::arg("is_last_chunk") = false,
            "one reference process() call with these samples; True when a chunk was queued")
        .def(
            "next_chunk",
            [](StreamingMel & s) -> py::object {
                MelChunk c;
                if (!s.next_chunk(c)) return py::none();
                py::dict d;
                d["mel"] = mel_array(c.data, c.n_mel, c.n_frames);
                d["first_frame"] = c.first_frame;
                d["prefix_frames"] = c.prefix_frames;
                d["core_frames"] = c.core_frames;
                d["suffix_frames"] = c.suffix_frames;
                d["dynamic_clip"] = c.dynamic_clip;
                d["clip_threshold"] = c.clip_threshold;
                d["is_flush"] = c.is_flush;
                return std::move(d);
            },
            "the oldest queued chunk as a dict (mel float32 (n_mel, n_frames), first_frame, prefix_frames, "
            "core_frames, suffix_frames, dynamic_clip, clip_threshold, is_flush), or None")
        .def("flush",
             [](StreamingMel & s) {
                 py::gil_scoped_release release;
                 return s.flush();
             })
        .def("reset", &StreamingMel::reset)
        .def_property_readonly("chunk_samples", &StreamingMel::chunk_samples)
        .def_property_readonly("first_chunk_pad_samples", &StreamingMel::first_chunk_pad_samples)
        .def_property_readonly("emitted_frames", &StreamingMel::emitted_frames)
        .def_property_readonly("buffer_samples", &StreamingMel::buffer_samples)
        .def_property_readonly("buffer_first_frame", &StreamingMel::buffer_first_frame)
        .def_property_readonly("pending_samples", &StreamingMel::pending_samples)
        .def_property_readonly("queued_chunks", &StreamingMel::queued_chunks);
}
