#include "token2wav/voice_bank.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/gguf_handles.h"
#include "core/gguf_header.h"
#include "ggml.h"
#include "gguf.h"

namespace minicpmo {

namespace {

// Reads one small tensor's bytes after checking its type and rank; the file size bounds the read.
class TensorReader {
public:
    explicit TensorReader(const std::string & path) : path_(path) {
        ggml_context * meta = nullptr;
        gguf_init_params params{};
        params.no_alloc = true;
        params.ctx = &meta;
        gguf_.reset(gguf_init_from_file(path.c_str(), params));
        meta_.reset(meta);
        if (!gguf_ || !meta_) fail(Status::bad_model, "omni file '" + path + "' could not be read as GGUF");
        file_.reset(std::fopen(path.c_str(), "rb"));
        if (!file_) fail(Status::io_error, "cannot open omni file '" + path + "'");
        if (std::fseek(file_.get(), 0, SEEK_END) != 0) fail(Status::io_error, "cannot size omni file '" + path + "'");
        size_ = std::ftell(file_.get());
    }

    // ne: the tensor's ggml shape (out); checks type and number of dimensions.
    template <typename T>
    std::vector<T> read(const std::string & name, ggml_type type, int n_dims, int64_t ne[2]) {
        const int64_t id = gguf_find_tensor(gguf_.get(), name.c_str());
        if (id < 0) fail(Status::bad_model, "omni file '" + path_ + "' lacks tensor '" + name + "'");
        const ggml_tensor * t = ggml_get_tensor(meta_.get(), name.c_str());
        bool ok = t && t->type == type;
        for (int d = n_dims; ok && d < GGML_MAX_DIMS; ++d) ok = t->ne[d] == 1;
        if (!ok) {
            fail(Status::bad_model, "omni file '" + path_ + "': tensor '" + name + "' must be " + ggml_type_name(type) +
                                        " with " + std::to_string(n_dims) + " dimension(s)");
        }
        ne[0] = t->ne[0];
        ne[1] = t->ne[1];
        const size_t nbytes = ggml_nbytes(t);
        const long offset = static_cast<long>(gguf_get_data_offset(gguf_.get()) + gguf_get_tensor_offset(gguf_.get(), id));
        if (size_ < 0 || offset + static_cast<long>(nbytes) > size_) {
            fail(Status::bad_model, "omni file '" + path_ + "' is truncated: tensor '" + name + "' lies beyond its end");
        }
        std::vector<T> out(nbytes / sizeof(T));
        if (std::fseek(file_.get(), offset, SEEK_SET) != 0 || std::fread(out.data(), 1, nbytes, file_.get()) != nbytes) {
            fail(Status::io_error, "cannot read tensor '" + name + "' of omni file '" + path_ + "'");
        }
        return out;
    }

private:
    std::string path_;
    std::unique_ptr<gguf_context, GgufCloser> gguf_;
    std::unique_ptr<ggml_context, GgmlCloser> meta_;
    std::unique_ptr<FILE, FileCloser> file_;
    long size_ = -1;
};

bool finite(const std::vector<float> & v) {
    for (float x : v) {
        if (!std::isfinite(x)) return false;
    }
    return true;
}

}  // namespace

VoiceBank::VoiceBank(const std::string & omni_path) : path_(omni_path) {
    const GgufHeader header(omni_path, "omni file");
    names_ = header.get_str_array("minicpmo.voice.names");
    if (names_.empty()) return;
    default_ = header.get_str("minicpmo.voice.default").value_or(names_[0]);
    TensorReader reader(omni_path);
    for (const std::string & name : names_) {
        const std::string p = "voice." + name + ".";
        const std::string where = "omni file '" + omni_path + "': voice '" + name + "'";
        VoicePrompt v;
        v.name = name;
        int64_t ne_tok[2], ne_spk[2], ne_mel[2];
        v.tokens = reader.read<int32_t>(p + "tokens", GGML_TYPE_I32, 1, ne_tok);
        v.spk = reader.read<float>(p + "spk", GGML_TYPE_F32, 1, ne_spk);
        v.mel = reader.read<float>(p + "mel", GGML_TYPE_F32, 2, ne_mel);
        v.n_mel = static_cast<int>(ne_mel[0]);
        if (v.tokens.empty()) fail(Status::bad_model, where + " has no prompt tokens");
        for (int32_t t : v.tokens) {
            if (t < 0) fail(Status::bad_model, where + " has a negative prompt token");
        }
        if (ne_mel[1] % static_cast<int64_t>(v.tokens.size()) != 0) {
            fail(Status::bad_model, where + ": the prompt mel frames are not a whole number per prompt token");
        }
        if (!finite(v.spk) || !finite(v.mel)) fail(Status::bad_model, where + " contains non-finite values");
        voices_.push_back(std::make_shared<const VoicePrompt>(std::move(v)));
    }
    bool found = false;
    for (const auto & n : names_) found = found || n == default_;
    if (!found) fail(Status::bad_model, "omni file '" + omni_path + "': the default voice '" + default_ + "' is not among its voices");
}

std::shared_ptr<const VoicePrompt> VoiceBank::get(const std::string & name) const {
    if (name.empty() && voices_.empty()) {
        fail(Status::invalid_argument, "omni file '" + path_ + "' has no voice prompt; give a voice (a voice cloned "
                                       "from a reference recording) or add one with the converter's --add-voice");
    }
    const std::string & want = name.empty() ? default_ : name;
    for (const auto & v : voices_) {
        if (v->name == want) return v;
    }
    {
        std::lock_guard<std::mutex> lock(cloned_mutex_);
        auto it = cloned_.find(want);
        if (it != cloned_.end()) return it->second;
    }
    std::string list;
    for (const auto & n : names_) list += (list.empty() ? "" : ", ") + n;
    if (want[0] == '@') {
        fail(Status::invalid_argument, "unknown voice: the cloned voice '" + want + "' was released or belongs to another model");
    }
    fail(Status::invalid_argument, "unknown voice: no voice named '" + want + "' (voices: " + (list.empty() ? "none" : list) + ")");
}

bool VoiceBank::has(const std::string & name) const {
    for (const auto & v : voices_) {
        if (v->name == name) return true;
    }
    std::lock_guard<std::mutex> lock(cloned_mutex_);
    return cloned_.count(name) != 0;
}

std::string VoiceBank::add_cloned(VoicePrompt voice) const {
    std::lock_guard<std::mutex> lock(cloned_mutex_);
    voice.name = "@voice-" + std::to_string(++n_cloned_);
    const std::string name = voice.name;
    cloned_[name] = std::make_shared<const VoicePrompt>(std::move(voice));
    return name;
}

void VoiceBank::remove_cloned(const std::string & name) const {
    std::lock_guard<std::mutex> lock(cloned_mutex_);
    cloned_.erase(name);
}

}  // namespace minicpmo
