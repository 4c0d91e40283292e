// Python bindings of the audio input rule (csrc/audio/resample.h): channel mixing, the resampler and
// the CLI's miniaudio decoder, so minicpmo_cpp.audio_input and minicpmo-cli turn user audio into the
// same samples.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
#include <vector>

#include "audio/resample.h"
#include "cli/audio_file.h"
#include "core/error.h"
#include "python/numpy_arrays.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

using minicpmo_py::F32Array;
using minicpmo_py::shape_text;
using minicpmo_py::to_f32_array;

// Checks dtype and rank before any conversion: a forcecast would silently turn int16 samples into
// floats of +-32768, and a wrong-rank array would be misread.
F32Array checked_f32(const py::object & obj, int ndim, const char * fn, const char * expected) {
    const std::string want = std::string(fn) + ": pcm must be a numpy float32 array of shape " + expected;
    if (!py::isinstance<py::array>(obj)) {
        fail(Status::invalid_argument, want + ", got " + std::string(py::str(py::type::of(obj))));
    }
    const py::array arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.dtype().kind() != 'f' || arr.itemsize() != 4) {
        fail(Status::invalid_argument, want + ", got dtype " + std::string(py::str(arr.dtype())));
    }
    if (arr.ndim() != ndim) fail(Status::invalid_argument, want + ", got shape " + shape_text(arr));
    F32Array a = F32Array::ensure(arr);  // a copy only when the input is strided
    if (!a) fail(Status::internal, std::string(fn) + ": could not make the array C-contiguous");
    return a;
}

}  // namespace

void bind_audio_input(py::module_ & m) {
    m.def(
        "resample",
        [](const py::object & pcm, int in_rate, int out_rate) {
            const F32Array a = checked_f32(pcm, 1, "resample", "(n,)");
            std::vector<float> out;
            {
                py::gil_scoped_release release;
                out = resample_pcm(a.data(), size_t(a.shape(0)), in_rate, out_rate);
            }
            return to_f32_array(out);
        },
        py::arg("pcm"), py::arg("in_rate"), py::arg("out_rate"),
        "mono float32 PCM at in_rate -> float32 at out_rate: Kaiser-windowed sinc, flat to 0.91 x the lower "
        "Nyquist frequency, >= 100 dB stopband from it; equal rates copy the input bit for bit");

    m.def(
        "mix_to_mono",
        [](const py::object & pcm) {
            const F32Array a = checked_f32(pcm, 2, "mix_to_mono", "(n_frames, n_channels)");
            if (a.shape(1) > kMaxAudioChannels) {
                fail(Status::invalid_argument, "mix_to_mono: " + std::to_string(a.shape(1)) +
                                                   " channels (at most " + std::to_string(kMaxAudioChannels) +
                                                   "); is the array (n_channels, n_frames)? transpose it");
            }
            std::vector<float> out;
            {
                py::gil_scoped_release release;
                out = mix_to_mono(a.data(), size_t(a.shape(0)), int(a.shape(1)));
            }
            return to_f32_array(out);
        },
        py::arg("pcm"), "float32 (n_frames, n_channels) -> float32 (n_frames,): the mean of the channels");

    m.def(
        "decode_audio",
        [](const py::bytes & data, const std::string & label, double max_seconds) {
            char * ptr = nullptr;
            py::ssize_t size = 0;
            if (PyBytes_AsStringAndSize(data.ptr(), &ptr, &size) != 0) throw py::error_already_set();
            minicpmo_cli::DecodedAudio audio;
            {
                py::gil_scoped_release release;  // the bytes object is immutable and held by the caller
                audio = minicpmo_cli::decode_audio(ptr, size_t(size), label, max_seconds);
            }
            py::array_t<float> a({py::ssize_t(audio.frames), py::ssize_t(audio.channels)});
            std::memcpy(a.mutable_data(), audio.interleaved.data(), audio.interleaved.size() * sizeof(float));
            return py::make_tuple(a, audio.sample_rate);
        },
        py::arg("data"), py::arg("label"), py::arg("max_seconds") = minicpmo_cli::kMaxAudioSeconds,
        "decode an encoded WAV / FLAC / MP3 file held in memory with the CLI's miniaudio decoder: "
        "(float32 (frames, channels) at the file's rate, sample_rate); max_seconds <= 0: no limit");

    m.attr("AUDIO_MAX_SAMPLE_RATE") = kMaxAudioSampleRate;
    m.attr("AUDIO_MAX_CHANNELS") = kMaxAudioChannels;
    m.attr("AUDIO_MAX_SECONDS") = minicpmo_cli::kMaxAudioSeconds;  // the CLI's limit, used by audio_input too
}
