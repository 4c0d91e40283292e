#include "core/backend_modules.h"

#ifdef GGML_BACKEND_DL
#include <dlfcn.h>

#include <string>

#include "ggml-backend.h"
#endif

namespace minicpmo {

void load_backend_modules() {
#ifdef GGML_BACKEND_DL
    // the modules lie beside this library (the wheel's minicpmo_cpp/ folder, or the install's lib/):
    // ggml's own search looks beside the executable, which is python for the bindings
    Dl_info info{};
    std::string dir;
    if (dladdr(reinterpret_cast<void *>(&load_backend_modules), &info) && info.dli_fname) {
        dir = info.dli_fname;
        const size_t slash = dir.rfind('/');
        dir = slash == std::string::npos ? std::string(".") : dir.substr(0, slash);
    }
    ggml_backend_load_all_from_path(dir.empty() ? nullptr : dir.c_str());
#endif
}

}  // namespace minicpmo
