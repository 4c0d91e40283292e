/* The C API's safety contract on one model: parameters out of range are refused with a message
 * naming them, two pthreads on one session get either the single-threaded reply or
 * MINICPMO_ERR_BUSY (never a crash), a callback calling back into its session gets
 * MINICPMO_ERR_BUSY, and a reply that fills the context comes back with MINICPMO_FINISH_CONTEXT.
 *
 * usage: safety_demo MODEL N_ITERS
 * prints lines the test parses: PARAM <name> <status> <message>, REF <n> <reply>, THREADS ok=.. busy=..
 * mismatch=.. other=.., REENTRY <status>, FINISH <reason> <status> <n_tokens_text_len>. */
#define DEMO_NAME "safety_demo"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "demo_common.h"

static const minicpmo_message k_msgs[] = {{"user", "Tell me about threads."}};

static minicpmo_generate_params greedy(int32_t max_new_tokens) {
    minicpmo_generate_params g = minicpmo_generate_default_params();
    g.do_sample = false;
    g.repetition_penalty = 1.0f;
    g.max_new_tokens = max_new_tokens;
    return g;
}

static void report_param(const char * name, minicpmo_status st) {
    printf("PARAM %s %s %s\n", name, minicpmo_status_name(st), st == MINICPMO_OK ? "" : minicpmo_last_error());
}

static void check_params(const char * path) {
    minicpmo_model * model = NULL;
    minicpmo_model_params mp = minicpmo_model_default_params();
    mp.n_gpu_layers = -2;
    report_param("n_gpu_layers=-2", minicpmo_model_load(path, &mp, &model));
    if (model) minicpmo_model_free(model);
    model = NULL;
    mp = minicpmo_model_default_params();
    if (minicpmo_model_load(path, &mp, &model) != MINICPMO_OK) return;
    struct {
        const char * name;
        uint32_t n_ctx;
        int32_t n_threads;
        uint32_t n_batch;
    } cases[] = {
        {"n_batch=0", 512, 1, 0},         {"n_batch=7", 512, 1, 7},        {"n_batch=65537", 512, 1, 65537},
        {"n_ctx=0", 0, 1, 512},           {"n_ctx=15", 15, 1, 512},        {"n_ctx=10000000", 10000000, 1, 512},
        {"n_threads=-1", 512, -1, 512},   {"n_threads=513", 512, 513, 512}, {"n_threads=1000", 512, 1000, 512},
        {"valid", 16, 1, 8},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        minicpmo_session_params sp = minicpmo_session_default_params();
        sp.n_ctx = cases[i].n_ctx;
        sp.n_threads = cases[i].n_threads;
        sp.n_batch = cases[i].n_batch;
        minicpmo_session * s = NULL;
        report_param(cases[i].name, minicpmo_session_new(model, &sp, &s));
        if (s) minicpmo_session_free(s);
    }
    {
        minicpmo_session_params sp = minicpmo_session_default_params();
        sp.compute_type = "fp8";
        minicpmo_session * s = NULL;
        report_param("compute_type=fp8", minicpmo_session_new(model, &sp, &s));
        if (s) minicpmo_session_free(s);
    }
    minicpmo_session * s = NULL;
    minicpmo_session_params sp = minicpmo_session_default_params();
    sp.n_ctx = 512;
    sp.n_threads = 1;
    if (minicpmo_session_new(model, &sp, &s) == MINICPMO_OK) {
        minicpmo_generate_params g = greedy(-1);
        report_param("max_new_tokens=-1", minicpmo_session_chat(s, k_msgs, 1, &g, NULL, NULL, NULL, NULL));
        g = greedy(4);
        g.do_sample = true;
        g.top_p = 0.0f;
        report_param("top_p=0", minicpmo_session_chat(s, k_msgs, 1, &g, NULL, NULL, NULL, NULL));
        g.top_p = 0.8f;
        g.temperature = -1.0f;
        report_param("temperature=-1", minicpmo_session_chat(s, k_msgs, 1, &g, NULL, NULL, NULL, NULL));
        minicpmo_session_free(s);
    }
    minicpmo_model_free(model);
}

typedef struct {
    minicpmo_session * session;
    int iters;
    const char * refs[2]; /* the cold reply and the reply with the prompt cached */
    int ok, busy, mismatch, other;
} worker_state;

static pthread_mutex_t g_count = PTHREAD_MUTEX_INITIALIZER;

