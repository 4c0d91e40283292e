#include "tts/tts_generate.h"

#include <numeric>

#include "core/error.h"

namespace minicpmo {

TtsChatResult generate_chat_speech(TtsDecoder & decoder, const int32_t * text_ids, const float * llm_hidden, int n,
                                   const TtsSampling & sampling, const UniformDraw & draw) {
    const TtsHparams & hp = decoder.model().hparams();
    if (n <= 0) fail(Status::invalid_argument, "there is no text to speak (empty text)");
    decoder.reset();
    std::vector<float> rows = decoder.condition_rows(text_ids, llm_hidden, n);
    const int32_t extra[2] = {hp.text_eos_id, hp.audio_bos_id};
    const std::vector<float> tail = decoder.text_rows(extra, 2);
    rows.insert(rows.end(), tail.begin(), tail.end());
    const int L = n + 2;
    std::vector<int32_t> pos(L);
    std::iota(pos.begin(), pos.end(), 0);

    TtsChatResult out;
    std::vector<int32_t> sampled;
    for (int t = 0; t < sampling.max_new_tokens; ++t) {
        std::vector<float> logits = t == 0 ? decoder.forward_rows(rows.data(), pos.data(), L)
                                           : decoder.forward_code(sampled.back(), L + t - 1);
        TtsStep step;
        step.apply_processors = t > 0;  // the first sample of a call sees only the temperature
        step.mask_eos = t < sampling.min_new_tokens;
        step.eos = hp.audio_eos;
        const int s = tts_sample(logits, sampled, sampling, step, draw);
        sampled.push_back(s);
        if (s == hp.audio_eos) {
            out.finished = true;
            break;
        }
    }
    // as the official code: EOS is not a speech token, and at the limit the last sample is dropped
    out.tokens.assign(sampled.begin(), sampled.end() - 1);
    return out;
}

}  // namespace minicpmo
