// minicpmo-cli: chat with MiniCPM-o 4.5 from the terminal, through the public C API.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/audio_file.h"
#include "cli/cli_args.h"
#include "cli/duplex_replay.h"
#include "cli/image_file.h"
#include "cli/wav_writer.h"
#include "minicpmo.h"

namespace {

// Ctrl-C while a reply is made stops that reply (its text; a second one its speech); at the prompt
// it quits. A signal handler can only reach static storage, hence this pointer of the program:
// minicpmo_reply_stop only sets a flag the reply reads at its next step.
std::atomic<minicpmo_reply *> g_reply{nullptr};

extern "C" void on_sigint(int) {
    if (minicpmo_reply * r = g_reply.load()) {
        minicpmo_reply_stop(r);
        return;
    }
    std::_Exit(130);  // the shell's code for "ended by SIGINT"; nothing is half-written between replies
}

// glibc's signal() keeps the handler installed and restarts interrupted reads (BSD semantics), so
// reading the next prompt goes on after a Ctrl-C during a reply.
void install_sigint_handler() { std::signal(SIGINT, on_sigint); }

int report(const char * what) {
    std::fprintf(stderr, "minicpmo-cli: %s: %s\n", what, minicpmo_last_error());
    return 1;
}

struct Owned {
    minicpmo_model * model = nullptr;
    minicpmo_session * session = nullptr;
    minicpmo_voice * voice = nullptr;
    ~Owned() {
        minicpmo_voice_free(voice);
        minicpmo_session_free(session);
        minicpmo_model_free(model);
    }
};

}  // namespace

