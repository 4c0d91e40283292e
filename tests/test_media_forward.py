"""OmniSession.forward_messages: logits and final-norm hidden states of every position of a chat
prompt with images and audio (csrc/session/media_forward.cpp), on the tiny F32 model with an F32
KV cache.

References: the float64 numpy Qwen3 (tests/reference/qwen3.py) run on an embedding sequence
composed here from the checkpoint's token-embedding table with the runtime's ``encode_image`` /
``encode_audio`` rows (checked against their own references in test_vision_chat.py /
test_audio_chat.py) placed at the <unk> positions; ``forward(prompt_token_ids(msgs))`` for text;
the output head applied to the returned hidden states; and chat's own prefill.
Metric: rel = max|runtime - ref| / max|ref| (``rel`` of test_llm_logits.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing

from audio_inputs import speechlike
from test_llm_logits import F32_REL_TOL, rel
from backend import SESSION, tol

UNK = 128244  # <unk>: the placeholder token of image and audio rows (spec §1.3, §3.3)


@pytest.fixture(scope="module")
def fsession(tiny_f32):
    return OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=4096, seed=0, kv_cache_type="f32")


def _image(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 127 // (w + h - 2)], -1)
    return np.clip(base + rng.integers(-40, 41, size=(h, w, 3)), 0, 255).astype(np.uint8)


TEXT_MSGS = [{"role": "system", "content": "You are tiny."},
             {"role": "user", "content": "Hello, world! 12"}]


def _media_cases():
    sliced = _image(640, 480, seed=1)   # 1 + 2 slices: 192 rows
    small = _image(448, 448, seed=2)    # not sliced: 64 rows
    a1, a2 = speechlike(1.3, 3), speechlike(0.7, 4)
    return {
        "image+audio": ([{"role": "user", "content": [sliced, "What is this?", a1, "and this?"]}],
                        [("image", sliced), ("audio", a1)]),
        "audio, reply, two images": ([{"role": "user", "content": [a2, "Hi"]},
                                      {"role": "assistant", "content": "Hello."},
                                      {"role": "user", "content": [small, sliced, "Compare."]}],
                                     [("audio", a2), ("image", small), ("image", sliced)]),
    }


MEDIA_CASES = _media_cases()


def _composed_embeddings(session, tiny_ref, ids, media):
    """Token embeddings of the checkpoint with the encoders' rows, in prompt order, at the <unk>s."""
    rows = np.concatenate([session.encode_image(x) if kind == "image" else session.encode_audio(x)
                           for kind, x in media])
    embd = tiny_ref.embed[np.asarray(ids)].copy()
    at = np.flatnonzero(np.asarray(ids) == UNK)
    assert at.size == rows.shape[0]
    embd[at] = rows
    return embd, at


def test_text_only_equals_forward_of_prompt_ids(fsession, tiny_ref):
    """(a) No media: the same decode as forward(prompt_token_ids(msgs)); both against the reference."""
    ids = fsession.prompt_token_ids(TEXT_MSGS)
    logits, hidden = fsession.forward(ids)
    r = fsession.forward_messages(TEXT_MSGS)
    assert r.token_ids.dtype == np.int32 and r.token_ids.tolist() == ids
    assert r.media_mask.dtype == np.bool_ and not r.media_mask.any()
    assert r.logits.shape == logits.shape and r.hidden.shape == hidden.shape
    # one code path (forward_prompt) on the same ids: only a rerun, deterministic
    assert rel(r.logits, logits.astype(np.float64)) < tol(1e-6)  # one backend, two batch layouts
    assert rel(r.hidden, hidden.astype(np.float64)) < tol(1e-6)
    ref_logits, ref_hidden = tiny_ref.forward(ids)
    assert rel(r.logits, ref_logits) < F32_REL_TOL  # float32 libllama vs float64 numpy (test_llm_logits)
    assert rel(r.hidden, ref_hidden) < F32_REL_TOL
    # add_generation_prompt=False: the prompt without "<|im_start|>assistant\n..." is a prefix
    p = fsession.forward_messages(TEXT_MSGS, add_generation_prompt=False)
    n = p.token_ids.size
    assert n < len(ids) and p.token_ids.tolist() == ids[:n]
    assert rel(p.hidden, r.hidden[:n].astype(np.float64)) < tol(1e-5)  # causal: same prefix, other batch


