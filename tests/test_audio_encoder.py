"""The runtime's Whisper encoder, projector and pooling against the numpy reference
(tests/reference/audio.py) on the tiny model's own weights: both attention modes, the official
batch's padding rule, streaming with the key/value cache (simplex and duplex conv context, the
reset at 1500 positions). Mel frames are given directly here; the front end has its own tests."""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing

from audio_weights import smooth_mel
from relative_error import rel
from reference.audio import (AudioReference, StreamingWhisperReference, chat_padding_frames, duplex_chunk,
                             encoder_frame_count, pooled_token_count)
from backend import SESSION, tol

# F32 model vs float32 numpy: only summation order differs (measured ~1e-6); 1e-4 relative leaves
# room for longer sums. F16 matrices round every weight to 11 bits: 1e-2 relative.
# tol(): the test backend's float floor where larger (tests/backend.py; the CPU keeps these)
TOL = {"f32": tol(1e-4), "f16": tol(1e-2)}


@pytest.fixture(scope="module")
def aref(tiny_state):
    sd, cfg = tiny_state
    return AudioReference(sd, cfg["audio_config"]["encoder_attention_heads"])


@pytest.fixture(scope="module")
def sessions(tiny_f32, tiny_f16):
    return {kind: OmniSession(str(paths[0]), n_threads=2, **SESSION, n_ctx=512)
            for kind, paths in (("f32", tiny_f32), ("f16", tiny_f16))}


@pytest.mark.parametrize("kind", ["f32", "f16"])
@pytest.mark.parametrize("mode", ["block", "full"])
@pytest.mark.parametrize("n_frames", [100, 257, 731, 3000])
def test_encoder_matches_reference(sessions, aref, kind, mode, n_frames):
    mel = smooth_mel(n_frames, n_frames)
    tokens, hidden = _testing.hooks(sessions[kind]).audio_encode_mel(mel, mode)
    ref_h = aref.encode(mel, mode)
    ref_t = aref.project_and_pool(ref_h)
    assert hidden.shape == ref_h.shape and tokens.shape == ref_t.shape
    assert rel(hidden, ref_h) < TOL[kind]
    assert rel(tokens, ref_t) < TOL[kind]


@pytest.mark.parametrize("mode", ["block", "full"])
def test_official_batch_padding(sessions, aref, mode):
    """The last piece of a >30-s audio is zero-padded to the batch's 3000 mel frames and its keys
    are limited at its mel-frame count (official quirk): the runtime on the padded piece with that
    key limit equals the reference batch item; block mode needs padding only to the end of the
    piece's last 1-s block."""
    n_mel = 643
    short = smooth_mel(5, n_mel)
    want = aref.batch_embeddings([smooth_mel(6, 3000), short], mode)[1]
    n_tokens = pooled_token_count(encoder_frame_count(n_mel))
    assert want.shape[0] == n_tokens
    pad_to = 3000 if mode == "full" else chat_padding_frames(n_mel, 3000)
    padded = np.zeros((80, pad_to), np.float32)
    padded[:, :n_mel] = short
    tokens, _ = _testing.hooks(sessions["f32"]).audio_encode_mel(padded, mode, key_limit=n_mel)
    assert rel(tokens[:n_tokens], want) < TOL["f32"]
    # the quirk matters: the same piece encoded alone differs
    alone, _ = _testing.hooks(sessions["f32"]).audio_encode_mel(short, mode)
    assert rel(alone[:n_tokens], want) > 1e-3


def test_streaming_simplex_chunks(sessions, aref):
    s = _testing.hooks(sessions["f32"])
    s.audio_stream_reset()
    ref = StreamingWhisperReference(aref)
    mel = smooth_mel(9, 100 * 6)
    for k in range(6):
        chunk = np.ascontiguousarray(mel[:, 100 * k: 100 * (k + 1)])
        tokens, hidden = s.audio_stream_chunk(chunk)
        want_h = ref.push(chunk)
        assert rel(hidden, want_h) < TOL["f32"]
        assert rel(tokens, ref.ref.project_and_pool(want_h)) < TOL["f32"]
        assert s.audio_stream_cache_len == ref.cache_len == 50 * (k + 1)


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_streaming_duplex_context_and_reset(sessions, aref, kind):
    """Duplex chunks carry 2 mel frames of conv context on each side; 31 one-second chunks cross
    the 1500-position table, where the cache restarts (at the 30th chunk: 29 x 50 + 51 >= 1500).
    F16 runs the F16 cache, whose key padding reads positions left over from before the restart."""
    s = _testing.hooks(sessions[kind])
    s.audio_stream_reset()
    ref = StreamingWhisperReference(aref)
    mel = smooth_mel(10, 100 * 31 + 2)
    for k in range(31):
        chunk, prefix, suffix = duplex_chunk(mel, k)
        tokens, hidden = s.audio_stream_chunk(np.ascontiguousarray(chunk), prefix, suffix)
        want_h = ref.push(chunk, prefix, suffix)
        assert rel(hidden, want_h) < TOL[kind], k
        want_t = ref.ref.project_and_pool(want_h)
        assert tokens.shape == want_t.shape == (10, 64)
        assert rel(tokens, want_t) < TOL[kind], k
        assert s.audio_stream_cache_len == ref.cache_len, k
    assert ref.cache_len == 100  # restarted at chunk 29 (0-based): two chunks since


def test_encoder_bad_inputs(sessions):
    s = _testing.hooks(sessions["f32"])
    with pytest.raises(MinicpmoError, match="shape"):
        s.audio_encode_mel(np.zeros((40, 100), np.float32))
    with pytest.raises(MinicpmoError, match="positions"):
        s.audio_encode_mel(np.zeros((80, 3002), np.float32))
    with pytest.raises(MinicpmoError, match="mode"):
        s.audio_encode_mel(np.zeros((80, 100), np.float32), "sideways")
    with pytest.raises(MinicpmoError, match="context"):
        s.audio_stream_chunk(np.zeros((80, 2), np.float32), 4, 0)
