// Turns for the compute stages of a duplex conversation: the LLM on the caller's thread, the speech
// decoder and the vocoder on their own threads (duplex_speech.h).
//
// Why: each stage computes with a team of n_threads. When the cores cannot hold the teams of all
// stages at once (2 cores and 2 threads a team), stages that overlap (streaming_generate with
// wait_audio=False: the vocoder of unit k while unit k+1 prefills) only slow each other down:
// their threads share the cores, and their OpenMP pools together outnumber the CPUs, which makes
// libgomp stop spinning at barriers (core/openmp_workers.h). So at most as many stages compute at
// once as the cores hold, in the order they asked (first come, first served), and a stage gives
// its idle OpenMP workers back when its turn ends. With cores enough for every team, all stages
// overlap freely.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace minicpmo {

// How many stages of n_threads threads each (0 = all cores) the machine's cores hold at once (>= 1).
int stages_at_once(int n_threads);

class StageTurns {
public:
    explicit StageTurns(int at_once = 1);
    StageTurns(const StageTurns &) = delete;
    StageTurns & operator=(const StageTurns &) = delete;

    // How many stages may compute at once from now on (>= 1; stages computing keep their turn).
    void set_at_once(int at_once);

    // One stage's turn: the constructor waits for it, the destructor gives the calling thread's idle
    // OpenMP workers back and ends it.
    class Turn {
    public:
        explicit Turn(StageTurns & turns);
        ~Turn();
        Turn(const Turn &) = delete;
        Turn & operator=(const Turn &) = delete;

    private:
        StageTurns & turns_;
    };

    // What the turns were so far (for tests and diagnostics): how many were taken, the most stages
    // that computed at once, and the limit now.
    struct Stats {
        uint64_t taken = 0;
        int most_at_once = 0;
        int at_once = 0;
    };
    Stats stats() const;

private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    int at_once_;
    int computing_ = 0;
    int most_at_once_ = 0;
    uint64_t issued_ = 0;    // tickets handed out, in the order stages asked
    uint64_t admitted_ = 0;  // tickets whose stage got its turn
};

}  // namespace minicpmo
