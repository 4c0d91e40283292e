// pybind11 binding of the all-positions forward pass over a media prompt (csrc/session/media_forward.h):
// Session.forward_media. The Python face is OmniSession.forward_messages.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "python/media_args.h"
#include "python/numpy_arrays.h"
#include "session/media_forward.h"
#include "session/omni_session.h"

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
    session.def(
        "forward_media",
        [](OmniSession & s, const std::string & text, const py::list & images, const std::vector<int> & max_slice_nums,
           int use_image_id, const py::list & audios, bool want_logits) {
            const minicpmo_py::HeldMedia media = minicpmo_py::hold_media(images, audios, max_slice_nums, 0);
            const std::vector<ImageInput> & ims = media.images;
            const std::vector<AudioInput> & sounds = media.audios;
            MediaPromptOptions o;
            o.use_image_id = use_image_id;
            PromptForward r;
            {
                py::gil_scoped_release release;
                const auto hold = s.enter("forward_media");
                r = forward_media(s, s.media_prompt(text, ims, sounds, o), ims, sounds, want_logits);
            }
            const auto n = static_cast<py::ssize_t>(r.tokens.size());
            py::object logits = py::none();
            if (want_logits) logits = adopt(std::move(r.logits), {n, static_cast<py::ssize_t>(s.context().n_vocab())});
            py::array_t<bool> is_media(n);
            for (py::ssize_t i = 0; i < n; ++i) is_media.mutable_data()[i] = r.is_media[static_cast<size_t>(i)] != 0;
            return py::make_tuple(std::move(r.tokens), is_media, logits,
                                  adopt(std::move(r.hidden), {n, static_cast<py::ssize_t>(s.context().n_embd())}));
        },
        py::arg("text"), py::arg("images") = py::list(), py::arg("max_slice_nums") = std::vector<int>(),
        py::arg("use_image_id") = -1, py::arg("audios") = py::list(), py::arg("logits") = true,
        "(token ids, media mask, logits or None, final-norm hidden states) of every position of the rendered "
        "prompt `text` with its image / audio markers expanded, on an empty cache (the conversation is cleared)");
}
