// Helpers shared by the fuzz targets: the input as a file on disk (the loaders under test take
// paths) and a reader that takes numbers off the front of the input.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unistd.h>

namespace fuzz {

// A per-process scratch file (tmpfs when there is one, so a run does not wear a disk); rewritten
// by every call, removed at exit.
class ScratchFile {
public:
    explicit ScratchFile(const char * suffix) {
        const char * dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        path_ = std::string(dir) + "/minicpmo_fuzz_" + std::to_string(getpid()) + suffix;
    }
    ~ScratchFile() { std::remove(path_.c_str()); }
    const std::string & write(const uint8_t * data, size_t size) const {
        FILE * f = std::fopen(path_.c_str(), "wb");
        if (!f) throw std::runtime_error("cannot write the scratch file " + path_);
        if (size && std::fwrite(data, 1, size, f) != size) {
            std::fclose(f);
            throw std::runtime_error("cannot write the scratch file " + path_);
        }
        std::fclose(f);
        return path_;
    }
    const std::string & path() const { return path_; }

private:
    std::string path_;
};

// Takes fixed-size numbers off the front; zeros once the input runs out.
class Bytes {
public:
    Bytes(const uint8_t * data, size_t size) : data_(data), size_(size) {}
    template <typename T> T take() {
        T v{};
        const size_t n = size_ < sizeof(T) ? size_ : sizeof(T);
        std::memcpy(&v, data_, n);
        data_ += n;
        size_ -= n;
        return v;
    }
    const uint8_t * data() const { return data_; }
    size_t size() const { return size_; }

private:
    const uint8_t * data_;
    size_t size_;
};

// Stops the run with a message libFuzzer reports as a crash (a wrong result, not only a fault).
[[noreturn]] inline void violated(const char * what) {
    std::fprintf(stderr, "fuzz: property violated: %s\n", what);
    std::abort();
}

}  // namespace fuzz
