#pragma once

// Idle OpenMP workers of the calling thread, given back between the stages of a pipeline.
//
// Why: every thread that runs OpenMP work (ggml's CPU backend, oneDNN, the project's own loops)
// keeps a pool of workers, and libgomp counts the workers of every pool, busy or idle. Once there
// are more than CPUs (a duplex conversation: the LLM's thread, the TTS thread and the vocoder
// thread each with a team), libgomp stops spinning at its barriers: each of the thousands of
// barriers and team starts of a stage then sleeps and wakes through the kernel. On a 2-core VM
// that made the vocoder's flow 1.5x slower while the other pools sat idle. A stage that hands its
// work on to another thread gives its workers back first, so the next stage's team spins as a
// lone team does; the workers are created again at that thread's next parallel region.

namespace minicpmo {

// Ends the calling thread's idle OpenMP workers (no effect outside libgomp/OpenMP builds, or
// inside a parallel region). Cheap: the next parallel region of this thread starts new workers.
void release_openmp_workers();

}  // namespace minicpmo
