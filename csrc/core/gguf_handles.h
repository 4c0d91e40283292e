// Owning handles for the C objects GGUF reading uses (gguf / ggml contexts, stdio files), so every
// early return and exception frees them.
#pragma once

#include <cstdio>
#include <memory>

#include "ggml.h"
#include "gguf.h"

namespace minicpmo {

struct GgufCloser {
    void operator()(gguf_context * c) const { gguf_free(c); }
};
struct GgmlCloser {
    void operator()(ggml_context * c) const { ggml_free(c); }
};
struct FileCloser {
    void operator()(FILE * f) const { std::fclose(f); }
};

using GgufHandle = std::unique_ptr<gguf_context, GgufCloser>;
using GgmlHandle = std::unique_ptr<ggml_context, GgmlCloser>;
using FileHandle = std::unique_ptr<FILE, FileCloser>;

}  // namespace minicpmo
