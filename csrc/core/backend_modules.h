#pragma once

namespace minicpmo {

// A build with GGML_BACKEND_DL (MINICPMO_CPU_VARIANTS=ON) keeps ggml's backends as loadable modules
// beside libminicpmo: one CPU module per instruction-set level (ggml picks the best one this CPU
// runs) and the GPU backends. Loads them from that folder; does nothing in a build that links its
// backends. Called once, from ensure_llama_initialized(), before the first device lookup.
void load_backend_modules();

}  // namespace minicpmo
