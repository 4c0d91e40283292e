#pragma once

namespace minicpmo {

// A build with GGML_BACKEND_DL (MINICPMO_CPU_VARIANTS=ON) keeps ggml's backends as loadable modules
// beside libminicpmo: one CPU module per instruction-set level (ggml picks the best one this CPU
// runs) and the GPU backends. Loads them from that folder; does nothing in a build that links its
// backends. Called once, from ensure_llama_initialized(), before the first device lookup.
// MINICPMO_CPU_VARIANT=<level> (haswell, zen4, ...: the libggml-cpu-<level>.so files) loads that CPU
// module instead of the best one, e.g. to run the AVX2 kernels on an AVX-512 machine; a level that is
// not there or that this CPU cannot run throws, as does the variable in a build without modules.
void load_backend_modules();

}  // namespace minicpmo
