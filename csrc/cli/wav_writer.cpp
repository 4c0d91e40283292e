#include "cli/wav_writer.h"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>

namespace minicpmo_cli {

namespace {

void put_u32(std::FILE * f, uint32_t v) {
    const unsigned char b[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                                static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
    std::fwrite(b, 1, 4, f);
}

void put_u16(std::FILE * f, uint16_t v) {
    const unsigned char b[2] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8)};
    std::fwrite(b, 1, 2, f);
}

}  // namespace

void write_wav_float(const std::string & path, const std::vector<float> & samples, int sample_rate) {
    const uint64_t data_bytes = static_cast<uint64_t>(samples.size()) * 4;
    if (data_bytes > 0xFFFFFFFFull - 36) throw std::runtime_error("audio too long for a WAV file: " + path);
    std::unique_ptr<std::FILE, int (*)(std::FILE *)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
    if (!f) throw std::runtime_error("cannot write audio file '" + path + "'");
    std::fwrite("RIFF", 1, 4, f.get());
    put_u32(f.get(), static_cast<uint32_t>(36 + data_bytes));
    std::fwrite("WAVEfmt ", 1, 8, f.get());
    put_u32(f.get(), 16);
    put_u16(f.get(), 3);  // IEEE float
    put_u16(f.get(), 1);  // mono
    put_u32(f.get(), static_cast<uint32_t>(sample_rate));
    put_u32(f.get(), static_cast<uint32_t>(sample_rate) * 4);
    put_u16(f.get(), 4);
    put_u16(f.get(), 32);
    std::fwrite("data", 1, 4, f.get());
    put_u32(f.get(), static_cast<uint32_t>(data_bytes));
    // little-endian hosts (x86, ARM) store float32 exactly as WAV wants it
    if (!samples.empty() && std::fwrite(samples.data(), 4, samples.size(), f.get()) != samples.size()) {
        throw std::runtime_error("cannot write audio file '" + path + "'");
    }
    if (std::fflush(f.get()) != 0) throw std::runtime_error("cannot write audio file '" + path + "'");
}

}  // namespace minicpmo_cli
