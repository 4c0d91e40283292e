/* Audio chat through the public C API: one user turn with an audio (raw float32 16 kHz mono file),
 * greedy; then the low-level path (prefill text + audio + text, generate). Built and run by
 * tests/test_audio_chat.py.  usage: audio_demo MODEL AUDIO.f32 PROMPT N_PREDICT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minicpmo.h"

#define DEMO_NAME "audio_demo"
#include "demo_common.h"

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: audio_demo MODEL AUDIO.f32 PROMPT N_PREDICT\n");
        return 2;
    }
    FILE * f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "audio_demo: cannot open %s\n", argv[2]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    const size_t n = (size_t) ftell(f) / sizeof(float);
    fseek(f, 0, SEEK_SET);
    float * pcm = malloc(n * sizeof(float) + 1);
    if (!pcm || fread(pcm, sizeof(float), n, f) != n) {
        fprintf(stderr, "audio_demo: cannot read %s\n", argv[2]);
        return 1;
    }
    fclose(f);

    minicpmo_model * model = NULL;
    minicpmo_session * session = NULL;
    minicpmo_status st;
    if (open_session(argv[1], 2048, 2, NULL, &model, &session) != MINICPMO_OK) return 1;

    minicpmo_generate_params gp = minicpmo_generate_default_params();
    gp.do_sample = false;
    gp.repetition_penalty = 1.0f;
    gp.max_new_tokens = atoi(argv[4]);

    char content[4096];
    snprintf(content, sizeof content, "%s\n%s", MINICPMO_AUDIO_MARKER, argv[3]);
    minicpmo_message turn[1] = {{"user", content}};
    minicpmo_audio audio = {pcm, n};
    char * reply = NULL;
    size_t len = 0;
    if ((st = minicpmo_session_chat_media(session, turn, 1, NULL, 0, -1, &audio, 1, &gp, NULL, NULL, &reply, &len)) !=
        MINICPMO_OK) {
        return fail("chat", st);
    }
    printf("REPLY %zu\n", len);
    fwrite(reply, 1, len, stdout);
    printf("\nN_PAST:%d\n", minicpmo_session_n_past(session));
    minicpmo_string_free(reply);

    /* the same prompt built piece by piece (the audio template ends with <|tts_bos|>) */
    minicpmo_session_reset(session);
    if ((st = minicpmo_session_prefill_text(session, "<|im_start|>user\n")) != MINICPMO_OK) return fail("prefill", st);
    if ((st = minicpmo_session_prefill_audio(session, &audio)) != MINICPMO_OK) return fail("prefill audio", st);
    char tail[4096];
    snprintf(tail, sizeof tail, "\n%s<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>", argv[3]);
    if ((st = minicpmo_session_prefill_text(session, tail)) != MINICPMO_OK) return fail("prefill", st);
    if ((st = minicpmo_session_generate(session, &gp, NULL, NULL, &reply, &len)) != MINICPMO_OK) return fail("generate", st);
    printf("LOWLEVEL %zu\n", len);
    fwrite(reply, 1, len, stdout);
    printf("\n");
    minicpmo_string_free(reply);

    /* bad audio is a status, not a crash */
    minicpmo_audio empty = {pcm, 0};
    st = minicpmo_session_prefill_audio(session, &empty);
    printf("EMPTY:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    pcm[0] = NAN;
    st = minicpmo_session_prefill_audio(session, &audio);
    printf("NAN:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    minicpmo_audio tiny = {pcm + 1, 160};
    st = minicpmo_session_prefill_audio(session, &tiny);
    printf("SHORT:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    st = minicpmo_session_chat_media(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, NULL, NULL, NULL, NULL);
    printf("COUNT:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());

    minicpmo_session_free(session);
    minicpmo_model_free(model);
    free(pcm);
    return 0;
}
