#include "cli/cli_args.h"

#include "minicpmo.h"

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace minicpmo_cli {

namespace {

std::string need_value(int argc, char ** argv, int & i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument("option " + flag + " needs a value");
    return argv[++i];
}

template <typename T>
T to_number(const std::string & flag, const std::string & v) {
    try {
        size_t used = 0;
        T out;
        if constexpr (std::is_same_v<T, float>) {
            out = std::stof(v, &used);
        } else {
            out = static_cast<T>(std::stoll(v, &used));
        }
        if (used != v.size()) throw std::invalid_argument("");
        return out;
    } catch (const std::exception &) {
        throw std::invalid_argument("option " + flag + " expects a number, got '" + v + "'");
    }
}

// "0.7", "1.02": the shortest text that reads back as the float
std::string number(float v) {
    char buf[32];
    for (int digits = 1; digits < 10; ++digits) {
        std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(v));
        if (std::strtof(buf, nullptr) == v) break;
    }
    return buf;
}

}  // namespace

CliArgs default_cli_args() {
    // the library's defaults table (minicpmo_*_default_params), not numbers of the CLI's own
    const minicpmo_generate_params g = minicpmo_generate_default_params();
    const minicpmo_session_params sp = minicpmo_session_default_params();
    CliArgs a;
    a.n_predict = g.max_new_tokens;
    a.temperature = g.temperature;
    a.top_p = g.top_p;
    a.top_k = g.top_k;
    a.repeat_penalty = g.repetition_penalty;
    a.threads = sp.n_threads;
    a.ctx = static_cast<int>(sp.n_ctx);
    return a;
}

std::string cli_usage() {
    const CliArgs d = default_cli_args();
    return std::string("usage: minicpmo-cli -m MODEL.gguf [options]\n"
           "\n"
           "  -m, --model FILE       LLM GGUF (MiniCPM-o-4_5-<QTYPE>.gguf)\n"
           "  --omni FILE            omni companion GGUF (default: the one named in the model file)\n"
           "  -p, --prompt TEXT      prompt; without it, chat interactively (/reset, /exit)\n"
           "  -sys, --system TEXT    system message\n"
           "  -n, --n-predict N      max new tokens per reply (default " + std::to_string(d.n_predict) + ")\n" +
           "  --temp T               temperature (default " + number(d.temperature) + "; 0 = greedy)\n" +
           "  --top-p P              top-p (default " + number(d.top_p) + ")\n" +
           "  --top-k K              top-k (default " + std::to_string(d.top_k) + "; 0 = off)\n" +
           "  --repeat-penalty R     repetition penalty (default " + number(d.repeat_penalty) + ")\n" +
           "  --seed S               sampling seed (default: random)\n"
           "  --think                enable thinking\n"
           "  --image FILE           image for the first message (repeatable; PNG, JPEG, BMP, GIF, ...)\n"
           "  --max-slices N         high-resolution slices per image (default 9; 1 = none)\n"
           "  --speak OUT.wav        speak the reply (speech-token decoder + Token2Wav) into a 24 kHz WAV file\n"
           "  --voice NAME           voice of the model file for --speak (default: its default voice)\n"
           "  --voice-wav FILE       clone the voice for --speak from a reference recording (0.5-17 s; WAV, FLAC,\n"
           "                         MP3) with the model file's voice encoders\n"
           "  --max-speech-tokens N  at most N speech tokens per reply (25 per second; default the model's 2048)\n"
           "  --audio FILE           audio for the first message (repeatable; WAV, FLAC, MP3; any rate, mixed to\n"
           "                         16 kHz mono). With audio the reply uses the spoken-reply template\n"
           "  --duplex               full-duplex replay of the one --audio recording, second by second: prints\n"
           "                         a timeline (second, listen/speak, text); --speak writes the reply track\n"
           "  --video-frames DIR     --duplex: one image per second from DIR, in name order\n"
           "  -t, --threads N        CPU threads (default: all cores)\n"
           "  -c, --ctx-size N       context window (default " + std::to_string(d.ctx) + ")\n" +
           "  -ngl, --n-gpu-layers N layers on the GPU (default -1 = all)\n"
           "  --device NAME          where the model computes: auto (default: the first GPU), cpu, or a\n"
           "                         device name (Vulkan0, CUDA0, MTL0, ...); encoders and speech follow it\n"
           "  -h, --help             this text\n");
}

