/* A simplex streaming conversation through the public C API (minicpmo_session_streaming_prefill /
 * _generate): a system message, a user turn in two 1-s audio pieces, a greedy spoken reply (audio
 * chunks appended to a raw float32 file), then a text user turn with a text-only reply; each reply
 * is printed as "TURNn <bytes>\n<reply>\n". Then two bad calls, which must be errors, not crashes.
 * Built and run by tests/test_simplex_streaming.py.
 * usage: simplex_stream_demo MODEL AUDIO.f32 (32000 samples) N_PREDICT OUT.f32 */
#include <stdio.h>
#include <stdlib.h>

#include "minicpmo.h"

#define DEMO_NAME "simplex_stream_demo"
#include "demo_common.h"

typedef struct {
    FILE * out;
    int n_chunks;
} sink;

static bool on_audio(const float * samples, size_t n, int32_t rate, void * ud) {
    sink * s = ud;
    fwrite(samples, sizeof(float), n, s->out);
    fprintf(stderr, "CHUNK %zu %d\n", n, (int) rate);
    s->n_chunks += 1;
    return true;
}

static void print_turn(int n, const char * reply, size_t len) {
    printf("TURN%d %zu\n", n, len);
    fwrite(reply, 1, len, stdout);
    printf("\n");
}

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: simplex_stream_demo MODEL AUDIO.f32 N_PREDICT OUT.f32\n");
        return 2;
    }
    static float pcm[32000];
    FILE * f = fopen(argv[2], "rb");
    if (!f || fread(pcm, sizeof(float), 32000, f) != 32000) {
        fprintf(stderr, "simplex_stream_demo: cannot read 32000 samples from %s\n", argv[2]);
        return 1;
    }
    fclose(f);

    minicpmo_model * model = NULL;
    minicpmo_session * session = NULL;
    minicpmo_status st;
    if (open_session(argv[1], 2048, 2, "f32", &model, &session) != MINICPMO_OK) return 1;

    if ((st = minicpmo_session_streaming_prefill(session, "system", "You are a helpful assistant.", NULL, 0, NULL, 0)) !=
        MINICPMO_OK) {
        return fail("system", st);
    }
    minicpmo_audio first = {pcm, 16000}, second = {pcm + 16000, 16000};
    if ((st = minicpmo_session_streaming_prefill(session, "user", "Listen: " MINICPMO_AUDIO_MARKER, NULL, 0, &first, 1)) !=
        MINICPMO_OK) {
        return fail("piece 1", st);
    }
    if ((st = minicpmo_session_streaming_prefill(session, "user", MINICPMO_AUDIO_MARKER, NULL, 0, &second, 1)) !=
        MINICPMO_OK) {
        return fail("piece 2", st);
    }

    minicpmo_generate_params gp = minicpmo_generate_default_params();
    gp.do_sample = false;
    gp.max_new_tokens = atoi(argv[3]);
    gp.max_speech_tokens = 30; /* the tiny random model rarely samples EOS */
    gp.generate_audio = true;
    sink s = {fopen(argv[4], "wb"), 0};
    if (!s.out) return 1;
    char * reply = NULL;
    size_t len = 0;
    st = minicpmo_session_streaming_generate(session, &gp, NULL, NULL, on_audio, &s, &reply, &len);
    fclose(s.out);
    if (st != MINICPMO_OK) return fail("spoken reply", st);
    print_turn(1, reply, len);
    minicpmo_string_free(reply);

    if ((st = minicpmo_session_streaming_prefill(session, "user", "And now?", NULL, 0, NULL, 0)) != MINICPMO_OK) {
        return fail("turn 2", st);
    }
    gp.generate_audio = false;
    st = minicpmo_session_streaming_generate(session, &gp, NULL, NULL, NULL, NULL, &reply, &len);
    if (st != MINICPMO_OK) return fail("text reply", st);
    print_turn(2, reply, len);
    minicpmo_string_free(reply);
    printf("N_PAST %d CHUNKS %d\n", (int) minicpmo_session_n_past(session), s.n_chunks);

    /* no user turn is open any more, and "tool" is not a role */
    st = minicpmo_session_streaming_generate(session, &gp, NULL, NULL, NULL, NULL, NULL, NULL);
    printf("NOTURN:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    st = minicpmo_session_streaming_prefill(session, "tool", "x", NULL, 0, NULL, 0);
    printf("ROLE:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());

    minicpmo_session_free(session);
    minicpmo_model_free(model);
    return 0;
}
