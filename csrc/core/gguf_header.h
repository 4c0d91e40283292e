// Read-only view of a GGUF file's metadata (keys and tensor list, no tensor data), used to check a
// file before handing it to libllama and to read the omni companion's hyper-parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct gguf_context;

namespace minicpmo {

class GgufHeader {
public:
    // Throws io_error / bad_model naming `path` (what = "model file", "omni file", ...).
    GgufHeader(const std::string & path, const char * what);
    ~GgufHeader();
    GgufHeader(const GgufHeader &) = delete;
    GgufHeader & operator=(const GgufHeader &) = delete;

    const std::string & path() const { return path_; }
    bool has(const char * key) const;  // the key is present (of any type)
    std::optional<std::string> get_str(const char * key) const;
    std::optional<int64_t> get_int(const char * key) const;  // any integer type
    std::vector<std::string> get_str_array(const char * key) const;  // empty when absent
    std::optional<double> get_float(const char * key) const;  // f32/f64 (or an integer) value
    std::optional<bool> get_bool(const char * key) const;
    std::vector<float> get_float_array(const char * key) const;  // f32 array; empty when absent
    // Integer array of any integer element type; nullopt when absent or not an integer array.
    std::optional<std::vector<int64_t>> get_int_array(const char * key) const;
    std::string architecture() const { return get_str("general.architecture").value_or(""); }

    // Checks every tensor of the table against the file: a known type, a shape whose byte size
    // (type and shape, computed without overflow) is what gguf recorded, and its data range within
    // the file. Throws bad_model naming the file and the first bad tensor (a truncated download
    // fails here, at load, not at first use of the tensor).
    // With data_ranges false only types and shapes are checked (the LLM file: libllama reports a
    // truncated file itself; its loader aborts on some bad shapes, fuzz_llm_gguf).
    void check_tensor_bounds(bool data_ranges = true) const;

private:
    std::string path_;
    std::string what_;
    gguf_context * ctx_ = nullptr;
};

}  // namespace minicpmo
