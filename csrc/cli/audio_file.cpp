#include "cli/audio_file.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <sys/stat.h>

#include "audio/resample.h"
#include "core/error.h"

// decoders only: no devices, encoders, engine or generators; static so nothing clashes with another
// copy of miniaudio in the process (libmtmd has one)
#define MINIAUDIO_IMPLEMENTATION
#define MA_NO_ENCODING
#define MA_NO_DEVICE_IO
#define MA_NO_RESOURCE_MANAGER
#define MA_NO_NODE_GRAPH
#define MA_NO_ENGINE
#define MA_NO_GENERATION
#define MA_API static
// MP3 synthesis straight to float: the default rounds to int16 and clips at +-1
#define MA_DR_MP3_FLOAT_OUTPUT
#include "miniaudio.h"

namespace minicpmo_cli {

namespace {

[[noreturn]] void fail_input(const std::string & label, const std::string & what,
                             minicpmo::Status status = minicpmo::Status::invalid_argument) {
    minicpmo::fail(status, label + " " + what);
}

// Samples in the decoder's native format -> float, by the libsndfile rule (see audio_file.h).
void to_float(const uint8_t * in, ma_format format, size_t count, float * out) {
    switch (format) {
        case ma_format_u8:
            for (size_t i = 0; i < count; ++i) out[i] = float(int(in[i]) - 128) * (1.0f / 128.0f);
            break;
        case ma_format_s16:
            for (size_t i = 0; i < count; ++i) {
                int16_t v;
                std::memcpy(&v, in + 2 * i, 2);
                out[i] = float(v) * (1.0f / 32768.0f);
            }
            break;
        case ma_format_s24:
            for (size_t i = 0; i < count; ++i) {
                const uint8_t * b = in + 3 * i;  // packed little-endian
                const uint32_t u = uint32_t(b[0]) << 8 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 24;
                out[i] = float(int32_t(u) >> 8) * (1.0f / 8388608.0f);
            }
            break;
        case ma_format_s32:
            for (size_t i = 0; i < count; ++i) {
                int32_t v;
                std::memcpy(&v, in + 4 * i, 4);
                out[i] = float(v) * (1.0f / 2147483648.0f);
            }
            break;
        case ma_format_f32:
            std::memcpy(out, in, count * sizeof(float));
            break;
        default:
            minicpmo::fail(minicpmo::Status::internal, "unexpected sample format from the audio decoder");
    }
}

// Reads every frame of an opened decoder, checking the limits on the way.
DecodedAudio read_all(ma_decoder & dec, const std::string & label, double max_seconds) {
    ma_format format = ma_format_unknown;
    ma_uint32 channels = 0, rate = 0;
    ma_result r = ma_decoder_get_data_format(&dec, &format, &channels, &rate, nullptr, 0);
    if (r != MA_SUCCESS) fail_input(label, "has no readable sample format (" + std::string(ma_result_description(r)) + ")");
    if (channels < 1 || channels > ma_uint32(minicpmo::kMaxAudioChannels)) {
        fail_input(label, "declares " + std::to_string(channels) + " channels (1 .. " +
                              std::to_string(minicpmo::kMaxAudioChannels) + " accepted)");
    }
    if (rate < 1 || rate > ma_uint32(minicpmo::kMaxAudioSampleRate)) {
        fail_input(label, "declares a sample rate of " + std::to_string(rate) + " Hz (1 .. " +
                              std::to_string(minicpmo::kMaxAudioSampleRate) + " Hz accepted)");
    }
    const double limit_frames = max_seconds * double(rate);
    const bool limited = max_seconds > 0.0 && limit_frames < 9e18;
    const uint64_t max_frames = limited ? uint64_t(limit_frames) : std::numeric_limits<uint64_t>::max();
    // `at_least`: reading stopped at the limit, so the real length is not known
    const auto too_long = [&](uint64_t frames, bool at_least) {
        char text[160];
        std::snprintf(text, sizeof text, "lasts %s%.1f s, longer than the %g s accepted", at_least ? "more than " : "",
                      double(frames) / double(rate), max_seconds);
        fail_input(label, std::string(text) + " (one second of audio takes 10 tokens of context); cut it into pieces");
    };

    ma_uint64 declared = 0;  // 0: the header does not tell
    if (ma_decoder_get_length_in_pcm_frames(&dec, &declared) != MA_SUCCESS) declared = 0;
    if (declared > max_frames) too_long(declared, false);

    const size_t bytes_per_frame = ma_get_bytes_per_frame(format, channels);
    const size_t chunk_frames = 16384;
    std::vector<uint8_t> buf(chunk_frames * bytes_per_frame);
    DecodedAudio out;
    out.channels = int(channels);
    out.sample_rate = int(rate);
    if (declared > 0 && declared <= max_frames) out.interleaved.reserve(size_t(declared) * channels);
    uint64_t total = 0;
    for (;;) {
        ma_uint64 got = 0;
        r = ma_decoder_read_pcm_frames(&dec, buf.data(), chunk_frames, &got);
        if (got > 0) {
            total += got;
            if (total > max_frames) too_long(total, true);
            const size_t count = size_t(got) * channels;
            out.interleaved.resize(out.interleaved.size() + count);
            to_float(buf.data(), format, count, out.interleaved.data() + out.interleaved.size() - count);
        }
        if (r == MA_AT_END || got == 0) break;
        if (r != MA_SUCCESS) fail_input(label, "could not be decoded: " + std::string(ma_result_description(r)));
    }
    if (declared > 0 && total < declared) {
        fail_input(label, "is truncated: its header declares " + std::to_string(declared) + " frames but only " +
                              std::to_string(total) + " could be decoded");
    }
    if (total == 0) fail_input(label, "contains no audio samples");
    out.frames = size_t(total);
    return out;
}

// miniaudio's WAV reader accepts a data chunk that is shorter than its header says (it returns
// fewer frames and reports the shorter length); a cut-off download should be an error instead.
// `read_at(pos, out, n)` fills n bytes at offset pos of the input, false past its end.
void check_wav_complete(const std::function<bool(size_t, uint8_t *, size_t)> & read_at, size_t size,
                        const std::string & label) {
    uint8_t head[12];
    if (!read_at(0, head, 12) || std::memcmp(head, "RIFF", 4) != 0 || std::memcmp(head + 8, "WAVE", 4) != 0) return;
    size_t pos = 12;
    uint8_t chunk[8];
    while (pos + 8 <= size && read_at(pos, chunk, 8)) {
        const uint32_t chunk_size = uint32_t(chunk[4]) | uint32_t(chunk[5]) << 8 | uint32_t(chunk[6]) << 16 |
                                    uint32_t(chunk[7]) << 24;
        if (std::memcmp(chunk, "data", 4) == 0) {
            const size_t available = size - pos - 8;
            // 0 and 0xFFFFFFFF mark a length unknown to a streaming writer
            if (chunk_size != 0 && chunk_size != 0xFFFFFFFFu && chunk_size > available) {
                fail_input(label, "is truncated: its WAV header declares " + std::to_string(chunk_size) +
                                      " bytes of samples but only " + std::to_string(available) + " are present");
            }
            return;
        }
        pos += 8 + size_t(chunk_size) + (chunk_size & 1);  // chunks are padded to an even size
    }
}

struct Decoder {
    ma_decoder dec{};
    bool open = false;
    ~Decoder() {
        if (open) ma_decoder_uninit(&dec);
    }
};

// native format, channels and rate: the conversion to 16 kHz mono is ours, not miniaudio's
ma_decoder_config native_config() { return ma_decoder_config_init(ma_format_unknown, 0, 0); }

std::string unreadable(ma_result r) {
    return "is not audio that can be decoded here (WAV, FLAC or MP3; unknown format or corrupt header: " +
           std::string(ma_result_description(r)) + ")";
}

// In-memory input for ma_decoder_init. Unlike ma_decoder_init_memory, whose seek clamps at the end of
// the data and reports success, a seek outside the data fails: miniaudio's WAV reader then stops at a
// chunk size that runs past the end instead of looping for minutes (fuzz_audio_file/wav_fact_chunk_seek_hang).
struct MemoryInput {
    const uint8_t * bytes;
    size_t size;
    size_t pos = 0;
};

ma_result read_memory(ma_decoder * dec, void * out, size_t n, size_t * n_read) {
    auto * in = static_cast<MemoryInput *>(dec->pUserData);
    const size_t k = n < in->size - in->pos ? n : in->size - in->pos;
    if (k) std::memcpy(out, in->bytes + in->pos, k);
    in->pos += k;
    if (n_read) *n_read = k;
    return k == 0 && n > 0 ? MA_AT_END : MA_SUCCESS;
}

ma_result seek_memory(ma_decoder * dec, ma_int64 offset, ma_seek_origin origin) {
    auto * in = static_cast<MemoryInput *>(dec->pUserData);
    const int64_t base = origin == ma_seek_origin_start ? 0
                         : origin == ma_seek_origin_end ? int64_t(in->size)
                                                        : int64_t(in->pos);
    // size_t data sizes fit in int64 here (in-memory buffers); checked so that the sum cannot wrap
    if ((offset > 0 && base > INT64_MAX - offset) || base + offset < 0 || uint64_t(base + offset) > in->size) {
        return MA_BAD_SEEK;
    }
    in->pos = size_t(base + offset);
    return MA_SUCCESS;
}

}  // namespace

DecodedAudio decode_audio(const void * data, size_t size, const std::string & label, double max_seconds) {
    if (size == 0) fail_input(label, "is empty (0 bytes)");
    const auto * bytes = static_cast<const uint8_t *>(data);
    check_wav_complete(
        [bytes, size](size_t pos, uint8_t * out, size_t n) {
            if (pos > size || n > size - pos) return false;
            std::memcpy(out, bytes + pos, n);
            return true;
        },
        size, label);
    const ma_decoder_config config = native_config();
    MemoryInput input{bytes, size};  // outlives the decoder, which reads it until uninit
    Decoder d;
    const ma_result r = ma_decoder_init(read_memory, seek_memory, &input, &config, &d.dec);
    if (r != MA_SUCCESS) fail_input(label, unreadable(r));
    d.open = true;
    return read_all(d.dec, label, max_seconds);
}

MonoAudio load_audio_file_mono(const std::string & path, double max_seconds) {
    const std::string label = "audio file '" + path + "'";
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) {
        fail_input(label, "cannot be opened: " + std::string(std::strerror(errno)), minicpmo::Status::io_error);
    }
    if (!S_ISREG(st.st_mode)) fail_input(label, "is not a regular file", minicpmo::Status::io_error);
    if (st.st_size == 0) fail_input(label, "is empty (0 bytes)");
    {
        // the WAV completeness check needs the header and the file size only
        std::unique_ptr<FILE, int (*)(FILE *)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
        if (!f) fail_input(label, "cannot be opened for reading", minicpmo::Status::io_error);
        FILE * fp = f.get();
        check_wav_complete(
            [fp](size_t pos, uint8_t * out, size_t n) {
                return pos <= size_t(std::numeric_limits<long>::max()) && std::fseek(fp, long(pos), SEEK_SET) == 0 &&
                       std::fread(out, 1, n, fp) == n;
            },
            size_t(st.st_size), label);
    }

