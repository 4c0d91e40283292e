// One caller at a time on a session. A session's KV cache, encoders and generation state are not
// safe to use from two threads at once (libllama asserts, heap corruption), so every entry point
// of a session holds its CallGuard for the duration of the call and a second thread is refused at
// once with Status::busy (no waiting: a caller that holds a stream open between steps cannot
// deadlock another). Calls nest on the holding thread (a chat runs prefill and generate), except
// from inside a callback the call made to user code (CallGuard::Callout), which must return first.
#pragma once

#include <mutex>
#include <thread>

namespace minicpmo {

class CallGuard {
public:
    // Held for one call; releases on destruction (or release()).
    class Hold {
    public:
        Hold() = default;
        Hold(Hold && o) noexcept : guard_(o.guard_) { o.guard_ = nullptr; }
        Hold & operator=(Hold && o) noexcept;
        Hold(const Hold &) = delete;
        Hold & operator=(const Hold &) = delete;
        ~Hold() { release(); }
        void release();

    private:
        friend class CallGuard;
        explicit Hold(CallGuard * g) : guard_(g) {}
        CallGuard * guard_ = nullptr;
    };

    // While alive, the holding thread is inside a callback to user code: calls into the session
    // from there are refused like a second thread's.
    class Callout {
    public:
        explicit Callout(CallGuard & g);
        ~Callout();
        Callout(const Callout &) = delete;
        Callout & operator=(const Callout &) = delete;

    private:
        CallGuard & guard_;
        bool was_ = false;
    };

    // Takes the guard for `what` (a string literal naming the call, shown to the refused caller).
    // Throws Error(Status::busy) when another thread holds it, Error(Status::closed) after close().
    Hold enter(const char * what);
    // Marks the session closed (the caller holds the guard); later enter() calls fail.
    void close();
    bool closed() const;

private:
    mutable std::mutex mu_;
    std::thread::id owner_;
    int depth_ = 0;
    const char * what_ = "";
    bool in_callout_ = false;
    bool closed_ = false;
};

}  // namespace minicpmo
