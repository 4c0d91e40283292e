#include "core/backend_modules.h"

#include <cstdlib>
#include <string>

#include "core/error.h"

#ifdef GGML_BACKEND_DL
#include <dlfcn.h>
#include <unistd.h>

#include "ggml-backend.h"
#endif

namespace minicpmo {

#ifdef GGML_BACKEND_DL
namespace {

// the folder of this library: the wheel's minicpmo_cpp/ folder, or the install's lib/
std::string module_dir() {
    Dl_info info{};
    if (!dladdr(reinterpret_cast<void *>(&load_backend_modules), &info) || !info.dli_fname) return ".";
    const std::string self = info.dli_fname;
    const size_t slash = self.rfind('/');
    return slash == std::string::npos ? std::string(".") : self.substr(0, slash);
}

// ggml's own score for a CPU module on this CPU (0: it uses instructions this CPU lacks), read without
// registering the module; -1 when the file cannot be loaded at all
int module_score(const std::string & path) {
    void * handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) return -1;
    using score_fn = int (*)();
    auto score = reinterpret_cast<score_fn>(dlsym(handle, "ggml_backend_score"));
    const int s = score ? score() : -1;
    dlclose(handle);
    return s;
}

// MINICPMO_CPU_VARIANT=<level>: the module that replaces the best one, checked before anything is
// registered (a throw inside ensure_llama_initialized's call_once lets the next call try again)
std::string checked_pinned_module(const std::string & dir, const std::string & level) {
    if (level.find_first_of("/.") != std::string::npos) {
        fail(Status::invalid_argument, "MINICPMO_CPU_VARIANT='" + level + "' is not a level name (haswell, zen4, ...)");
    }
    const std::string path = dir + "/libggml-cpu-" + level + ".so";
    if (access(path.c_str(), R_OK) != 0) {
        fail(Status::invalid_argument, "MINICPMO_CPU_VARIANT=" + level + ": no CPU module '" + path +
                                           "' in this build (the levels shipped are the libggml-cpu-*.so files there)");
    }
    const int score = module_score(path);
    if (score <= 0) {
        fail(Status::unsupported, "MINICPMO_CPU_VARIANT=" + level + ": '" + path +
                                      (score == 0 ? "' needs instructions this CPU lacks" : "' cannot be loaded"));
    }
    return path;
}

}  // namespace
#endif

void load_backend_modules() {
    const char * pinned = std::getenv("MINICPMO_CPU_VARIANT");
#ifdef GGML_BACKEND_DL
    // ggml's own search looks beside the executable, which is python for the bindings
    const std::string dir = module_dir();
    const std::string pinned_path = pinned && *pinned ? checked_pinned_module(dir, pinned) : "";
    ggml_backend_load_all_from_path(dir.c_str());
    if (!pinned_path.empty()) {
        if (ggml_backend_reg_t best = ggml_backend_reg_by_name("CPU")) ggml_backend_unload(best);
        if (!ggml_backend_load(pinned_path.c_str())) fail(Status::internal, "cannot load the CPU module '" + pinned_path + "'");
    }
#else
    if (pinned && *pinned) {
        fail(Status::unsupported, std::string("MINICPMO_CPU_VARIANT=") + pinned +
                                      ": this build links one set of CPU kernels (built with MINICPMO_CPU_VARIANTS=OFF)");
    }
#endif
}

}  // namespace minicpmo
