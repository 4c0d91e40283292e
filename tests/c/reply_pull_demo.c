/* Replies pulled step by step through the public C API (minicpmo_session_start_reply,
 * minicpmo_reply_next), next to the callback calls they must agree with. Greedy text and speech.
 * Prints one line per check; tests/test_reply_pull.py reads them.
 * usage: reply_pull_demo MODEL PROMPT N_PREDICT OUT_DIR
 * Writes OUT_DIR/{pull_streamed,callback_streamed,pull_whole,callback_whole}.f32 (raw float32). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minicpmo.h"

#define DEMO_NAME "reply_pull_demo"
#include "demo_common.h"

typedef struct {
    FILE * out;
    size_t n_samples;
} sink;

static bool keep_audio(const float * samples, size_t n, int32_t rate, void * ud) {
    (void) rate;
    sink * s = ud;
    fwrite(samples, sizeof(float), n, s->out);
    s->n_samples += n;
    return true;
}

static FILE * open_out(const char * dir, const char * name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    return fopen(path, "wb");
}

/* Pulls a reply to its end: its text into `text` (NUL-terminated), its audio to `audio` (may be
 * NULL); `stop_after_pieces` > 0 calls minicpmo_reply_stop after that many text pieces and
 * `stop_in_speech` after the text is done. Returns the number of steps, or -1 after an error. */
