// Replays files through the fuzz targets' entry points without libFuzzer, in an ordinary build
// (tests/test_fuzz_replay.py compiles it against the installed library):
//   replay TARGET FILE...
// prints "ok FILE" for each file the entry point returned from; a crash ends the process.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#define MINICPMO_FUZZ_ENTRY(name) extern "C" int name(const uint8_t * data, size_t size);
MINICPMO_FUZZ_ENTRY(fuzz_omni_file)
MINICPMO_FUZZ_ENTRY(fuzz_llm_gguf)
MINICPMO_FUZZ_ENTRY(fuzz_image_file)
MINICPMO_FUZZ_ENTRY(fuzz_image_preprocess)
MINICPMO_FUZZ_ENTRY(fuzz_audio_file)
MINICPMO_FUZZ_ENTRY(fuzz_resample)
MINICPMO_FUZZ_ENTRY(fuzz_utf8)

int main(int argc, char ** argv) {
    struct Entry { const char * name; int (*fn)(const uint8_t *, size_t); };
    const Entry entries[] = {
        {"fuzz_omni_file", fuzz_omni_file}, {"fuzz_llm_gguf", fuzz_llm_gguf},
        {"fuzz_image_file", fuzz_image_file}, {"fuzz_image_preprocess", fuzz_image_preprocess},
        {"fuzz_audio_file", fuzz_audio_file}, {"fuzz_resample", fuzz_resample}, {"fuzz_utf8", fuzz_utf8},
    };
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s TARGET FILE...\n", argv[0]);
        return 2;
    }
    const Entry * entry = nullptr;
    for (const Entry & e : entries) {
        if (std::strcmp(e.name, argv[1]) == 0) entry = &e;
    }
    if (!entry) {
        std::fprintf(stderr, "unknown target %s\n", argv[1]);
        return 2;
    }
    for (int i = 2; i < argc; ++i) {
        std::ifstream f(argv[i], std::ios::binary);
        if (!f) {
            std::fprintf(stderr, "cannot read %s\n", argv[i]);
            return 2;
        }
        const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        entry->fn(bytes.data(), bytes.size());
        std::printf("ok %s\n", argv[i]);
        std::fflush(stdout);
    }
    return 0;
}
