// Command line of minicpmo-cli (llama.cpp conventions).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minicpmo_cli {

struct CliArgs {
    std::string model;
    std::string omni;
    std::string prompt;  // empty: interactive chat
    bool has_prompt = false;
    std::string system;
    // sampling and context settings: default_cli_args() fills them from the library's defaults
    int n_predict = 0;
    float temperature = 0.0f;
    float top_p = 0.0f;
    int top_k = 0;
    float repeat_penalty = 0.0f;
    int64_t seed = -1;  // -1: random
    int threads = 0;
    int ctx = 0;
    int n_gpu_layers = -1;
    std::string device;               // "" = auto (see minicpmo_model_params.device)
    bool think = false;
    std::vector<std::string> images;  // go into the first user message, before its text
    int max_slices = 0;                // 0 = the model's default (9)
    std::vector<std::string> audios;  // go into the first user message, after the images
    std::string speak;                // write each spoken reply here (WAV, 24 kHz)
    std::string voice;                // voice name of the model file ("" = its default)
    std::string voice_wav;            // a reference recording to clone the voice from (--voice-wav)
    int max_speech_tokens = 0;        // 0 = the model's limit
    bool duplex = false;              // replay the --audio recording through a duplex conversation
    std::string video_frames;         // --duplex: a folder of frames, one per second in name order
    bool show_help = false;
};

// The options' values when not given.
CliArgs default_cli_args();
// Throws std::invalid_argument with a message naming the bad option.
CliArgs parse_cli_args(int argc, char ** argv);
std::string cli_usage();

}  // namespace minicpmo_cli
