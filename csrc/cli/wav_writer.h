// Writes mono float32 samples as a 32-bit float WAV file (what soundfile/ffmpeg read as is).
#pragma once

#include <string>
#include <vector>

namespace minicpmo_cli {

// Throws std::runtime_error naming the file when it cannot be written.
void write_wav_float(const std::string & path, const std::vector<float> & samples, int sample_rate);

}  // namespace minicpmo_cli