CliArgs parse_cli_args(int argc, char ** argv) {
    CliArgs a = default_cli_args();
    for (int i = 1; i < argc; ++i) {
        const std::string f = argv[i];
        if (f == "-h" || f == "--help") {
            a.show_help = true;
        } else if (f == "-m" || f == "--model") {
            a.model = need_value(argc, argv, i);
        } else if (f == "--omni") {
            a.omni = need_value(argc, argv, i);
        } else if (f == "-p" || f == "--prompt") {
            a.prompt = need_value(argc, argv, i);
            a.has_prompt = true;
        } else if (f == "-sys" || f == "--system") {
            a.system = need_value(argc, argv, i);
        } else if (f == "-n" || f == "--n-predict") {
            a.n_predict = to_number<int>(f, need_value(argc, argv, i));
        } else if (f == "--temp") {
            a.temperature = to_number<float>(f, need_value(argc, argv, i));
        } else if (f == "--top-p") {
            a.top_p = to_number<float>(f, need_value(argc, argv, i));
        } else if (f == "--top-k") {
            a.top_k = to_number<int>(f, need_value(argc, argv, i));
        } else if (f == "--repeat-penalty") {
            a.repeat_penalty = to_number<float>(f, need_value(argc, argv, i));
        } else if (f == "--seed") {
            a.seed = to_number<int64_t>(f, need_value(argc, argv, i));
        } else if (f == "--speak") {
            a.speak = need_value(argc, argv, i);
        } else if (f == "--voice") {
            a.voice = need_value(argc, argv, i);
        } else if (f == "--voice-wav") {
            a.voice_wav = need_value(argc, argv, i);
        } else if (f == "--max-speech-tokens") {
            a.max_speech_tokens = to_number<int>(f, need_value(argc, argv, i));
            if (a.max_speech_tokens < 1) throw std::invalid_argument("--max-speech-tokens must be >= 1");
        } else if (f == "--audio") {
            a.audios.push_back(need_value(argc, argv, i));
        } else if (f == "--image") {
            a.images.push_back(need_value(argc, argv, i));
        } else if (f == "--max-slices") {
            a.max_slices = to_number<int>(f, need_value(argc, argv, i));
            if (a.max_slices < 1) throw std::invalid_argument("--max-slices must be >= 1");
        } else if (f == "--duplex") {
            a.duplex = true;
        } else if (f == "--video-frames") {
            a.video_frames = need_value(argc, argv, i);
        } else if (f == "--think") {
            a.think = true;
        } else if (f == "-t" || f == "--threads") {
            a.threads = to_number<int>(f, need_value(argc, argv, i));
        } else if (f == "-c" || f == "--ctx-size") {
            a.ctx = to_number<int>(f, need_value(argc, argv, i));
        } else if (f == "--device") {
            a.device = need_value(argc, argv, i);
        } else if (f == "-ngl" || f == "--n-gpu-layers" || f == "--gpu-layers") {
            a.n_gpu_layers = to_number<int>(f, need_value(argc, argv, i));
        } else {
            throw std::invalid_argument("unknown option '" + f + "' (see --help)");
        }
    }
    if (!a.show_help && a.model.empty()) throw std::invalid_argument("no model given: use -m MODEL.gguf");
    if (a.n_predict < 0) throw std::invalid_argument("-n must be >= 0");
    if (a.ctx < 16) throw std::invalid_argument("-c must be >= 16");
    if (!a.video_frames.empty() && !a.duplex) throw std::invalid_argument("--video-frames needs --duplex");
    if (!a.voice_wav.empty() && !a.voice.empty()) throw std::invalid_argument("give --voice or --voice-wav, not both");
    if (!a.voice_wav.empty() && a.speak.empty()) throw std::invalid_argument("--voice-wav needs --speak OUT.wav");
    if (a.duplex && (a.has_prompt || !a.images.empty())) {
        throw std::invalid_argument("--duplex takes --audio (and --video-frames), not -p or --image");
    }
    return a;
}

}  // namespace minicpmo_cli
