// Test driver for minicpmo-cli's audio decoder (csrc/cli/audio_file.cpp): decodes one file to 16 kHz
// mono and writes the float32 samples (native byte order) to OUT, or prints the error and exits 1.
// Usage: audio_decode_demo IN OUT [MAX_SECONDS]
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "cli/audio_file.h"

int main(int argc, char ** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s IN OUT [MAX_SECONDS]\n", argv[0]);
        return 2;
    }
    try {
        const double max_seconds = argc > 3 ? std::atof(argv[3]) : minicpmo_cli::kMaxAudioSeconds;
        const std::vector<float> pcm = minicpmo_cli::load_audio_file(argv[1], max_seconds);
        FILE * f = std::fopen(argv[2], "wb");
        if (!f || std::fwrite(pcm.data(), sizeof(float), pcm.size(), f) != pcm.size()) {
            std::fprintf(stderr, "cannot write %s\n", argv[2]);
            return 2;
        }
        std::fclose(f);
    } catch (const std::exception & e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
