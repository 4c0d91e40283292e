// Audio files decoded with the miniaudio decoders of the llama.cpp tree (WAV, FLAC, MP3) and brought
// to the 16 kHz mono float32 PCM the audio encoder takes, by the rule the Python loader
// (minicpmo_cpp.audio_input) follows too:
//   - integer samples become float the libsndfile way: N-bit signed / 2^(N-1), 8-bit unsigned
//     (x - 128) / 128; float samples are kept as they are (values beyond +-1 are not clipped);
//   - channels are averaged (minicpmo::mix_to_mono);
//   - another rate is converted with minicpmo::resample_pcm; a 16 kHz mono file is not altered.
// Used by minicpmo-cli (--audio) and, for MP3, by the Python module: libsndfile trusts an estimated
// length for MP3 files without a Xing/Info header and silently cuts them short.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace minicpmo_cli {

constexpr int kAudioSampleRate = 16000;
// Longest accepted audio. One second becomes 10 audio tokens, so an hour (36000 tokens) is about
// all that fits in the LLM's 40960 trained positions next to a prompt.
constexpr double kMaxAudioSeconds = 3600.0;

// Decoded samples at the file's own rate and channel count, as float by the rule above.
struct DecodedAudio {
    std::vector<float> interleaved;  // frames x channels
    size_t frames = 0;
    int channels = 0;
    int sample_rate = 0;
};

// Decodes an encoded file held in memory. `label` names it in errors ("audio file 'x.mp3'").
// Throws minicpmo::Error: not WAV/FLAC/MP3 or a corrupt header, truncated (fewer frames than the
// header declares), no samples, a channel count or rate out of range, or longer than `max_seconds`
// (checked from the header before decoding when it tells the length; a value <= 0 means no limit).
DecodedAudio decode_audio(const void * data, size_t size, const std::string & label,
                          double max_seconds = kMaxAudioSeconds);

// A file on disk: decode_audio + mix to mono + resample to 16 kHz. Throws minicpmo::Error (a
// std::runtime_error) naming the file for the problems above, a missing or empty file, and NaN/Inf
// samples.
std::vector<float> load_audio_file(const std::string & path, double max_seconds = kMaxAudioSeconds);

// A file on disk mixed to mono at its own rate (what voice cloning takes: it resamples as the
// reference does). The same checks as load_audio_file.
struct MonoAudio {
    std::vector<float> pcm;
    int sample_rate = 0;
};
MonoAudio load_audio_file_mono(const std::string & path, double max_seconds = kMaxAudioSeconds);

}  // namespace minicpmo_cli
