#include "core/gguf_header.h"

#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/llama_log.h"
#include "gguf.h"

namespace minicpmo {

GgufHeader::GgufHeader(const std::string & path, const char * what) : path_(path) {
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
    take_llama_error();
    gguf_init_params params{};
    params.no_alloc = true;
    params.ctx = nullptr;
    ctx_ = gguf_init_from_file(path.c_str(), params);
    if (!ctx_) {
        std::string why = take_llama_error();
        fail(Status::bad_model, std::string(what) + " '" + path + "' is a corrupt or truncated GGUF file" +
                                    (why.empty() ? "" : " (" + why + ")"));
    }
}

GgufHeader::~GgufHeader() {
    if (ctx_) gguf_free(ctx_);
}

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
    const size_t n = gguf_get_arr_n(ctx_, id);
    const void * data = n ? gguf_get_arr_data(ctx_, id) : nullptr;
    std::vector<int64_t> out(n);
    for (size_t i = 0; i < n; ++i) {
        switch (gguf_get_arr_type(ctx_, id)) {
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
