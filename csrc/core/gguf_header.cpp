#include "core/gguf_header.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sys/stat.h>

#include "core/error.h"
#include "core/llama_log.h"
#include "ggml.h"
#include "gguf.h"

namespace minicpmo {

GgufHeader::GgufHeader(const std::string & path, const char * what) : path_(path), what_(what) {
    require_readable_file(path, what);
    {
        // gguf's parser reports problems through the log; check the magic ourselves for a clear message
        FILE * f = std::fopen(path.c_str(), "rb");
        char magic[4] = {0, 0, 0, 0};
        const size_t n = f ? std::fread(magic, 1, 4, f) : 0;
        if (f) std::fclose(f);
        if (n != 4 || std::memcmp(magic, "GGUF", 4) != 0) {
            fail(Status::bad_model, std::string(what) + " '" + path + "' is not a GGUF file (bad magic)");
        }
    }
    ensure_llama_initialized();
    LlamaErrorCapture errors;
    gguf_init_params params{};
    params.no_alloc = true;
    params.ctx = nullptr;
    ctx_ = gguf_init_from_file(path.c_str(), params);
    if (!ctx_) {
        const std::string why = errors.reason();
        fail(Status::bad_model, std::string(what) + " '" + path + "' is a corrupt or truncated GGUF file" +
                                    (why.empty() ? "" : " (" + why + ")"));
    }
}

namespace {

std::string shape_text(const int64_t * ne) {
    int n = GGML_MAX_DIMS;
    while (n > 1 && ne[n - 1] == 1) --n;
    std::string s = "[";
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

}  // namespace

void GgufHeader::check_tensor_bounds(bool data_ranges) const {
    struct stat st {};
    if (stat(path_.c_str(), &st) != 0) fail(Status::io_error, what_ + " '" + path_ + "' cannot be read any more");
    const uint64_t file_size = static_cast<uint64_t>(st.st_size);
    const uint64_t data_offset = gguf_get_data_offset(ctx_);
    const int64_t n_tensors = gguf_get_n_tensors(ctx_);
    for (int64_t i = 0; i < n_tensors; ++i) {
        const std::string name = gguf_get_tensor_name(ctx_, i);
        const auto bad = [&](const std::string & why) {
            fail(Status::bad_model, what_ + " '" + path_ + "' is truncated or corrupt: tensor '" + name + "' " + why);
        };
        const ggml_type type = gguf_get_tensor_type(ctx_, i);
        if (type < 0 || type >= GGML_TYPE_COUNT || ggml_type_size(type) == 0 || ggml_blck_size(type) <= 0) {
            bad("has the unknown type " + std::to_string(static_cast<int>(type)));
        }
        const int64_t * ne = gguf_get_tensor_ne(ctx_, i);
        const std::string desc = std::string(ggml_type_name(type)) + " " + shape_text(ne);
        // ggml_new_tensor aborts the process (GGML_ASSERT) when the element count overflows int64, a
        // shape gguf.cpp's own check lets through (fuzz_*/tensor_dims_ggml_new_tensor_abort): refuse it first
        // (gguf stores at most GGML_MAX_DIMS dimensions; unused ones are 1)
        int64_t elements = 1;
        for (int d = 0; d < GGML_MAX_DIMS; ++d) {
            if (ne[d] <= 0) bad("has a non-positive dimension " + std::to_string(ne[d]) + " in its shape " + desc);
            if (INT64_MAX / ne[d] <= elements) bad("has a shape whose element count overflows: " + desc);
            elements *= ne[d];
        }
        uint64_t size = 0;
        const uint64_t blocks = ne[0] >= 0 ? static_cast<uint64_t>(ne[0] / ggml_blck_size(type)) : 0;
        bool ok = ne[0] >= 0 && ne[0] % ggml_blck_size(type) == 0 && blocks <= UINT64_MAX / ggml_type_size(type);
        if (ok) size = blocks * ggml_type_size(type);
        for (int d = 1; ok && d < GGML_MAX_DIMS; ++d) {
            const uint64_t n = static_cast<uint64_t>(ne[d]);
            ok = ne[d] >= 0 && (n == 0 || size <= UINT64_MAX / n);  // no overflow
            if (ok) size *= n;
        }
        if (!ok) bad("has an invalid shape " + desc);
        if (size != gguf_get_tensor_size(ctx_, i)) {
            bad("(" + desc + ") should hold " + std::to_string(size) + " bytes, but its table entry says " +
                std::to_string(gguf_get_tensor_size(ctx_, i)));
        }
        // begin + size <= file_size, written so that no sum can wrap around
        const uint64_t offset = gguf_get_tensor_offset(ctx_, i);
        if (data_ranges && (data_offset > file_size || offset > file_size - data_offset || size > file_size - data_offset - offset)) {
            bad("(" + desc + ", " + std::to_string(size) + " bytes at offset " +
                std::to_string(gguf_get_tensor_offset(ctx_, i)) + " of the data) lies beyond the end of the file (" +
                std::to_string(file_size) + " bytes)");
        }
    }
}

GgufHeader::~GgufHeader() {
    if (ctx_) gguf_free(ctx_);
}

bool GgufHeader::has(const char * key) const { return gguf_find_key(ctx_, key) >= 0; }

std::optional<std::string> GgufHeader::get_str(const char * key) const {
    const int64_t id = gguf_find_key(ctx_, key);
    if (id < 0 || gguf_get_kv_type(ctx_, id) != GGUF_TYPE_STRING) return std::nullopt;
    return std::string(gguf_get_val_str(ctx_, id));
}

std::optional<int64_t> GgufHeader::get_int(const char * key) const {
    const int64_t id = gguf_find_key(ctx_, key);
    if (id < 0) return std::nullopt;
    switch (gguf_get_kv_type(ctx_, id)) {
        case GGUF_TYPE_UINT8:  return gguf_get_val_u8(ctx_, id);
        case GGUF_TYPE_INT8:   return gguf_get_val_i8(ctx_, id);
        case GGUF_TYPE_UINT16: return gguf_get_val_u16(ctx_, id);
        case GGUF_TYPE_INT16:  return gguf_get_val_i16(ctx_, id);
        case GGUF_TYPE_UINT32: return gguf_get_val_u32(ctx_, id);
        case GGUF_TYPE_INT32:  return gguf_get_val_i32(ctx_, id);
        case GGUF_TYPE_UINT64: return static_cast<int64_t>(gguf_get_val_u64(ctx_, id));
        case GGUF_TYPE_INT64:  return gguf_get_val_i64(ctx_, id);
        default:               return std::nullopt;
    }
}

std::vector<std::string> GgufHeader::get_str_array(const char * key) const {
    std::vector<std::string> out;
    const int64_t id = gguf_find_key(ctx_, key);
    if (id < 0 || gguf_get_kv_type(ctx_, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(ctx_, id) != GGUF_TYPE_STRING) {
        return out;
    }
    const size_t n = gguf_get_arr_n(ctx_, id);
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) out.emplace_back(gguf_get_arr_str(ctx_, id, i));
    return out;
}

std::optional<double> GgufHeader::get_float(const char * key) const {
    const int64_t id = gguf_find_key(ctx_, key);
    if (id < 0) return std::nullopt;
    switch (gguf_get_kv_type(ctx_, id)) {
        case GGUF_TYPE_FLOAT32: return gguf_get_val_f32(ctx_, id);
        case GGUF_TYPE_FLOAT64: return gguf_get_val_f64(ctx_, id);
        default: {
            const auto i = get_int(key);
            return i ? std::optional<double>(static_cast<double>(*i)) : std::nullopt;
        }
    }
}

std::optional<bool> GgufHeader::get_bool(const char * key) const {
    const int64_t id = gguf_find_key(ctx_, key);
    if (id < 0 || gguf_get_kv_type(ctx_, id) != GGUF_TYPE_BOOL) return std::nullopt;
    return gguf_get_val_bool(ctx_, id);
}

std::vector<float> GgufHeader::get_float_array(const char * key) const {
    std::vector<float> out;
    const int64_t id = gguf_find_key(ctx_, key);
    if (id < 0 || gguf_get_kv_type(ctx_, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(ctx_, id) != GGUF_TYPE_FLOAT32) {
        return out;
    }
    const size_t n = gguf_get_arr_n(ctx_, id);
    const float * data = static_cast<const float *>(gguf_get_arr_data(ctx_, id));
    out.assign(data, data + n);
    return out;
}

std::optional<std::vector<int64_t>> GgufHeader::get_int_array(const char * key) const {
    const int64_t id = gguf_find_key(ctx_, key);
    if (id < 0 || gguf_get_kv_type(ctx_, id) != GGUF_TYPE_ARRAY) return std::nullopt;
    const gguf_type type = gguf_get_arr_type(ctx_, id);
    // gguf_get_arr_data aborts the process on an array of strings (fuzz_omni_file), so the element
    // type is checked first
    if (type == GGUF_TYPE_STRING || type == GGUF_TYPE_ARRAY) return std::nullopt;
    const size_t n = gguf_get_arr_n(ctx_, id);
    const void * data = n ? gguf_get_arr_data(ctx_, id) : nullptr;
    std::vector<int64_t> out(n);
    for (size_t i = 0; i < n; ++i) {
        switch (type) {
            case GGUF_TYPE_UINT8:  out[i] = static_cast<const uint8_t *>(data)[i]; break;
            case GGUF_TYPE_INT8:   out[i] = static_cast<const int8_t *>(data)[i]; break;
            case GGUF_TYPE_UINT16: out[i] = static_cast<const uint16_t *>(data)[i]; break;
            case GGUF_TYPE_INT16:  out[i] = static_cast<const int16_t *>(data)[i]; break;
            case GGUF_TYPE_UINT32: out[i] = static_cast<const uint32_t *>(data)[i]; break;
            case GGUF_TYPE_INT32:  out[i] = static_cast<const int32_t *>(data)[i]; break;
            case GGUF_TYPE_UINT64: {
                const uint64_t v = static_cast<const uint64_t *>(data)[i];
                if (v > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
                out[i] = static_cast<int64_t>(v);
                break;
            }
            case GGUF_TYPE_INT64:  out[i] = static_cast<const int64_t *>(data)[i]; break;
            default:               return std::nullopt;
        }
    }
    return out;
}

}  // namespace minicpmo
