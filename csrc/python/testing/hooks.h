// The hooks object of a native session (_testing.SessionHooks, hooks.cpp), shared by the binding files
// of _testing whose constructors take a session: they accept a _core.Session or its hooks.
#pragma once

#include <pybind11/pybind11.h>

#include "session/omni_session.h"

namespace minicpmo_testing {

namespace py = pybind11;

struct SessionHooks {
    py::object session;  // _core.Session
    py::object model;    // _core.Model, or None (a closed OmniSession's stand-in is refused on use)
    py::object simplex;  // _core.SimplexStream, or None before the first streaming_prefill
    minicpmo::OmniSession & s() const { return session.cast<minicpmo::OmniSession &>(); }
};

// The native session of a _core.Session or of a SessionHooks.
minicpmo::OmniSession & native_session(const py::handle & obj);

}  // namespace minicpmo_testing
