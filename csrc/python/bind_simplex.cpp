// pybind11 binding of the simplex streaming conversation (spec §6.1). The Python face is
// OmniSession.streaming_prefill / streaming_generate (python/minicpmo_cpp/simplex.py); the state the
// tests read (last_audio_rows, ...) is in _testing (csrc/python/testing/hooks.cpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "python/media_args.h"
#include "python/numpy_arrays.h"
#include "session/omni_session.h"
#include "session/simplex_stream.h"

namespace py = pybind11;
using namespace minicpmo;
using minicpmo_py::checked_f32;
using minicpmo_py::F32Array;
using minicpmo_py::checked_rgb8;
using minicpmo_py::U8Array;

void bind_simplex(py::module_ & m) {
    py::class_<SimplexStream>(m, "SimplexStream")
        .def(py::init<OmniSession &>(), py::arg("session"), py::keep_alive<1, 2>())
        .def("prefill",
             [](SimplexStream & s, const std::string & role, const std::string & text, const py::list & images,
                const py::list & audios) {
                 // no slice count: the stream encodes its frames unsliced (streaming_frame)
                 const minicpmo_py::HeldMedia media = minicpmo_py::hold_media(images, audios, {}, 0);
                 py::gil_scoped_release release;
                 const PrefillStats st = s.prefill(role, text, media.images, media.audios);
                 return std::make_pair(st.n_reused, st.n_prefilled);
             },
             py::arg("role"), py::arg("text"), py::arg("images") = py::list(), py::arg("audios") = py::list(),
             "one message: text with one <image>./</image> / <audio>./</audio> marker per image / audio");
}
