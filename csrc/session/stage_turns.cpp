#include "session/stage_turns.h"

#include <algorithm>
#include <thread>

#include "core/error.h"
#include "core/openmp_workers.h"

namespace minicpmo {

int stages_at_once(int n_threads) {
    const unsigned hw = std::thread::hardware_concurrency();
    const int cores = hw > 0 ? static_cast<int>(hw) : 1;
    const int team = n_threads > 0 ? n_threads : cores;
    return std::max(1, cores / team);
}

StageTurns::StageTurns(int at_once) { set_at_once(at_once); }

void StageTurns::set_at_once(int at_once) {
    if (at_once < 1) fail(Status::internal, "stage turns: at least one stage must be able to compute");
    std::lock_guard<std::mutex> lock(mu_);
    at_once_ = at_once;
    cv_.notify_all();
}

StageTurns::Stats StageTurns::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return Stats{admitted_, most_at_once_, at_once_};
}

StageTurns::Turn::Turn(StageTurns & turns) : turns_(turns) {
    std::unique_lock<std::mutex> lock(turns_.mu_);
    const uint64_t ticket = turns_.issued_++;
    turns_.cv_.wait(lock, [&] { return ticket == turns_.admitted_ && turns_.computing_ < turns_.at_once_; });
    ++turns_.admitted_;
    turns_.most_at_once_ = std::max(turns_.most_at_once_, ++turns_.computing_);
    turns_.cv_.notify_all();  // the next ticket may fit too
}

StageTurns::Turn::~Turn() {
    // the next stage's team then spins as a lone team does (core/openmp_workers.h)
    release_openmp_workers();
    std::lock_guard<std::mutex> lock(turns_.mu_);
    --turns_.computing_;
    turns_.cv_.notify_all();
}

}  // namespace minicpmo
