// Tensors of a GGUF file loaded into one backend buffer (CPU or GPU memory), selected by name
// prefix, with checked lookups: a missing tensor or one of the wrong shape is a bad_model error
// naming the file, never a crash later inside a graph.
//
// In CPU memory the tensors are the file's own pages, mapped read-only (shared with the page cache
// and with every other mapping of the file), unless the caller says not to (use_mmap = false);
// elsewhere, and where mapping fails, they are read in.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/gguf_header.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace minicpmo {

class GgufWeights {
public:
    // Loads every tensor whose name starts with one of `prefixes`. `what` names the file in errors.
    // map_file: in CPU memory, use the file's pages (false: read the tensors in, as for a device).
    GgufWeights(const std::string & path, const char * what, const std::vector<std::string> & prefixes,
                ggml_backend_buffer_type_t buft, bool map_file = true);
    ~GgufWeights();
    GgufWeights(const GgufWeights &) = delete;
    GgufWeights & operator=(const GgufWeights &) = delete;

    const GgufHeader & header() const { return header_; }
    const std::string & path() const { return header_.path(); }
    bool has(const std::string & name) const { return tensors_.count(name) != 0; }
    // What a tensor is used as decides the storage types accepted for it.
    enum class Use {
        vector,  // norm gains, biases: F32
        table,   // rows looked up or added as a whole (position tables, queries): F32 or F16
        matrix,  // mul_mat weights: any float or block-quantized type
    };
    // `ne` in ggml order (ne0 = row length); checks the shape exactly and the storage type.
    ggml_tensor * get(const std::string & name, std::initializer_list<int64_t> ne, Use use) const;
    size_t n_bytes() const;
    size_t n_tensors() const { return tensors_.size(); }  // tensors loaded (those matching the prefixes)

    // Throws unsupported naming the file when `minicpmo.components` does not list `component`;
    // `needed_for` says what the caller wanted it for ("images", "speech output", ...).
    void require_component(const std::string & component, const std::string & needed_for) const;

    // A copy of the matrix `w` (one of these weights) re-laid for a kernel, `kind` naming the layout
    // (e.g. "onednn-bf16": oneDNN's packed BF16): made by `make` the first time any caller asks for
    // that kind and shared by every later caller (every session of the model), safe from any thread.
    // When the weights are mapped from the file, the matrix's own pages are then dropped from memory
    // (read back from the file if anything touches them again, e.g. to make another kind), so the
    // matrix is held once, in the kernel's layout, not twice.
    std::shared_ptr<const void> kernel_copy(const ggml_tensor * w, const std::string & kind,
                                            const std::function<std::shared_ptr<const void>()> & make) const;
    // how many kernel copies were made so far (every kind)
    size_t kernel_copies() const;
    bool owns(const ggml_tensor * t) const { return buffer_ && t->buffer == buffer_; }
    // A tensor of these weights that nothing reads any more (a copy replaced it): when the weights are
    // mapped from the file, its pages are dropped from memory (read back from the file if touched
    // again); otherwise nothing happens.
    void drop_pages(const ggml_tensor * w) const;

    // Required hyper-parameters: bad_model naming the file and key when absent or out of range.
    int64_t require_int(const std::string & key, int64_t min_value, int64_t max_value) const;
    double require_float(const std::string & key) const;

private:
    GgufHeader header_;
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buffer_ = nullptr;
    void * map_ = nullptr;  // the file's mapped range holding the tensors (CPU memory), or nullptr
    size_t map_size_ = 0;
    std::map<std::string, ggml_tensor *> tensors_;
    mutable std::mutex copies_mutex_;
    mutable std::map<std::pair<const ggml_tensor *, std::string>, std::shared_ptr<const void>> copies_;

    // Maps the tensors' byte range of `file_fd` and places every tensor there; false (nothing
    // changed) when the range cannot be mapped or a tensor is misaligned for ggml's CPU kernels.
    bool map_tensors(int file_fd, const std::vector<std::pair<ggml_tensor *, size_t>> & at);
};

}  // namespace minicpmo
