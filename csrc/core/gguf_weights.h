// Tensors of a GGUF file loaded into one backend buffer (CPU or GPU memory), selected by name
// prefix, with checked lookups: a missing tensor or one of the wrong shape is a bad_model error
// naming the file, never a crash later inside a graph.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "core/gguf_header.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace minicpmo {

class GgufWeights {
public:
    // Loads every tensor whose name starts with one of `prefixes`. `what` names the file in errors.
    GgufWeights(const std::string & path, const char * what, const std::vector<std::string> & prefixes,
                ggml_backend_buffer_type_t buft);
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

    // Required hyper-parameters: bad_model naming the file and key when absent or out of range.
    int64_t require_int(const std::string & key, int64_t min_value, int64_t max_value) const;
    double require_float(const std::string & key) const;

private:
    GgufHeader header_;
    ggml_context * ctx_ = nullptr;
    ggml_backend_buffer_t buffer_ = nullptr;
    std::map<std::string, ggml_tensor *> tensors_;
};

}  // namespace minicpmo
