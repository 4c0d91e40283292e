#include "core/gguf_weights.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define MINICPMO_HAVE_MMAP 1
#endif

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
                         ggml_backend_buffer_type_t buft, bool map_file)
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
#ifdef MINICPMO_HAVE_MMAP
            if (w->map_) munmap(w->map_, w->map_size_);
#endif
            ggml_free(w->ctx_);
            w->buffer_ = nullptr;
            w->map_ = nullptr;
            w->ctx_ = nullptr;
        }
    } release{this};

    std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
    if (!file) fail(Status::io_error, std::string("cannot open ") + what + " '" + path + "'");
    const size_t data_offset = gguf_get_data_offset(gguf.get());

    std::vector<std::pair<ggml_tensor *, size_t>> at;  // each tensor and its offset in the file
    for (int64_t i : selected) {
        const char * name = gguf_get_tensor_name(gguf.get(), i);
        ggml_tensor * src = ggml_get_tensor(meta.get(), name);
        if (!src) fail(Status::bad_model, std::string(what) + " '" + path + "': tensor '" + name + "' has no metadata");
        ggml_tensor * t = ggml_dup_tensor(ctx_, src);
        ggml_set_name(t, name);
        tensors_[name] = t;
        at.emplace_back(t, data_offset + gguf_get_tensor_offset(gguf.get(), i));
    }
    if (tensors_.empty()) {
        release.armed = false;
        return;
    }
    if (map_file && buft == ggml_backend_cpu_buffer_type() && map_tensors(fileno(file.get()), at)) {
        ggml_backend_buffer_set_usage(buffer_, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
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
    for (const auto & [t, file_offset] : at) {
        const char * name = ggml_get_name(t);
        const size_t nbytes = ggml_nbytes(t);
        const long offset = static_cast<long>(file_offset);
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
#ifdef MINICPMO_HAVE_MMAP
    if (map_) munmap(map_, map_size_);
#endif
    if (ctx_) ggml_free(ctx_);
}

bool GgufWeights::map_tensors(int file_fd, const std::vector<std::pair<ggml_tensor *, size_t>> & at) {
#ifdef MINICPMO_HAVE_MMAP
    const size_t align = ggml_backend_buft_get_alignment(ggml_backend_cpu_buffer_type());
    size_t lo = SIZE_MAX, hi = 0;
    for (const auto & [t, offset] : at) {
        if (offset % align != 0) return false;  // a file written with a smaller alignment: read it in
        lo = std::min(lo, offset);
        hi = std::max(hi, offset + ggml_nbytes(t));
    }
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t start = lo / page * page;
    if (hi <= start) return false;
    int flags = MAP_PRIVATE;
#ifdef MAP_POPULATE
    flags |= MAP_POPULATE;  // read the file now, as loading did, not at the first product
#endif
    void * base = mmap(nullptr, hi - start, PROT_READ, flags, file_fd, static_cast<off_t>(start));
    if (base == MAP_FAILED) return false;
    ggml_backend_buffer_t buffer = ggml_backend_cpu_buffer_from_ptr(base, hi - start);
    if (!buffer) {
        munmap(base, hi - start);
        return false;
    }
    map_ = base;
    map_size_ = hi - start;
    buffer_ = buffer;
    for (const auto & [t, offset] : at) {
        if (ggml_backend_tensor_alloc(buffer_, t, static_cast<char *>(base) + (offset - start)) != GGML_STATUS_SUCCESS) {
            fail(Status::internal, "cannot place tensor '" + std::string(ggml_get_name(t)) + "' of '" + path() + "'");
        }
    }
    return true;
#else
    (void)file_fd;
    (void)at;
    return false;
#endif
}

std::shared_ptr<const void> GgufWeights::kernel_copy(const ggml_tensor * w, const std::string & kind,
                                                     const std::function<std::shared_ptr<const void>()> & make) const {
    std::lock_guard<std::mutex> lock(copies_mutex_);
    auto it = copies_.find({w, kind});
    if (it != copies_.end()) return it->second;
    std::shared_ptr<const void> copy = make();
    copies_.emplace(std::make_pair(w, kind), copy);
    drop_pages(w);
    return copy;
}

size_t GgufWeights::kernel_copies() const {
    std::lock_guard<std::mutex> lock(copies_mutex_);
    return copies_.size();
}

void GgufWeights::drop_pages(const ggml_tensor * w) const {
#ifdef MINICPMO_HAVE_MMAP
    if (map_ && owns(w)) {
        // the whole pages inside the tensor: unmapped now, faulted back in from the file if read again
        const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        const uintptr_t first = (reinterpret_cast<uintptr_t>(w->data) + page - 1) / page * page;
        const uintptr_t end = (reinterpret_cast<uintptr_t>(w->data) + ggml_nbytes(w)) / page * page;
        if (end > first) madvise(reinterpret_cast<void *>(first), end - first, MADV_DONTNEED);
    }
#else
    (void)w;
#endif
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
