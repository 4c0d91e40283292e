#include "session/call_guard.h"

#include <string>

#include "core/error.h"

namespace minicpmo {

CallGuard::Hold & CallGuard::Hold::operator=(Hold && o) noexcept {
    if (this != &o) {
        release();
        guard_ = o.guard_;
        o.guard_ = nullptr;
    }
    return *this;
}

void CallGuard::Hold::release() {
    if (!guard_) return;
    std::lock_guard<std::mutex> lock(guard_->mu_);
    if (--guard_->depth_ == 0) {
        guard_->owner_ = std::thread::id();
        guard_->what_ = "";
    }
    guard_ = nullptr;
}

CallGuard::Callout::Callout(CallGuard & g) : guard_(g) {
    std::lock_guard<std::mutex> lock(guard_.mu_);
    was_ = guard_.in_callout_;
    guard_.in_callout_ = true;
}

CallGuard::Callout::~Callout() {
    std::lock_guard<std::mutex> lock(guard_.mu_);
    guard_.in_callout_ = was_;
}

CallGuard::Hold CallGuard::enter(const char * what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) fail(Status::closed, std::string(what) + ": the session is closed");
    const std::thread::id me = std::this_thread::get_id();
    if (depth_ > 0 && owner_ != me) {
        fail(Status::busy, std::string("session is busy: ") + what + " was called while another thread runs " + what_ +
                               " on it; a session serves one call at a time (wait for that call to return, or use "
                               "one session per thread)");
    }
    if (depth_ > 0 && in_callout_) {
        fail(Status::busy, std::string("session is busy: ") + what + " was called from a callback of " + what_ +
                               " on the same session; return from the callback first");
    }
    if (depth_++ == 0) {
        owner_ = me;
        what_ = what;
    }
    return Hold(this);
}

void CallGuard::close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
}

bool CallGuard::closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
}

}  // namespace minicpmo
