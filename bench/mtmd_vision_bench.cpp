// Upstream side of bench/vision.py: encodes images with llama.cpp's libmtmd (clip) and times it.
//
//   mtmd_vision_bench --mmproj MMPROJ.gguf --model LLM.gguf [--threads N] [--backend-dir DIR]
//
// LLM.gguf is loaded vocab-only: mtmd needs the text model's vocabulary for its slice marker tokens
// and checks the embedding width against the projector's. After loading, one JSON line
// {"ready": ...} goes to stdout; then each stdin line is a command answered by one JSON line:
//   encode RGB_FILE WIDTH HEIGHT [EMBD_OUT]   RGB_FILE: raw uint8 RGB, WIDTH*HEIGHT*3 bytes.
//       Times mtmd_tokenize (upstream's preprocessing: resize, llava-uhd slicing, normalisation)
//       and mtmd_encode_chunk over every image chunk (ViT + resampler), as mtmd-helper runs them.
//       EMBD_OUT receives the float32 embeddings of all image chunks in prompt order.
//   quit
// clip/mtmd logs (hparams included) go to stderr. In a build with GGML_BACKEND_DL (ggml's CPU
// kernels as one loadable module per x86-64 level, as GGML_CPU_ALL_VARIANTS builds them), the best
// module for this CPU is loaded first from DIR (default: beside the executable, then the working
// directory), as llama.cpp's own tools do; "system_info" names the features of the one loaded.

#include "ggml-backend.h"
#include "llama.h"
#include "mtmd.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

// VmHWM / VmRSS of this process in KiB (0 when /proc is unavailable)
long proc_status_kib(const char * key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    const size_t n = std::strlen(key);
    while (std::getline(f, line)) {
        if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') {
            return std::atol(line.c_str() + n + 1);
        }
    }
    return 0;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string json_escape(const std::string & s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (static_cast<unsigned char>(c) >= 0x20) {
            out += c;
        }
    }
    return out;
}

void reply_error(const std::string & msg) {
    std::cout << "{\"error\": \"" << json_escape(msg) << "\"}" << std::endl;
}

void log_to_stderr(ggml_log_level level, const char * text, void * /*user*/) {
    if (level != GGML_LOG_LEVEL_DEBUG) {
        std::fputs(text, stderr);
    }
}

void log_errors_only(ggml_log_level level, const char * text, void * /*user*/) {
    if (level == GGML_LOG_LEVEL_ERROR) {
        std::fputs(text, stderr);
    }
}

bool read_file(const std::string & path, size_t expected, std::vector<unsigned char> & out) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f || static_cast<size_t>(f.tellg()) != expected) {
        return false;
    }
    out.resize(expected);
    f.seekg(0);
    return static_cast<bool>(f.read(reinterpret_cast<char *>(out.data()), static_cast<std::streamsize>(expected)));
}

struct Encoded {
    double preprocess_ms = 0;
    double encode_ms = 0;
    size_t n_image_chunks = 0;
    size_t n_tokens = 0;
};

// one image through upstream's whole path; false + message on failure
bool encode_image(mtmd_context * ctx, const std::vector<unsigned char> & rgb, uint32_t w, uint32_t h,
                  int n_embd, std::vector<float> * embd, Encoded & res, std::string & err) {
    auto t0 = std::chrono::steady_clock::now();
    mtmd::bitmap_ptr bmp(mtmd_bitmap_init(w, h, rgb.data()));
    mtmd::input_chunks_ptr chunks(mtmd_input_chunks_init());
    if (!bmp || !chunks) {
        err = "cannot allocate bitmap/chunks";
        return false;
    }
    const std::string prompt = mtmd_default_marker();
    mtmd_input_text text{prompt.c_str(), prompt.size(), /*add_special*/ false, /*parse_special*/ true};
    const mtmd_bitmap * bitmaps[] = {bmp.get()};
    if (int rc = mtmd_tokenize(ctx, chunks.get(), &text, bitmaps, 1); rc != 0) {
        err = "mtmd_tokenize failed with code " + std::to_string(rc);
        return false;
    }
    res.preprocess_ms = ms_since(t0);

    if (embd) {
        embd->clear();
    }
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks.get()); i++) {
        const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks.get(), i);
        if (mtmd_input_chunk_get_type(chunk) != MTMD_INPUT_CHUNK_TYPE_IMAGE) {
            continue;  // the <image>/<slice> marker text around each picture
        }
        const size_t n = mtmd_input_chunk_get_n_tokens(chunk);
        auto t1 = std::chrono::steady_clock::now();
        if (int rc = mtmd_encode_chunk(ctx, chunk); rc != 0) {
            err = "mtmd_encode_chunk failed with code " + std::to_string(rc);
            return false;
        }
        res.encode_ms += ms_since(t1);
        if (embd) {
            const float * out = mtmd_get_output_embd(ctx);
            embd->insert(embd->end(), out, out + n * static_cast<size_t>(n_embd));
        }
        res.n_image_chunks++;
        res.n_tokens += n;
    }
    return true;
}