int main(int argc, char ** argv) {
    minicpmo_cli::CliArgs args;
    try {
        args = minicpmo_cli::parse_cli_args(argc, argv);
    } catch (const std::exception & e) {
        std::fprintf(stderr, "minicpmo-cli: %s\n\n%s", e.what(), minicpmo_cli::cli_usage().c_str());
        return 2;
    }
    if (args.show_help) {
        std::fputs(minicpmo_cli::cli_usage().c_str(), stdout);
        return 0;
    }

    std::vector<minicpmo_cli::ImageFile> image_files;
    std::vector<std::vector<float>> audio_files;
    try {
        for (const std::string & path : args.images) image_files.push_back(minicpmo_cli::load_image_file(path));
        if (!args.duplex) {  // the duplex replay reads its recording itself
            for (const std::string & path : args.audios) audio_files.push_back(minicpmo_cli::load_audio_file(path));
        }
    } catch (const std::exception & e) {
        std::fprintf(stderr, "minicpmo-cli: %s\n", e.what());
        return 1;
    }
    std::vector<minicpmo_image> images;
    for (const auto & f : image_files) {
        images.push_back(minicpmo_image{f.rgb.data(), f.width, f.height, args.max_slices});
    }
    std::vector<minicpmo_audio> audios;
    for (const auto & pcm : audio_files) audios.push_back(minicpmo_audio{pcm.data(), pcm.size()});

    Owned h;
    minicpmo_model_params mp = minicpmo_model_default_params();
    mp.omni_path = args.omni.empty() ? nullptr : args.omni.c_str();
    mp.n_gpu_layers = args.n_gpu_layers;
    mp.device = args.device.c_str();
    if (minicpmo_model_load(args.model.c_str(), &mp, &h.model) != MINICPMO_OK) return report("cannot load the model");

    if (!args.voice_wav.empty()) {
        minicpmo_cli::MonoAudio ref;
        try {
            ref = minicpmo_cli::load_audio_file_mono(args.voice_wav);
        } catch (const std::exception & e) {
            std::fprintf(stderr, "minicpmo-cli: %s\n", e.what());
            return 1;
        }
        if (minicpmo_voice_from_pcm(h.model, ref.pcm.data(), ref.pcm.size(), ref.sample_rate, args.threads, &h.voice) !=
            MINICPMO_OK) {
            return report(("cannot clone a voice from '" + args.voice_wav + "'").c_str());
        }
        args.voice = minicpmo_voice_name(h.voice);  // every speaking call below takes it by name
    }

    minicpmo_session_params sp = minicpmo_session_default_params();
    sp.n_ctx = static_cast<uint32_t>(args.ctx);
    sp.n_threads = args.threads;
    if (minicpmo_session_new(h.model, &sp, &h.session) != MINICPMO_OK) return report("cannot create a session");
    if (args.duplex) return minicpmo_cli::run_duplex_replay(args, h.session);

    minicpmo_generate_params gp = minicpmo_generate_default_params();
    gp.temperature = args.temperature;
    gp.do_sample = args.temperature > 0.0f;
    gp.top_p = args.top_p;
    gp.top_k = args.top_k;
    gp.repetition_penalty = args.repeat_penalty;
    gp.seed = args.seed >= 0 ? static_cast<uint64_t>(args.seed) : std::random_device{}();
    gp.max_new_tokens = args.n_predict;
    gp.enable_thinking = args.think;
    gp.generate_audio = !args.speak.empty();
    gp.max_speech_tokens = args.max_speech_tokens;  // per reply: the speech comes whole
    if (!args.voice.empty() && args.speak.empty()) {
        std::fprintf(stderr, "minicpmo-cli: --voice needs --speak OUT.wav\n");
        return 2;
    }
    // an unknown voice or a model without speech output fails now, not after the first reply
    if (!args.speak.empty() && minicpmo_model_check_voice(h.model, args.voice.c_str()) != MINICPMO_OK) {
        return report("cannot speak the replies");
    }

    std::vector<std::string> roles, contents;
    if (!args.system.empty()) {
        roles.push_back("system");
        contents.push_back(args.system);
    }
    auto chat_turn = [&](const std::string & user_text) -> int {
        roles.push_back("user");
        // the media belong to the first user message: one marker each, items joined by "\n" as
        // the official processor joins content
        std::string content;
        if (std::count(roles.begin(), roles.end(), "user") == 1) {
            for (size_t i = 0; i < images.size(); ++i) content += std::string(MINICPMO_IMAGE_MARKER) + "\n";
            for (size_t i = 0; i < audios.size(); ++i) content += std::string(MINICPMO_AUDIO_MARKER) + "\n";
        }
        contents.push_back(content + user_text);
        std::vector<minicpmo_message> msgs;
        for (size_t i = 0; i < roles.size(); ++i) msgs.push_back({roles[i].c_str(), contents[i].c_str()});
        minicpmo_reply * reply = nullptr;
        const minicpmo_speech speech = args.speak.empty() ? MINICPMO_SPEECH_NONE : MINICPMO_SPEECH_WHOLE;
        if (minicpmo_session_start_reply(h.session, msgs.data(), msgs.size(), images.data(), images.size(), -1,
                                         audios.data(), audios.size(), &gp, speech, args.voice.c_str(),
                                         &reply) != MINICPMO_OK) {
            roles.pop_back();
            contents.pop_back();
            return report("generation failed");
        }
        // pulls the reply: text to stdout as it comes, the speech (with --speak) at the end
        std::string text;
        std::vector<float> samples;
        int rate = 0;
        bool failed = false;
        g_reply.store(reply);
        for (minicpmo_reply_chunk c{}; !c.done;) {
            if (minicpmo_reply_next(reply, &c) != MINICPMO_OK) {
                failed = true;
                break;
            }
            std::fwrite(c.text, 1, c.text_len, stdout);
            std::fflush(stdout);
            text.append(c.text, c.text_len);
            if (c.audio) samples.insert(samples.end(), c.audio, c.audio + c.n_audio), rate = c.sample_rate;
        }
        g_reply.store(nullptr);
        const bool stopped = minicpmo_reply_finish_reason(reply) == MINICPMO_FINISH_CANCELLED;
        minicpmo_reply_free(reply);
        std::fputc('\n', stdout);
        std::fflush(stdout);
        if (failed) {
            roles.pop_back();
            contents.pop_back();
            return report("generation failed");
        }
        if (stopped) std::fprintf(stderr, "minicpmo-cli: reply stopped (Ctrl-C)\n");
        if (!args.speak.empty() && rate > 0) {
            try {
                minicpmo_cli::write_wav_float(args.speak, samples, rate);
            } catch (const std::exception & e) {
                std::fprintf(stderr, "minicpmo-cli: %s\n", e.what());
                return 1;
            }
            std::fprintf(stderr, "minicpmo-cli: wrote %.2f s of speech to %s\n",
                         static_cast<double>(samples.size()) / rate, args.speak.c_str());
        }
        roles.push_back("assistant");
        contents.push_back(text);
        return 0;
    };
    install_sigint_handler();

    if (args.has_prompt) return chat_turn(args.prompt);

    std::fprintf(stderr, "minicpmo-cli: interactive chat (/reset clears the conversation, Ctrl-C stops a reply, /exit or Ctrl-D quits)\n");
    std::string line;
    while (true) {
        std::fputs("> ", stderr);
        if (!std::getline(std::cin, line)) break;
        if (line == "/exit" || line == "/quit") break;
        if (line == "/reset") {
            minicpmo_session_reset(h.session);
            roles.resize(args.system.empty() ? 0 : 1);
            contents.resize(roles.size());
            continue;
        }
        if (line.empty()) continue;
        chat_turn(line);  // errors are reported; the chat goes on
    }
    return 0;
}