    const ma_decoder_config config = native_config();
    Decoder d;
    const ma_result r = ma_decoder_init_file(path.c_str(), &config, &d.dec);
    if (r != MA_SUCCESS) fail_input(label, unreadable(r));
    d.open = true;
    DecodedAudio audio = read_all(d.dec, label, max_seconds);

    try {
        MonoAudio out{minicpmo::mix_to_mono(audio.interleaved.data(), audio.frames, audio.channels), audio.sample_rate};
        return out;
    } catch (const minicpmo::Error & e) {
        fail_input(label, "(" + std::to_string(audio.sample_rate) + " Hz, " + std::to_string(audio.channels) +
                              (audio.channels == 1 ? " channel): " : " channels): ") + e.what(), e.status());
    }
}

std::vector<float> load_audio_file(const std::string & path, double max_seconds) {
    MonoAudio audio = load_audio_file_mono(path, max_seconds);
    try {
        return minicpmo::resample_pcm(audio.pcm.data(), audio.pcm.size(), audio.sample_rate, kAudioSampleRate);
    } catch (const minicpmo::Error & e) {
        fail_input("audio file '" + path + "'", "(" + std::to_string(audio.sample_rate) + " Hz): " + e.what(), e.status());
    }
}

}  // namespace minicpmo_cli
