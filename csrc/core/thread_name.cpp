#include "core/thread_name.h"

#if defined(__linux__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace minicpmo {

void name_this_thread(const char * name) {
#if defined(__linux__)
    pthread_setname_np(pthread_self(), name);  // fails only for names over 15 characters
#elif defined(__APPLE__)
    pthread_setname_np(name);
#else
    (void) name;
#endif
}

}  // namespace minicpmo
