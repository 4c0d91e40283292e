#include "core/error.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sys/stat.h>

namespace minicpmo {

void fail(Status status, const std::string & message) { throw Error(status, message); }

void require_readable_file(const std::string & path, const char * what) {
    if (path.empty()) {
        fail(Status::invalid_argument, std::string(what) + ": empty file path");
    }
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) {
        fail(Status::io_error, std::string(what) + " '" + path + "': " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        fail(Status::io_error, std::string(what) + " '" + path + "' is not a regular file");
    }
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        fail(Status::io_error, std::string(what) + " '" + path + "' cannot be opened for reading");
    }
}

}  // namespace minicpmo
