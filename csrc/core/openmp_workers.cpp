#include "core/openmp_workers.h"

#if defined(MINICPMO_OPENMP)
#include <omp.h>
#endif

namespace minicpmo {

void release_openmp_workers() {
#if defined(MINICPMO_OPENMP)
    // OpenMP 5.0's soft pause of the host: libgomp ends the calling thread's pool (its workers exit
    // and leave libgomp's count of managed threads); other threads' pools are untouched
    if (!omp_in_parallel()) omp_pause_resource(omp_pause_soft, omp_get_initial_device());
#endif
}

}  // namespace minicpmo
