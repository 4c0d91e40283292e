// The CLI's audio decoding (miniaudio: WAV, FLAC, MP3) to 16 kHz mono as load_audio_file does it
// (decode, mix to mono, resample), then the WAV writer round trip: what minicpmo-cli --speak would
// write must read back bit for bit at its rate. Any input must decode or fail with minicpmo::Error.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "audio/resample.h"
#include "cli/audio_file.h"
#include "cli/wav_writer.h"
#include "core/error.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static const fuzz::ScratchFile out_file(".wav");
    minicpmo_cli::DecodedAudio a;
    std::vector<float> mono;
    try {
        // 4 s keeps one run's time bounded; the length check is the same code as the CLI's 1 hour
        a = minicpmo_cli::decode_audio(data, size, "fuzz input", 4.0);
        if (a.interleaved.size() != a.frames * size_t(a.channels)) fuzz::violated("decoded sample count");
        mono = minicpmo::mix_to_mono(a.interleaved.data(), a.frames, a.channels);
        if (a.sample_rate != minicpmo_cli::kAudioSampleRate) {
            mono = minicpmo::resample_pcm(mono.data(), mono.size(), a.sample_rate, minicpmo_cli::kAudioSampleRate);
        }
    } catch (const minicpmo::Error &) {
        return 0;
    }
    minicpmo_cli::write_wav_float(out_file.path(), mono, minicpmo_cli::kAudioSampleRate);
    FILE * f = std::fopen(out_file.path().c_str(), "rb");
    std::vector<uint8_t> bytes;
    if (f) {
        uint8_t buf[65536];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
        std::fclose(f);
    }
    const minicpmo_cli::DecodedAudio back = minicpmo_cli::decode_audio(bytes.data(), bytes.size(), "written wav", 0.0);
    if (back.sample_rate != minicpmo_cli::kAudioSampleRate || back.channels != 1 || back.frames != mono.size() ||
        std::memcmp(back.interleaved.data(), mono.data(), mono.size() * sizeof(float)) != 0) {
        fuzz::violated("the WAV writer's file does not read back as the samples written");
    }
    return 0;
}