// "<arch>.embedding_length" of the text model: a vocab-only load leaves llama_model_n_embd() at 0,
// but the metadata is read
int text_embedding_length(const llama_model * model) {
    char arch[128], value[64];
    if (llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch)) <= 0) {
        return -1;
    }
    const std::string key = std::string(arch) + ".embedding_length";
    if (llama_model_meta_val_str(model, key.c_str(), value, sizeof(value)) <= 0) {
        return -1;
    }
    return std::atoi(value);
}

int usage(const char * argv0) {
    std::fprintf(stderr, "usage: %s --mmproj MMPROJ.gguf --model LLM.gguf [--threads N] [--backend-dir DIR]\n",
                 argv0);
    return 2;
}

}  // namespace

int main(int argc, char ** argv) {
    std::string mmproj, model_path, backend_dir;
    int n_threads = 2;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (i + 1 >= argc) {
            return usage(argv[0]);
        }
        if (a == "--mmproj") {
            mmproj = argv[++i];
        } else if (a == "--model") {
            model_path = argv[++i];
        } else if (a == "--threads") {
            n_threads = std::atoi(argv[++i]);
        } else if (a == "--backend-dir") {
            backend_dir = argv[++i];
        } else {
            return usage(argv[0]);
        }
    }
    if (mmproj.empty() || model_path.empty() || n_threads <= 0) {
        return usage(argv[0]);
    }

    const long rss_start_kib = proc_status_kib("VmRSS");
    llama_log_set(log_errors_only, nullptr);
    mtmd_log_set(log_to_stderr, nullptr);
    // no-ops without GGML_BACKEND_DL: the CPU backend is linked in
    if (backend_dir.empty()) {
        ggml_backend_load_all();
    } else {
        ggml_backend_load_all_from_path(backend_dir.c_str());
    }
    llama_backend_init();

    auto t0 = std::chrono::steady_clock::now();
    llama_model_params mparams = llama_model_default_params();
    mparams.vocab_only = true;
    mparams.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mparams);
    if (!model) {
        reply_error("cannot load text model (vocab) from " + model_path);
        return 1;
    }
    mtmd_context_params cparams = mtmd_context_params_default();
    cparams.use_gpu = false;
    cparams.n_threads = n_threads;
    cparams.print_timings = false;
    mtmd::context_ptr ctx(mtmd_init_from_file(mmproj.c_str(), model, cparams));
    if (!ctx) {
        reply_error("mtmd_init_from_file failed for " + mmproj);
        llama_model_free(model);
        return 1;
    }
    const int n_embd = text_embedding_length(model);
    if (n_embd <= 0) {
        reply_error("cannot read the embedding length of " + model_path);
        llama_model_free(model);
        return 1;
    }
    std::cout << "{\"ready\": true, \"load_ms\": " << ms_since(t0) << ", \"n_threads\": " << n_threads
              << ", \"n_embd\": " << n_embd << ", \"flash_attn_type\": " << static_cast<int>(cparams.flash_attn_type)
              << ", \"rss_start_kib\": " << rss_start_kib << ", \"rss_after_load_kib\": " << proc_status_kib("VmRSS")
              << ", \"system_info\": \"" << json_escape(llama_print_system_info()) << "\"}" << std::endl;

    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        std::string cmd;
        in >> cmd;
        if (cmd == "quit") {
            break;
        }
        if (cmd != "encode") {
            reply_error("unknown command: " + cmd);
            continue;
        }
        std::string path, embd_out;
        long w = 0, h = 0;
        in >> path >> w >> h >> embd_out;
        if (path.empty() || w <= 0 || h <= 0 || w > 46000 || h > 46000) {
            reply_error("usage: encode RGB_FILE WIDTH HEIGHT [EMBD_OUT]");
            continue;
        }
        std::vector<unsigned char> rgb;
        if (!read_file(path, static_cast<size_t>(w) * static_cast<size_t>(h) * 3, rgb)) {
            reply_error("cannot read " + std::to_string(w) + "x" + std::to_string(h) + " RGB bytes from " + path);
            continue;
        }
        std::vector<float> embd;
        Encoded res;
        std::string err;
        if (!encode_image(ctx.get(), rgb, static_cast<uint32_t>(w), static_cast<uint32_t>(h), n_embd,
                          embd_out.empty() ? nullptr : &embd, res, err)) {
            reply_error(err);
            continue;
        }
        if (!embd_out.empty()) {
            std::ofstream f(embd_out, std::ios::binary);
            f.write(reinterpret_cast<const char *>(embd.data()), static_cast<std::streamsize>(embd.size() * sizeof(float)));
            if (!f) {
                reply_error("cannot write " + embd_out);
                continue;
            }
        }
        std::cout << "{\"preprocess_ms\": " << res.preprocess_ms << ", \"encode_ms\": " << res.encode_ms
                  << ", \"total_ms\": " << res.preprocess_ms + res.encode_ms
                  << ", \"n_image_chunks\": " << res.n_image_chunks << ", \"n_tokens\": " << res.n_tokens
                  << ", \"n_embd\": " << n_embd << ", \"peak_rss_kib\": " << proc_status_kib("VmHWM")
                  << ", \"rss_kib\": " << proc_status_kib("VmRSS") << ", \"rss_anon_kib\": " << proc_status_kib("RssAnon")
                  << ", \"rss_file_kib\": " << proc_status_kib("RssFile") << "}" << std::endl;
    }
    ctx.reset();
    llama_model_free(model);
    return 0;
}
