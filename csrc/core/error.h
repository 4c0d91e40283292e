// Errors inside the runtime: one exception type carrying a status code, so the C API can map it
// to a status + message and Python can raise it with the same text.
#pragma once

#include <stdexcept>
#include <string>

namespace minicpmo {

enum class Status {
    ok = 0,
    invalid_argument = 1,
    io_error = 2,
    bad_model = 3,
    context_full = 4,
    cancelled = 5,
    unsupported = 6,
    internal = 7,
    busy = 8,    // another thread is running a call on the same session
    closed = 9,  // the session was closed
};

class Error : public std::runtime_error {
public:
    Error(Status status, const std::string & message) : std::runtime_error(message), status_(status) {}
    Status status() const { return status_; }

private:
    Status status_;
};

[[noreturn]] void fail(Status status, const std::string & message);

// Throws io_error naming `path` unless it is an existing regular file we can open for reading.
void require_readable_file(const std::string & path, const char * what);

}  // namespace minicpmo
