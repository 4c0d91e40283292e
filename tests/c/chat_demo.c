/* A tiny C program against the public header: loads a model, chats for two turns and prints the
 * replies. Built and run by tests/test_c_api.py. usage: chat_demo MODEL PROMPT1 PROMPT2 N_PREDICT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minicpmo.h"

#define DEMO_NAME "chat_demo"
#include "demo_common.h"

static bool count_piece(const char * piece, size_t len, void * user_data) {
    (void) piece;
    *(size_t *) user_data += len;
    return true;
}

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: chat_demo MODEL PROMPT1 PROMPT2 N_PREDICT\n");
        return 2;
    }
    minicpmo_model * model = NULL;
    minicpmo_session * session = NULL;
    minicpmo_status st;

    if (open_session(argv[1], 1024, 0, NULL, &model, &session) != MINICPMO_OK) return 1;

    minicpmo_generate_params gp = minicpmo_generate_default_params();
    gp.do_sample = false; /* greedy: comparable with the Python API and the CLI */
    gp.repetition_penalty = 1.0f;
    gp.max_new_tokens = atoi(argv[4]);

    char * reply1 = NULL;
    size_t len1 = 0, streamed = 0;
    minicpmo_message turn1[1] = {{"user", argv[2]}};
    if ((st = minicpmo_session_chat(session, turn1, 1, &gp, count_piece, &streamed, &reply1, &len1)) != MINICPMO_OK) {
        return fail("chat turn 1", st);
    }
    if (streamed != len1) {
        fprintf(stderr, "chat_demo: streamed %zu bytes but the reply has %zu\n", streamed, len1);
        return 1;
    }
    printf("REPLY1 %zu\n", len1);
    fwrite(reply1, 1, len1, stdout);
    printf("\n");

    char * reply2 = NULL;
    size_t len2 = 0;
    minicpmo_message turn2[3] = {{"user", argv[2]}, {"assistant", reply1}, {"user", argv[3]}};
    if ((st = minicpmo_session_chat(session, turn2, 3, &gp, NULL, NULL, &reply2, &len2)) != MINICPMO_OK) {
        return fail("chat turn 2", st);
    }
    printf("REPLY2 %zu\n", len2);
    fwrite(reply2, 1, len2, stdout);
    printf("\n");
    printf("N_PAST:%d\n", minicpmo_session_n_past(session));

    /* errors are reported, not crashes */
    minicpmo_model * bad = NULL;
    minicpmo_model_params mp = minicpmo_model_default_params();
    st = minicpmo_model_load("/nonexistent/model.gguf", &mp, &bad);
    printf("MISSING:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());

    minicpmo_string_free(reply1);
    minicpmo_string_free(reply2);
    minicpmo_session_free(session);
    minicpmo_model_free(model);
    return 0;
}