@pytest.mark.parametrize("case", list(MEDIA_CASES))
def test_media_prompt_matches_composed_reference(fsession, tiny_ref, case):
    """(b) Every position's logits and hidden states = the numpy reference on the composed
    embedding sequence; ids = chat's prompt ids; the mask marks exactly the <unk> rows."""
    msgs, media = MEDIA_CASES[case]
    r = fsession.forward_messages(msgs)
    ids = fsession.prompt_token_ids(msgs)
    assert r.token_ids.tolist() == ids
    embd, at = _composed_embeddings(fsession, tiny_ref, ids, media)
    assert np.array_equal(np.flatnonzero(r.media_mask), at)
    ref_logits, ref_hidden = tiny_ref.forward_embeddings(embd)
    assert r.logits.shape == ref_logits.shape and r.hidden.shape == ref_hidden.shape
    el, eh = rel(r.logits, ref_logits), rel(r.hidden, ref_hidden)
    print(f"{case}: {len(ids)} positions ({at.size} media): logits rel {el:.3e}, hidden rel {eh:.3e}")
    assert el < F32_REL_TOL  # float32 runtime vs float64 reference, as test_llm_logits
    assert eh < F32_REL_TOL
    # the media rows matter: the reference on plain <unk> embeddings is far off
    plain_logits, _ = tiny_ref.forward(ids)
    assert rel(r.logits, plain_logits) > 100 * F32_REL_TOL


def test_hidden_states_give_the_logits(fsession, tiny_ref):
    """(c) The output head applied to the returned hidden states gives the returned logits, at the
    last position and everywhere; logits=False returns the same hidden states and no logits."""
    msgs, _ = MEDIA_CASES["image+audio"]
    r = fsession.forward_messages(msgs)
    head = tiny_ref.lm_head  # the checkpoint's output matrix (the F32 GGUF stores it exactly)
    # float32 matmul in libllama vs float64 here on the same float32 inputs: ~1e-7
    assert rel(r.logits[-1], r.hidden[-1].astype(np.float64) @ head.T) < 1e-5
    assert rel(r.logits, r.hidden.astype(np.float64) @ head.T) < 1e-5
    h = fsession.forward_messages(msgs, logits=False)
    assert h.logits is None
    assert np.array_equal(h.token_ids, r.token_ids) and np.array_equal(h.media_mask, r.media_mask)
    assert rel(h.hidden, r.hidden.astype(np.float64)) < 1e-6  # the same decode again


def test_last_position_equals_chat_prefill(fsession):
    """The last position's logits = what chat's prefill leaves for the first reply token (the same
    runs of tokens and rows, decoded with one output instead of all)."""
    msgs, _ = MEDIA_CASES["audio, reply, two images"]
    r = fsession.forward_messages(msgs)
    fsession.reset()
    fsession.chat(msgs, max_new_tokens=0)
    assert fsession.last_prefill == (0, r.token_ids.size)
    got = _testing.hooks(fsession).last_logits()[0]
    assert rel(got, r.logits[-1].astype(np.float64)) < 1e-5  # same float32 kernels; batch shape only


