/* What the C demo programs share: error reporting and opening a model with one session. A demo
 * defines DEMO_NAME (its program name, for messages) before including this header. */
#ifndef MINICPMO_TESTS_DEMO_COMMON_H
#define MINICPMO_TESTS_DEMO_COMMON_H

#include <stdio.h>

#include "minicpmo.h"

#ifndef DEMO_NAME
#error "define DEMO_NAME (the demo's program name) before including demo_common.h"
#endif

/* Reports a failed call ("DEMO_NAME: what: last error (status)") on stderr; returns exit code 1. */
static inline int fail(const char * what, minicpmo_status st) {
    fprintf(stderr, "%s: %s: %s (%s)\n", DEMO_NAME, what, minicpmo_last_error(), minicpmo_status_name(st));
    return 1;
}

/* Loads the model at `path` with the default model parameters and opens a session of n_ctx tokens;
 * n_threads <= 0 and kv_cache_type NULL keep the library's defaults. A failure is reported through
 * fail() and its status returned; MINICPMO_OK otherwise. */
static inline minicpmo_status open_session(const char * path, uint32_t n_ctx, int32_t n_threads,
                                           const char * kv_cache_type, minicpmo_model ** model,
                                           minicpmo_session ** session) {
    minicpmo_status st;
    minicpmo_model_params mp = minicpmo_model_default_params();
    if ((st = minicpmo_model_load(path, &mp, model)) != MINICPMO_OK) {
        fail("load", st);
        return st;
    }
    minicpmo_session_params sp = minicpmo_session_default_params();
    sp.n_ctx = n_ctx;
    if (n_threads > 0) sp.n_threads = n_threads;
    if (kv_cache_type) sp.kv_cache_type = kv_cache_type;
    if ((st = minicpmo_session_new(*model, &sp, session)) != MINICPMO_OK) fail("session", st);
    return st;
}

#endif