static int pull(minicpmo_reply * r, char * text, size_t cap, FILE * audio, int stop_after_pieces, bool stop_in_speech,
                size_t * n_audio) {
    size_t used = 0;
    int steps = 0, pieces = 0;
    *n_audio = 0;
    text[0] = '\0';
    for (minicpmo_reply_chunk c = {0}; !c.done; ++steps) {
        minicpmo_status st = minicpmo_reply_next(r, &c);
        if (st != MINICPMO_OK) return -1;
        if (c.text_len > 0 && used + c.text_len < cap) {
            memcpy(text + used, c.text, c.text_len);
            used += c.text_len;
            text[used] = '\0';
            if (++pieces == stop_after_pieces) minicpmo_reply_stop(r);
        }
        if (c.audio) {
            if (audio) fwrite(c.audio, sizeof(float), c.n_audio, audio);
            *n_audio += c.n_audio;
            if (c.sample_rate != 24000) return -1;
        }
        if (stop_in_speech && minicpmo_reply_finish_reason(r) != MINICPMO_FINISH_NONE) minicpmo_reply_stop(r);
    }
    return steps;
}

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: reply_pull_demo MODEL PROMPT N_PREDICT OUT_DIR\n");
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
    static char text[65536];
    size_t n_audio = 0;
    minicpmo_reply * r = NULL;

    /* text only: the same reply as minicpmo_session_chat */
    char * reply = NULL;
    size_t len = 0;
    if ((st = minicpmo_session_chat(session, turn, 1, &gp, NULL, NULL, &reply, &len)) != MINICPMO_OK) return fail("chat", st);
    minicpmo_session_reset(session);
    if ((st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, MINICPMO_SPEECH_NONE, NULL, &r)) !=
        MINICPMO_OK) {
        return fail("start_reply", st);
    }
    if (pull(r, text, sizeof text, NULL, 0, false, &n_audio) < 0) return fail("reply_next", MINICPMO_ERR_INTERNAL);
    printf("TEXT_SAME %d AUDIO %zu FINISH %s\n", strcmp(text, reply) == 0, n_audio,
           minicpmo_finish_reason_name(minicpmo_reply_finish_reason(r)));
    minicpmo_reply_free(r);
    minicpmo_string_free(reply);

    /* streamed speech: the same text and chunks as minicpmo_session_chat_spoken */
    /* each speech run on a fresh session and model: Token2Wav's noise starts at the same state */
    minicpmo_session_free(session);
    minicpmo_model_free(model);
    if (open_session(argv[1], 2048, 2, "f32", &model, &session) != MINICPMO_OK) return 1;
    sink cb = {open_out(argv[4], "callback_streamed"), 0};
    if ((st = minicpmo_session_chat_spoken(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, NULL, NULL, keep_audio, &cb, &reply,
                                           &len)) != MINICPMO_OK) {
        return fail("chat_spoken", st);
    }
    fclose(cb.out);
    minicpmo_session_free(session);
    minicpmo_model_free(model);
    if (open_session(argv[1], 2048, 2, "f32", &model, &session) != MINICPMO_OK) return 1;
    FILE * out = open_out(argv[4], "pull_streamed");
    if ((st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, MINICPMO_SPEECH_STREAMED, NULL,
                                           &r)) != MINICPMO_OK) {
        return fail("start_reply streamed", st);
    }
    if (pull(r, text, sizeof text, out, 0, false, &n_audio) < 0) return fail("reply_next streamed", MINICPMO_ERR_INTERNAL);
    fclose(out);
    printf("STREAMED_TEXT_SAME %d SAMPLES %zu %zu\n", strcmp(text, reply) == 0, n_audio, cb.n_samples);
    minicpmo_reply_free(r);
    minicpmo_string_free(reply);

    /* whole speech: the text of minicpmo_session_chat with generate_audio, then the waveform of
     * minicpmo_session_speak_reply (seed 0: greedy speech tokens, the session's noise) */
    minicpmo_generate_params spoken = gp;
    spoken.generate_audio = true;
    minicpmo_session_free(session);
    minicpmo_model_free(model);
    if (open_session(argv[1], 2048, 2, "f32", &model, &session) != MINICPMO_OK) return 1;
    sink whole = {open_out(argv[4], "callback_whole"), 0};
    if ((st = minicpmo_session_chat(session, turn, 1, &spoken, NULL, NULL, &reply, &len)) != MINICPMO_OK) {
        return fail("chat spoken template", st);
    }
    if ((st = minicpmo_session_speak_reply(session, NULL, 0, 30, keep_audio, &whole)) != MINICPMO_OK) {
        return fail("speak_reply", st);
    }
    fclose(whole.out);
    minicpmo_session_free(session);
    minicpmo_model_free(model);
    if (open_session(argv[1], 2048, 2, "f32", &model, &session) != MINICPMO_OK) return 1;
    out = open_out(argv[4], "pull_whole");
    if ((st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &spoken, MINICPMO_SPEECH_WHOLE, NULL,
                                           &r)) != MINICPMO_OK) {
        return fail("start_reply whole", st);
    }
    if (pull(r, text, sizeof text, out, 0, false, &n_audio) < 0) return fail("reply_next whole", MINICPMO_ERR_INTERNAL);
    fclose(out);
    printf("WHOLE_TEXT_SAME %d SAMPLES %zu %zu\n", strcmp(text, reply) == 0, n_audio, whole.n_samples);
    minicpmo_reply_free(r);

    /* a stop while the text is decoded ends the text there; its speech still comes */
    minicpmo_session_reset(session);
    if ((st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &spoken, MINICPMO_SPEECH_WHOLE, NULL,
                                           &r)) != MINICPMO_OK) {
        return fail("start_reply stop", st);
    }
    if (pull(r, text, sizeof text, NULL, 2, false, &n_audio) < 0) return fail("reply_next stop", MINICPMO_ERR_INTERNAL);
    printf("STOP_TEXT_PREFIX %d SHORTER %d AUDIO %d FINISH %s\n", strncmp(text, reply, strlen(text)) == 0,
           strlen(text) < strlen(reply), n_audio > 0, minicpmo_finish_reason_name(minicpmo_reply_finish_reason(r)));
    minicpmo_reply_free(r);

    /* a stop once the text is done drops the speech */
    minicpmo_session_reset(session);
    if ((st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &spoken, MINICPMO_SPEECH_WHOLE, NULL,
                                           &r)) != MINICPMO_OK) {
        return fail("start_reply stop speech", st);
    }
    if (pull(r, text, sizeof text, NULL, 0, true, &n_audio) < 0) return fail("reply_next stop speech", MINICPMO_ERR_INTERNAL);
    printf("STOP_SPEECH_TEXT_SAME %d AUDIO %zu FINISH %s\n", strcmp(text, reply) == 0, n_audio,
           minicpmo_finish_reason_name(minicpmo_reply_finish_reason(r)));
    minicpmo_reply_free(r);
    minicpmo_string_free(reply);

    /* another chat abandons a reply: its next step fails by name; freeing it leaves the new one be */
    minicpmo_reply * first = NULL;
    minicpmo_session_reset(session);
    if ((st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, MINICPMO_SPEECH_NONE, NULL,
                                           &first)) != MINICPMO_OK) {
        return fail("start_reply first", st);
    }
    minicpmo_reply_chunk c;
    if ((st = minicpmo_reply_next(first, &c)) != MINICPMO_OK) return fail("reply_next first", st);
    if ((st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, MINICPMO_SPEECH_NONE, NULL, &r)) !=
        MINICPMO_OK) {
        return fail("start_reply second", st);
    }
    st = minicpmo_reply_next(first, &c);
    printf("ABANDONED:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    minicpmo_reply_free(first);
    if (pull(r, text, sizeof text, NULL, 0, false, &n_audio) < 0) return fail("reply_next second", MINICPMO_ERR_INTERNAL);
    if ((st = minicpmo_session_chat(session, turn, 1, &gp, NULL, NULL, &reply, &len)) != MINICPMO_OK) return fail("chat", st);
    printf("SECOND_SAME %d FINISH %s\n", strcmp(text, reply) == 0,
           minicpmo_finish_reason_name(minicpmo_reply_finish_reason(r)));
    minicpmo_reply_free(r);
    minicpmo_string_free(reply);

    /* bad arguments are errors, not crashes */
    st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &gp, (minicpmo_speech) 7, NULL, &r);
    printf("BADSPEECH:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    st = minicpmo_session_start_reply(session, turn, 1, NULL, 0, -1, NULL, 0, &spoken, MINICPMO_SPEECH_WHOLE, "nobody", &r);
    printf("VOICE:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    st = minicpmo_reply_next(NULL, &c);
    printf("NULLREPLY:%s\n", minicpmo_status_name(st));
    minicpmo_reply_stop(NULL);
    minicpmo_reply_free(NULL);

    minicpmo_session_free(session);
    minicpmo_model_free(model);
    return 0;
}
