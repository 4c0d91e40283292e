// minicpmo-cli --duplex: replays a recording second by second through a full-duplex conversation
// (spec §6.3), optionally with one video frame per second, and writes what the model said: a
// timeline of listen / speak decisions on stdout and the spoken reply track as a 24 kHz WAV.
#pragma once

#include "cli/cli_args.h"
#include "minicpmo.h"

namespace minicpmo_cli {

// Returns the process exit code (0, 1 = runtime error, 2 = bad arguments).
int run_duplex_replay(const CliArgs & args, minicpmo_session * session);

}  // namespace minicpmo_cli