static void * worker(void * arg) {
    worker_state * w = (worker_state *)arg;
    for (int i = 0; i < w->iters; ++i) {
        minicpmo_generate_params g = greedy(6);
        char * reply = NULL;
        size_t len = 0;
        const minicpmo_status st = minicpmo_session_chat(w->session, k_msgs, 1, &g, NULL, NULL, &reply, &len);
        pthread_mutex_lock(&g_count);
        if (st == MINICPMO_OK) {
            const int same = strcmp(reply, w->refs[0]) == 0 || strcmp(reply, w->refs[1]) == 0;
            w->ok += same;
            w->mismatch += !same;
        } else if (st == MINICPMO_ERR_BUSY && strncmp(minicpmo_last_error(), "session is busy", 15) == 0) {
            w->busy += 1;
        } else {
            w->other += 1;
            fprintf(stderr, "unexpected: %s (%s)\n", minicpmo_last_error(), minicpmo_status_name(st));
        }
        pthread_mutex_unlock(&g_count);
        minicpmo_string_free(reply);
        if (st == MINICPMO_OK && i % 3 == 0) minicpmo_session_reset(w->session); /* also may be busy */
    }
    return NULL;
}

typedef struct {
    minicpmo_session * session;
    minicpmo_status inner;
} reentry_state;

static bool reenter(const char * piece, size_t len, void * user_data) {
    (void)piece;
    (void)len;
    reentry_state * r = (reentry_state *)user_data;
    r->inner = minicpmo_session_reset(r->session);
    return false;
}

int main(int argc, char ** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL N_ITERS\n", argv[0]);
        return 2;
    }
    check_params(argv[1]);

    minicpmo_model * model = NULL;
    minicpmo_session * session = NULL;
    if (open_session(argv[1], 1024, 1, "f32", &model, &session) != MINICPMO_OK) return 1;

    /* the two single-threaded float paths of the reply: a cold cache, and the prompt cached */
    char * refs[2] = {NULL, NULL};
    for (int k = 0; k < 2; ++k) {
        minicpmo_generate_params g = greedy(6);
        size_t len = 0;
        if (k == 0) minicpmo_session_reset(session);
        const minicpmo_status st = minicpmo_session_chat(session, k_msgs, 1, &g, NULL, NULL, &refs[k], &len);
        if (st != MINICPMO_OK) return fail("reference chat", st);
        printf("REF %zu %s\n", len, refs[k]);
    }

    worker_state w[2];
    pthread_t t[2];
    for (int k = 0; k < 2; ++k) {
        memset(&w[k], 0, sizeof(w[k]));
        w[k].session = session;
        w[k].iters = atoi(argv[2]);
        w[k].refs[0] = refs[0];
        w[k].refs[1] = refs[1];
        pthread_create(&t[k], NULL, worker, &w[k]);
    }
    for (int k = 0; k < 2; ++k) pthread_join(t[k], NULL);
    printf("THREADS ok=%d busy=%d mismatch=%d other=%d\n", w[0].ok + w[1].ok, w[0].busy + w[1].busy,
           w[0].mismatch + w[1].mismatch, w[0].other + w[1].other);

    reentry_state r = {session, MINICPMO_OK};
    minicpmo_generate_params g = greedy(6);
    const minicpmo_status outer = minicpmo_session_chat(session, k_msgs, 1, &g, reenter, &r, NULL, NULL);
    printf("REENTRY %s %s %s\n", minicpmo_status_name(r.inner), minicpmo_status_name(outer),
           minicpmo_finish_reason_name(minicpmo_session_finish_reason(session)));

    /* finish reasons: the token limit, then a context that fills (n_ctx 256 after libllama's rounding) */
    g = greedy(3);
    minicpmo_status st = minicpmo_session_chat(session, k_msgs, 1, &g, NULL, NULL, NULL, NULL);
    printf("FINISH %s %s\n", minicpmo_finish_reason_name(minicpmo_session_finish_reason(session)),
           minicpmo_status_name(st));
    minicpmo_session_free(session);
    minicpmo_session_params sp = minicpmo_session_default_params();
    sp.n_ctx = 256;
    sp.n_threads = 1;
    if ((st = minicpmo_session_new(model, &sp, &session)) != MINICPMO_OK) return fail("small session", st);
    g = greedy(100000);
    char * reply = NULL;
    size_t len = 0;
    st = minicpmo_session_chat(session, k_msgs, 1, &g, NULL, NULL, &reply, &len);
    printf("FINISH %s %s %d\n", minicpmo_finish_reason_name(minicpmo_session_finish_reason(session)),
           minicpmo_status_name(st), minicpmo_session_n_past(session));
    minicpmo_string_free(reply);
    minicpmo_string_free(refs[0]);
    minicpmo_string_free(refs[1]);
    minicpmo_session_free(session);
    minicpmo_model_free(model);
    return 0;
}
