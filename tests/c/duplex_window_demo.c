/* The duplex sliding window through the C API: text-only units decided greedily, each unit's
 * decision and text printed. Built and run by tests/test_duplex_window.py.
 * usage: duplex_window_demo MODEL N_CTX WINDOW_MODE N_UNITS   (WINDOW_MODE: MINICPMO_WINDOW_*) */
#include <stdio.h>
#include <stdlib.h>

#include "minicpmo.h"

int main(int argc, char ** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: duplex_window_demo MODEL N_CTX WINDOW_MODE N_UNITS\n");
        return 2;
    }
    minicpmo_model * model = NULL;
    minicpmo_session * session = NULL;
    minicpmo_duplex * duplex = NULL;
    minicpmo_status st;

    minicpmo_model_params mp = minicpmo_model_default_params();
    if ((st = minicpmo_model_load(argv[1], &mp, &model)) != MINICPMO_OK) goto failed;
    minicpmo_session_params sp = minicpmo_session_default_params();
    sp.n_ctx = (uint32_t) atoi(argv[2]);
    if ((st = minicpmo_session_new(model, &sp, &session)) != MINICPMO_OK) goto failed;

    minicpmo_duplex_params dp = minicpmo_duplex_default_params();
    dp.generate_audio = false;
    dp.window_mode = atoi(argv[3]);
    dp.context_max_units = 3;
    dp.context_previous_max_tokens = 8;
    if ((st = minicpmo_duplex_new(session, &dp, &duplex)) != MINICPMO_OK) goto failed;
    if ((st = minicpmo_duplex_prepare(duplex, "<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>",
                                      "<|audio_end|><|im_end|>", NULL)) != MINICPMO_OK) {
        goto failed;
    }
    minicpmo_duplex_generate_params gp = minicpmo_duplex_generate_default_params();
    gp.greedy = true;
    gp.max_new_speak_tokens = 7;
    const int n_units = atoi(argv[4]);
    for (int k = 0; k < n_units; ++k) {
        char text[64];
        snprintf(text, sizeof text, "user says %d", k);
        if ((st = minicpmo_duplex_prefill(duplex, NULL, 0, NULL, 0, text)) != MINICPMO_OK) goto failed;
        minicpmo_duplex_unit u = {0};
        if ((st = minicpmo_duplex_generate(duplex, &gp, &u)) != MINICPMO_OK) goto failed;
        printf("UNIT %d %d %zu\n", k, u.is_listen ? 1 : 0, u.text_len);
        fwrite(u.text, 1, u.text_len, stdout);
        printf("\n");
        minicpmo_duplex_unit_clear(&u);
    }
    minicpmo_duplex_free(duplex);
    minicpmo_session_free(session);
    minicpmo_model_free(model);
    return 0;

failed:
    printf("FAILED %s\n", minicpmo_status_name(st));
    fprintf(stderr, "duplex_window_demo: %s\n", minicpmo_last_error());
    if (duplex) minicpmo_duplex_free(duplex);
    if (session) minicpmo_session_free(session);
    if (model) minicpmo_model_free(model);
    return 1;
}
