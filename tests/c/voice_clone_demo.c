/* A voice cloned at run time through the public C API (minicpmo_voice_from_pcm): the reference is a
 * raw float32 mono file at RATE Hz; prints the voice's name and prompt (tokens, x-vector, mel sizes),
 * speaks one seeded reply with it (audio appended to OUT.f32), then checks that a freed voice can no
 * longer be named and that bad references are errors, not crashes.
 * Built and run by tests/test_voice_clone.py.  usage: voice_clone_demo MODEL REF.f32 RATE PROMPT OUT.f32 */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "minicpmo.h"

#define DEMO_NAME "voice_clone_demo"
#include "demo_common.h"

static float * read_f32(const char * path, size_t * n) {
    FILE * f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    float * pcm = malloc(bytes > 0 ? (size_t) bytes : 1);
    *n = fread(pcm, sizeof(float), (size_t) bytes / sizeof(float), f);
    fclose(f);
    return pcm;
}

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: voice_clone_demo MODEL REF.f32 RATE PROMPT OUT.f32\n");
        return 2;
    }
    minicpmo_model * model = NULL;
    minicpmo_session * session = NULL;
    minicpmo_status st;
    if (open_session(argv[1], 2048, 2, "f32", &model, &session) != MINICPMO_OK) return 1;
    size_t n = 0;
    float * pcm = read_f32(argv[2], &n);
    if (!pcm) return 1;

    minicpmo_voice * voice = NULL;
    if ((st = minicpmo_voice_from_pcm(model, pcm, n, atoi(argv[3]), 2, &voice)) != MINICPMO_OK) return fail("clone", st);
    const int32_t * tokens = NULL;
    const float * spk = NULL;
    size_t n_tokens = 0, spk_dim = 0, n_frames = 0;
    int32_t n_mel = 0;
    if ((st = minicpmo_voice_prompt(voice, &tokens, &n_tokens, &spk, &spk_dim, NULL, &n_frames, &n_mel)) != MINICPMO_OK) {
        return fail("prompt", st);
    }
    printf("NAME %s\nSIZES %zu %zu %zu %d\nTOKENS", minicpmo_voice_name(voice), n_tokens, spk_dim, n_frames, (int) n_mel);
    for (size_t i = 0; i < n_tokens; ++i) printf(" %d", (int) tokens[i]);
    printf("\n");

    minicpmo_generate_params gp = minicpmo_generate_default_params();
    /* sampled with a fixed seed, which also fixes the flow's and the vocoder's noise (as the test's Python side) */
    gp.do_sample = true;
    gp.temperature = 0.7f;
    gp.top_p = 0.8f;
    gp.top_k = 100;
    gp.seed = 7;
    gp.repetition_penalty = 1.0f;
    gp.max_new_tokens = 8;
    gp.max_speech_tokens = 30; /* the tiny random model rarely samples EOS */
    minicpmo_message turn[1] = {{"user", argv[4]}};
    FILE * out = fopen(argv[5], "wb");
    if (!out) return 1;
    minicpmo_reply * reply = NULL; /* the whole utterance at the end, as Python's chat(generate_audio=True) */
    st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, MINICPMO_SPEECH_WHOLE,
                                      minicpmo_voice_name(voice), &reply);
    if (st != MINICPMO_OK) return fail("start_reply", st);
    for (minicpmo_reply_chunk c = {0}; !c.done;) {
        if ((st = minicpmo_reply_next(reply, &c)) != MINICPMO_OK) return fail("reply_next", st);
        if (c.audio) fwrite(c.audio, sizeof(float), c.n_audio, out);
    }
    minicpmo_reply_free(reply);
    fclose(out);

    /* a freed voice is gone; its name is never reused */
    char name[64];
    snprintf(name, sizeof name, "%s", minicpmo_voice_name(voice));
    minicpmo_voice_free(voice);
    st = minicpmo_model_check_voice(model, name);
    printf("FREED:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    /* too short, NaN and a bad rate are errors */
    st = minicpmo_voice_from_pcm(model, pcm, 100, atoi(argv[3]), 2, &voice);
    printf("SHORT:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    pcm[n / 2] = NAN;
    st = minicpmo_voice_from_pcm(model, pcm, n, atoi(argv[3]), 2, &voice);
    printf("NAN:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    st = minicpmo_voice_from_pcm(model, pcm, n, 0, 2, &voice);
    printf("RATE:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    st = minicpmo_voice_from_pcm(model, NULL, n, 16000, 2, &voice);
    printf("NULL:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    minicpmo_voice_free(NULL);

    free(pcm);
    minicpmo_session_free(session);
    minicpmo_model_free(model);
    return 0;
}