def test_chat_after_forward_is_unchanged(fsession):
    """(d) forward_messages clears the conversation: the next chat prefills from the start and
    gives the greedy reply of a fresh session's chat (same float path, so equal exactly)."""
    msgs, _ = MEDIA_CASES["image+audio"]
    other, _ = MEDIA_CASES["audio, reply, two images"]
    fsession.reset()
    want = fsession.chat(msgs, do_sample=False, max_new_tokens=12)
    want_ids = fsession.last_generated_ids
    # mid-conversation: a turn in the cache, then a forward of another prompt, then the chat
    fsession.chat(other, do_sample=False, max_new_tokens=3)
    fsession.forward_messages(other)
    assert fsession.n_past == 0
    got = fsession.chat(msgs, do_sample=False, max_new_tokens=12)
    assert fsession.last_prefill == (0, len(fsession.prompt_token_ids(msgs)))
    assert got == want and fsession.last_generated_ids == want_ids
    # the same prompt forwarded right before: still nothing reused from it
    fsession.forward_messages(msgs)
    assert fsession.chat(msgs, do_sample=False, max_new_tokens=12) == want
    assert fsession.last_prefill[0] == 0


def test_bad_inputs_leave_the_session_usable(tiny_f32, fsession):
    s = fsession
    with pytest.raises(MinicpmoError, match="image placeholder"):
        s.forward_messages([{"role": "user", "content": "<image>./</image> with no image"}])
    with pytest.raises(MinicpmoError, match="too short"):
        s.forward_messages([{"role": "user", "content": [np.zeros(100, np.float32), "hi"]}])
    with pytest.raises(MinicpmoError):
        s.forward_messages([{"role": "user", "content": [np.zeros((4, 4, 3), np.float64), "hi"]}])
    small = OmniSession(str(tiny_f32[0]), n_threads=1, **SESSION, n_ctx=64, kv_cache_type="f32")
    big = [{"role": "user", "content": [_image(1920, 1080, seed=5), "hi"]}]  # 576 image rows
    assert len(small.prompt_token_ids(big)) > small.n_ctx
    with pytest.raises(MinicpmoError, match="does not fit"):
        small.forward_messages(big)
    assert small.n_past == 0
    assert small.forward_messages(TEXT_MSGS).hidden.shape[0] == len(small.prompt_token_ids(TEXT_MSGS))
    assert isinstance(s.chat(TEXT_MSGS, do_sample=False, max_new_tokens=2), str)


def test_c_api_matches_python(tiny_f32, fsession, tmp_path):
    """minicpmo_session_forward_media (tests/c/forward_media_demo.c): the length query, a too small
    buffer refused before any work, and outputs equal to forward_messages (same C++ path, same
    settings: 1e-6 allows only a rerun's difference)."""
    import subprocess

    from c_demos import build_c_demo

    img, pcm = _image(640, 480, seed=7), speechlike(0.9, 8)
    (tmp_path / "img.rgb").write_bytes(img.tobytes())
    (tmp_path / "pcm.f32").write_bytes(pcm.astype(np.float32).tobytes())
    exe = build_c_demo("forward_media_demo", tmp_path)
    res = subprocess.run([str(exe), str(tiny_f32[0]), str(tmp_path / "img.rgb"), "640", "480",
                          str(tmp_path / "pcm.f32"), "What do you see and hear?", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r = fsession.forward_messages([{"role": "user", "content": [img, "What do you see and hear?", pcm]}])
    n = r.token_ids.size
    lines = res.stdout.splitlines()
    assert lines[0] == f"N {n}"
    assert lines[1].startswith(f"SMALL invalid argument {n} the prompt has {n} positions but the output buffers hold {n - 1}")
    n_vocab, n_embd = r.logits.shape[1], r.hidden.shape[1]
    assert lines[2] == f"OUT {n} N_EMBD {n_embd} N_VOCAB {n_vocab} N_PAST 0"
    tokens = np.fromfile(tmp_path / "tokens.i32", np.int32)
    media = np.fromfile(tmp_path / "media.u8", np.uint8)
    logits = np.fromfile(tmp_path / "logits.f32", np.float32).reshape(n, n_vocab)
    hidden = np.fromfile(tmp_path / "hidden.f32", np.float32).reshape(n, n_embd)
    assert np.array_equal(tokens, r.token_ids) and np.array_equal(media.astype(bool), r.media_mask)
    assert rel(logits, r.logits.astype(np.float64)) < 1e-6
    assert rel(hidden, r.hidden.astype(np.float64)) < 1e-6
