#include "core/gguf_weights.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "core/error.h"
#include "core/gguf_handles.h"
#include "gguf.h"

namespace minicpmo {

namespace {

std::string shape_str(const int64_t * ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

bool starts_with_any(const std::string & name, const std::vector<std::string> & prefixes) {
    for (const auto & p : prefixes) {
        if (name.compare(0, p.size(), p) == 0) return true;
    }
    return false;
}

}  // namespace

GgufWeights::GgufWeights(const std::string & path, const char * what, const std::vector<std::string> & prefixes,
                         ggml_backend_buffer_type_t buft)
    : header_(path, what) {
    header_.check_tensor_bounds();  // every data range lies within the file (read below by offset)
    ggml_context * meta_raw = nullptr;
    gguf_init_params params{};
    params.no_alloc = true;
    params.ctx = &meta_raw;
    std::unique_ptr<gguf_context, GgufCloser> gguf(gguf_init_from_file(path.c_str(), params));
    std::unique_ptr<ggml_context, GgmlCloser> meta(meta_raw);
    if (!gguf || !meta) fail(Status::bad_model, std::string(what) + " '" + path + "' could not be read as GGUF");

    const int64_t n_tensors = gguf_get_n_tensors(gguf.get());
    std::vector<int64_t> selected;
    for (int64_t i = 0; i < n_tensors; ++i) {
        if (starts_with_any(gguf_get_tensor_name(gguf.get(), i), prefixes)) selected.push_back(i);
    }
    ggml_init_params ip{};
    ip.mem_size = (selected.size() + 1) * ggml_tensor_overhead();
    ip.no_alloc = true;
    ctx_ = ggml_init(ip);
    if (!ctx_) fail(Status::internal, "cannot create a ggml context for the weights of '" + path + "'");
    // the destructor does not run when the constructor throws: free what was made so far (fuzz_omni_file leak)
    struct Release {
        GgufWeights * w;
        bool armed = true;
        ~Release() {
            if (!armed) return;
            if (w->buffer_) ggml_backend_buffer_free(w->buffer_);
            ggml_free(w->ctx_);
            w->buffer_ = nullptr;
            w->ctx_ = nullptr;
        }
    } release{this};

    std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
    if (!file) fail(Status::io_error, std::string("cannot open ") + what + " '" + path + "'");
    const size_t data_offset = gguf_get_data_offset(gguf.get());

    for (int64_t i : selected) {
        const char * name = gguf_get_tensor_name(gguf.get(), i);
        ggml_tensor * src = ggml_get_tensor(meta.get(), name);
        if (!src) fail(Status::bad_model, std::string(what) + " '" + path + "': tensor '" + name + "' has no metadata");
        ggml_tensor * t = ggml_dup_tensor(ctx_, src);
        ggml_set_name(t, name);
        tensors_[name] = t;
    }
    if (tensors_.empty()) {
        release.armed = false;
        return;
    }

    buffer_ = ggml_backend_alloc_ctx_tensors_from_buft(ctx_, buft);
    if (!buffer_) {
        fail(Status::internal, "out of memory loading the weights of " + std::string(what) + " '" + path + "'");
    }
    ggml_backend_buffer_set_usage(buffer_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    const bool host = ggml_backend_buffer_is_host(buffer_);
    std::vector<uint8_t> staging;
    for (int64_t i : selected) {
        const char * name = gguf_get_tensor_name(gguf.get(), i);
        ggml_tensor * t = tensors_.at(name);
        const size_t nbytes = ggml_nbytes(t);
        const long offset = static_cast<long>(data_offset + gguf_get_tensor_offset(gguf.get(), i));
        void * dst = t->data;
        if (!host) {
            staging.resize(nbytes);
            dst = staging.data();
        }
        if (std::fseek(file.get(), offset, SEEK_SET) != 0 || std::fread(dst, 1, nbytes, file.get()) != nbytes) {
            fail(Status::io_error, std::string("cannot read tensor '") + name + "' of " + what + " '" + path + "'");
        }
        if (!host) ggml_backend_tensor_set(t, staging.data(), 0, nbytes);
    }
    release.armed = false;
}

GgufWeights::~GgufWeights() {
    if (buffer_) ggml_backend_buffer_free(buffer_);
    if (ctx_) ggml_free(ctx_);
}

namespace {

bool type_allowed(ggml_type type, GgufWeights::Use use) {
    switch (use) {
        case GgufWeights::Use::vector: return type == GGML_TYPE_F32;
        case GgufWeights::Use::table: return type == GGML_TYPE_F32 || type == GGML_TYPE_F16;
        case GgufWeights::Use::matrix:
            return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 ||
                   (ggml_is_quantized(type) && ggml_get_type_traits(type)->to_float != nullptr);
    }
    return false;
}

}  // namespace

ggml_tensor * GgufWeights::get(const std::string & name, std::initializer_list<int64_t> ne, Use use) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail(Status::bad_model, "omni file '" + path() + "' lacks tensor '" + name + "'");
    ggml_tensor * t = it->second;
    const int n = static_cast<int>(ne.size());
    bool ok = n <= GGML_MAX_DIMS;
    int d = 0;
    for (int64_t want : ne) ok = ok && t->ne[d++] == want;
    for (; ok && d < GGML_MAX_DIMS; ++d) ok = t->ne[d] == 1;
    if (!ok) {
        fail(Status::bad_model, "omni file '" + path() + "': tensor '" + name + "' has shape " +
                                    shape_str(t->ne, GGML_MAX_DIMS) + ", expected " +
                                    shape_str(ne.begin(), n));
    }
    if (!type_allowed(t->type, use)) {
        fail(Status::bad_model, "omni file '" + path() + "': tensor '" + name + "' has unsupported type " +
                                    ggml_type_name(t->type));
    }
    return t;
}

size_t GgufWeights::n_bytes() const {
    return buffer_ ? ggml_backend_buffer_get_size(buffer_) : 0;
}

int64_t GgufWeights::require_int(const std::string & key, int64_t min_value, int64_t max_value) const {
    const auto v = header_.get_int(key.c_str());
    if (!v) fail(Status::bad_model, "omni file '" + path() + "' lacks the integer key '" + key + "'");
    if (*v < min_value || *v > max_value) {
        fail(Status::bad_model, "omni file '" + path() + "': key '" + key + "' = " + std::to_string(*v) +
                                    " is out of range [" + std::to_string(min_value) + ", " +
                                    std::to_string(max_value) + "]");
    }
    return *v;
}

double GgufWeights::require_float(const std::string & key) const {
    const auto v = header_.get_float(key.c_str());
    if (!v) fail(Status::bad_model, "omni file '" + path() + "' lacks the number key '" + key + "'");
    return *v;
}

void GgufWeights::require_component(const std::string & component, const std::string & needed_for) const {
    const std::vector<std::string> comps = header_.get_str_array("minicpmo.components");
    if (std::find(comps.begin(), comps.end(), component) == comps.end()) {
        fail(Status::unsupported, "omni file '" + path() + "' has no " + component + " component (needed for " +
                                      needed_for + ")");
    }
}

}  // namespace minicpmo
