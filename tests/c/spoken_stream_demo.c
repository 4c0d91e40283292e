/* A streamed spoken reply through the public C API (minicpmo_session_chat_spoken): greedy text and
 * speech tokens, the text pieces to stdout, every audio chunk appended to a raw float32 file and
 * its size listed; then the same request stopped by the audio callback after its first chunk.
 * Built and run by tests/test_spoken_stream.py.  usage: spoken_stream_demo MODEL PROMPT N_PREDICT OUT.f32 */
#include <stdio.h>
#include <stdlib.h>

#include "minicpmo.h"

#define DEMO_NAME "spoken_stream_demo"
#include "demo_common.h"

typedef struct {
    FILE * out;
    int n_chunks;
    int stop_after; /* 0 = never */
} sink;

static bool on_text(const char * piece, size_t len, void * ud) {
    (void) ud;
    fwrite(piece, 1, len, stdout);
    return true;
}

static bool on_audio(const float * samples, size_t n, int32_t rate, void * ud) {
    sink * s = ud;
    if (s->out) fwrite(samples, sizeof(float), n, s->out);
    fprintf(stderr, "CHUNK %zu %d\n", n, (int) rate);
    s->n_chunks += 1;
    return s->stop_after == 0 || s->n_chunks < s->stop_after;
}

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: spoken_stream_demo MODEL PROMPT N_PREDICT OUT.f32\n");
        return 2;
    }
    minicpmo_model * model = NULL;
    minicpmo_session * session = NULL;
    minicpmo_status st;
    if (open_session(argv[1], 2048, 2, "f32", &model, &session) != MINICPMO_OK) return 1;

    minicpmo_generate_params gp = minicpmo_generate_default_params();
    gp.do_sample = false;
    gp.repetition_penalty = 1.0f;
    gp.max_new_tokens = atoi(argv[3]);
    gp.max_speech_tokens = 30; /* the tiny random model rarely samples EOS */
    minicpmo_message turn[1] = {{"user", argv[2]}};

    sink s = {fopen(argv[4], "wb"), 0, 0};
    if (!s.out) return 1;
    size_t len = 0;
    st = minicpmo_session_chat_spoken(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, NULL, on_text, on_audio, &s, NULL,
                                      &len);
    fclose(s.out);
    if (st != MINICPMO_OK) return fail("chat_spoken", st);
    printf("\nREPLY_BYTES %zu CHUNKS %d\n", len, s.n_chunks);

    /* an audio callback returning false stops the reply at once */
    minicpmo_session_reset(session);
    sink stop = {NULL, 0, 1};
    st = minicpmo_session_chat_spoken(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, NULL, NULL, on_audio, &stop, NULL,
                                      NULL);
    printf("STOPPED %s %d\n", minicpmo_status_name(st), stop.n_chunks);

    /* an unknown voice and a missing callback are errors, not crashes */
    st = minicpmo_session_chat_spoken(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, "nobody", NULL, on_audio, &stop,
                                      NULL, NULL);
    printf("VOICE:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    st = minicpmo_session_chat_spoken(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, NULL, NULL, NULL, NULL, NULL, NULL);
    printf("NOCALLBACK:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());

    minicpmo_session_free(session);
    minicpmo_model_free(model);
    return 0;
}
