#pragma once

// Names the calling thread as tools show it (top -H, gdb, /proc/<pid>/task/<tid>/comm); threads it
// starts afterwards (an OpenMP team's workers) inherit the name on Linux. At most 15 characters.

namespace minicpmo {

void name_this_thread(const char * name);

}  // namespace minicpmo
