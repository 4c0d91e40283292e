#include "cli/duplex_replay.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/audio_file.h"
#include "cli/image_file.h"
#include "cli/wav_writer.h"

namespace minicpmo_cli {

namespace {

constexpr size_t kUnitSamples = 16000;       // one second at 16 kHz
constexpr size_t kFirstUnitSamples = 16480;  // the duplex feed's first chunk (spec §3.4)
constexpr double kMaxReplaySeconds = 3600.0;

// Image files of `dir` in name order (one per second of the recording).
std::vector<std::string> frame_paths(const std::string & dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw std::runtime_error("--video-frames '" + dir + "' is not a directory");
    std::vector<std::string> paths;
    for (const auto & e : fs::directory_iterator(dir, ec)) {
        if (e.is_regular_file()) paths.push_back(e.path().string());
    }
    if (ec) throw std::runtime_error("cannot list --video-frames '" + dir + "': " + ec.message());
    std::sort(paths.begin(), paths.end());
    if (paths.empty()) throw std::runtime_error("--video-frames '" + dir + "' holds no files");
    return paths;
}

// One timeline line per unit: backslash, tab and line breaks in the text are escaped.
std::string escaped(const char * text, size_t n) {
    std::string out;
    for (size_t i = 0; i < n; ++i) {
        const char c = text[i];
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c == '\t') out += "\\t";
        else out += c;
    }
    return out;
}

int fail(const char * what) {
    std::fprintf(stderr, "minicpmo-cli: %s: %s\n", what, minicpmo_last_error());
    return 1;
}

struct DuplexHandle {
    minicpmo_duplex * d = nullptr;
    ~DuplexHandle() { minicpmo_duplex_free(d); }
};

}  // namespace

int run_duplex_replay(const CliArgs & args, minicpmo_session * session) {
    if (args.audios.size() != 1) {
        std::fprintf(stderr, "minicpmo-cli: --duplex needs exactly one --audio recording\n");
        return 2;
    }
    std::vector<float> pcm;
    std::vector<std::string> frames;
    try {
        pcm = load_audio_file(args.audios[0], kMaxReplaySeconds);
        if (!args.video_frames.empty()) frames = frame_paths(args.video_frames);
    } catch (const std::exception & e) {
        std::fprintf(stderr, "minicpmo-cli: %s\n", e.what());
        return 1;
    }

    minicpmo_duplex_params dp = minicpmo_duplex_default_params();
    dp.generate_audio = !args.speak.empty();
    dp.voice = args.voice.c_str();
    dp.seed = args.seed >= 0 ? static_cast<uint64_t>(args.seed) : 0;
    DuplexHandle h;
    if (minicpmo_duplex_new(session, &dp, &h.d) != MINICPMO_OK) return fail("cannot start the duplex conversation");
    const std::string system = args.system.empty() ? "Streaming Duplex Conversation! You are a helpful assistant."
                                                    : args.system;
    const std::string prefix = "<|im_start|>system\n" + system + "\n<|audio_start|>";
    if (minicpmo_duplex_prepare(h.d, prefix.c_str(), "<|audio_end|><|im_end|>", nullptr) != MINICPMO_OK) {
        return fail("prepare failed");
    }

    minicpmo_duplex_generate_params gp = minicpmo_duplex_generate_default_params();
    gp.greedy = args.temperature <= 0.0f;
    if (!gp.greedy) gp.temperature = args.temperature;

    std::vector<float> track;
    int sample_rate = 24000;
    size_t pos = 0;
    for (int unit = 0; pos < pcm.size(); ++unit) {
        // the last second is zero-padded to a whole unit
        const size_t want = unit == 0 ? kFirstUnitSamples : kUnitSamples;
        std::vector<float> chunk(want, 0.0f);
        const size_t n = std::min(want, pcm.size() - pos);
        std::copy_n(pcm.begin() + static_cast<std::ptrdiff_t>(pos), n, chunk.begin());
        pos += n;

        ImageFile frame;
        minicpmo_image image{};
        size_t n_frames = 0;
        if (static_cast<size_t>(unit) < frames.size()) {
            try {
                frame = load_image_file(frames[static_cast<size_t>(unit)]);
            } catch (const std::exception & e) {
                std::fprintf(stderr, "minicpmo-cli: %s\n", e.what());
                return 1;
            }
            image = minicpmo_image{frame.rgb.data(), frame.width, frame.height, 1};
            n_frames = 1;
        }
        if (minicpmo_duplex_prefill(h.d, chunk.data(), chunk.size(), n_frames ? &image : nullptr, n_frames, nullptr) !=
            MINICPMO_OK) {
            return fail("prefill failed");
        }
        minicpmo_duplex_unit u{};
        if (minicpmo_duplex_generate(h.d, &gp, &u) != MINICPMO_OK) return fail("generate failed");
        // timeline: seconds heard so far, the decision, what was said
        std::printf("%d\t%s\t%s%s\n", u.current_time, u.is_listen ? "listen" : "speak",
                    escaped(u.text, u.text_len).c_str(), u.end_of_turn ? "\t<end of turn>" : "");
        std::fflush(stdout);
        if (u.audio) {
            track.insert(track.end(), u.audio, u.audio + u.n_audio);
            sample_rate = u.sample_rate;
        }
        minicpmo_duplex_unit_clear(&u);
    }
    if (!args.speak.empty()) {
        try {
            write_wav_float(args.speak, track, sample_rate);
        } catch (const std::exception & e) {
            std::fprintf(stderr, "minicpmo-cli: %s\n", e.what());
            return 1;
        }
        std::fprintf(stderr, "minicpmo-cli: wrote %.2f s of the spoken track to %s\n",
                     static_cast<double>(track.size()) / sample_rate, args.speak.c_str());
    }
    return 0;
}

}  // namespace minicpmo_cli
