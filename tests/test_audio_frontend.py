"""Audio front end of MiniCPM-o 4.5 in C++ (csrc/audio: log-mel batch path §3.1, streaming mel §3.4)
against the independent numpy reference (tests/reference/audio_frontend.py) and, for the batch path,
against transformers' WhisperFeatureExtractor called the way the official processor calls it.

Mel filters come from the numpy Slaney reference (tests/reference/mel_filters.py; the bank
a.mel_filters holds, equal to transformers' mel_filter_bank to 1e-14, see test_convert_audio.py),
(80, 201); the C++ side gets them as float32 like the GGUF tensor.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from minicpmo_cpp import _core, _testing
from reference.audio_frontend import StreamingMelReference, batch_log_mel, log10_mel_frames
from reference.mel_filters import slaney_mel_filters

SR, HOP, N_FFT, PIECE = 16000, 160, 400, 480000

# Both sides compute in float64 and round once to float32 (values lie in [-1.5, 1.5], so one
# rounding is <= 6e-8); the C++ side sees float32 filters, which moves log10 by ~1e-8. Measured max:
# 6.4e-8 against the reference, 1.2e-7 against the extractor's numpy path (it also rounds to
# float32). 1e-5 (the task's bound) still catches any wrong window, padding, frame or clip: those
# move values by 1e-3 or more.
TOL = 1e-5


def whisper_filters(n_fft: int = N_FFT) -> np.ndarray:
    return slaney_mel_filters(n_fft // 2 + 1, 80, SR, 0.0, 8000.0)


FILTERS64 = whisper_filters()
FILTERS = FILTERS64.astype(np.float32)


def speech_like(n: int, seed: int = 0) -> np.ndarray:
    """A gliding tone with harmonics, noise, a loudness ramp and gaps of exact silence: every part of
    the clip (the floor, the dynamic range, all bands) is exercised."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f0 = 180.0 + 60.0 * np.sin(2 * np.pi * 0.4 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(0.3 / k * np.sin(k * phase) for k in range(1, 6))
    x = x * (0.2 + np.abs(np.sin(2 * np.pi * 0.23 * t))) + 0.02 * rng.standard_normal(n)
    x[(np.sin(2 * np.pi * 0.7 * t + 1.0) < -0.6)] = 0.0  # silent gaps
    return x.astype(np.float32)


# ------------------------------------------------------------------------------------ batch path

# 1 sample .. 10 ms, 1 s, 1.035 s, 7.3 s, exactly 30 s, 30 s + 1 sample, 65 s
LENGTHS = [1, 2, 37, 159, 160, 161, 399, 400, 401, 16000, 16560, 116800, 480000, 480001, 1040000]


@pytest.mark.parametrize("n", LENGTHS)
def test_batch_matches_numpy_reference(n):
    x = speech_like(n, seed=n)
    mel, pieces = _testing.log_mel(x, FILTERS, return_pieces=True)
    ref, ref_pieces = batch_log_mel(x, FILTERS64)
    # per 30-s piece: ceil(n_piece / hop) frames
    expected = [math.ceil(min(PIECE, n - s) / HOP) for s in range(0, n, PIECE)]
    assert list(pieces) == ref_pieces == expected
    assert mel.shape == ref.shape == (80, sum(expected))
    assert mel.dtype == np.float32
    np.testing.assert_allclose(mel, ref, rtol=0, atol=TOL)


def test_batch_silence_is_the_floor():
    # all-zero audio: every band is log10(1e-10) = -10 -> (-10 + 4) / 4 = -1.5 exactly
    mel = _testing.log_mel(np.zeros(20000, np.float32), FILTERS)
    assert mel.shape == (80, 125)
    np.testing.assert_array_equal(mel, np.float32(-1.5))


def test_batch_pieces_are_independent():
    # 30 s + 5 s: the second piece is clipped at its own max and zero-padded on its own, so its
    # frames equal the log-mel of those 5 s alone
    x = speech_like(PIECE + 80000, seed=3)
    whole = _testing.log_mel(x, FILTERS)
    tail = _testing.log_mel(np.ascontiguousarray(x[PIECE:]), FILTERS)
    np.testing.assert_array_equal(whole[:, 3000:], tail)
    np.testing.assert_array_equal(whole[:, :3000], _testing.log_mel(np.ascontiguousarray(x[:PIECE]), FILTERS))


@pytest.mark.parametrize("n_fft", [512, 300, 401])
def test_batch_other_fft_sizes(n_fft):
    # 512 = radix 4 and 2 only, 300 -> 150 = 2*3*5*5 (radix 3), 401 is prime (odd: complex FFT +
    # direct DFT); a 1-s piece keeps the numpy reference fast
    f64 = whisper_filters(n_fft)
    x = speech_like(2 * SR + 123, seed=n_fft)
    mel = _testing.log_mel(x, f64.astype(np.float32), n_fft=n_fft, hop=HOP, chunk_samples=SR)
    ref, _ = batch_log_mel(x, f64, chunk_samples=SR, n_fft=n_fft, hop=HOP)
    np.testing.assert_allclose(mel, ref, rtol=0, atol=TOL)


def whisper_extractor_features(x: np.ndarray, use_torch: bool, monkeypatch) -> np.ndarray:
    """The official processor's batch path: 30-s pieces, each through WhisperFeatureExtractor with
    padding="max_length", cut to attention_mask.sum() frames, concatenated in time."""
    import transformers.models.whisper.feature_extraction_whisper as fw

    fe = fw.WhisperFeatureExtractor(feature_size=80, sampling_rate=SR, hop_length=HOP, chunk_length=30, n_fft=N_FFT)
    # the same Slaney formula evaluated by other float64 code: measured 5e-15 relative -> 1e-12
    np.testing.assert_allclose(fe.mel_filters.T, FILTERS64, rtol=0, atol=1e-12 * FILTERS64.max())
    # the extractor picks its float32 torch STFT when torch is importable, else the numpy one
    monkeypatch.setattr(fw, "is_torch_available", lambda: use_torch)
    pieces = [x[s:s + PIECE] for s in range(0, x.size, PIECE)]
    out = fe(pieces, sampling_rate=SR, padding="max_length", return_attention_mask=True, return_tensors="np")
    return np.concatenate([f[:, :int(m.sum())] for f, m in zip(out["input_features"], out["attention_mask"])], axis=1)


@pytest.mark.torch
@pytest.mark.parametrize("n", [1, 160, 161, 16000, 16560, 116800, 480000, 480001, 1040000])
def test_batch_matches_whisper_feature_extractor(n, monkeypatch):
    x = speech_like(n, seed=n + 1)
    mel = _testing.log_mel(x, FILTERS)
    # numpy path: float64 STFT stored as complex64, float64 mel; measured max 1.2e-7
    np.testing.assert_allclose(mel, whisper_extractor_features(x, False, monkeypatch), rtol=0, atol=TOL)
    # torch path (what the official model runs): a float32 STFT, whose rounding is relative to the
    # loudest bin of a frame, so bands 6-8 decades below it carry ~1e-3 relative power error, i.e.
    # up to ~1e-4 on the (x + 4) / 4 scale (measured max 4.0e-5); formula errors are >= 1e-3
    np.testing.assert_allclose(mel, whisper_extractor_features(x, True, monkeypatch), rtol=0, atol=2e-4)


# ------------------------------------------------------------------------------------ streaming


def stream_both(x, sizes, feed="raw", redundancy=0, last=False, flush=False, **options):
    """Feeds x in pieces of the given sizes (cycled) to the C++ StreamingMel and the numpy reference;
    checks every chunk against the reference and returns the C++ chunks (dicts)."""
    cpp = _testing.StreamingMel(FILTERS, feed=feed, redundancy_frames=redundancy, **options)
    ref = StreamingMelReference(FILTERS64, feed=feed, redundancy_frames=redundancy, **options)
    pos, i = 0, 0
    while pos < x.size:
        piece = np.ascontiguousarray(x[pos:pos + sizes[i % len(sizes)]])
        pos += piece.size
        i += 1
        is_last = last and pos >= x.size
        cpp.push(piece, is_last)
        ref.push(piece, is_last)
        assert cpp.emitted_frames == ref.emitted
        assert cpp.buffer_samples == ref.buffer.size and cpp.buffer_first_frame == ref.base_frame
    if flush:
        cpp.flush()
        ref.flush()
    chunks = []
    while (c := cpp.next_chunk()) is not None:
        chunks.append(c)
    assert len(chunks) == len(ref.chunks)
    for c, r in zip(chunks, ref.chunks):
        meta = (c["first_frame"], c["prefix_frames"], c["core_frames"], c["suffix_frames"], c["dynamic_clip"], c["is_flush"])
        assert meta == (r.first_frame, r.prefix_frames, r.core_frames, r.suffix_frames, r.dynamic_clip, r.is_flush)
        assert c["mel"].shape == r.mel.shape
        assert abs(c["clip_threshold"] - r.threshold) < TOL
        # same float64 arithmetic on both sides (one float32 rounding); measured max 6.4e-8
        np.testing.assert_allclose(c["mel"], r.mel, rtol=0, atol=TOL)
    return chunks


X12 = speech_like(12 * SR, seed=12)


def test_streaming_simplex_one_second_pieces():
    chunks = stream_both(X12, [SR], feed="simplex")
    # first push padded to 16560 (1035 ms): chunk k = core frames [100k, 100k + 100), no redundancy
    assert [c["first_frame"] for c in chunks] == [100 * k for k in range(12)]
    assert all(c["mel"].shape == (80, 100) and c["core_frames"] == 100 for c in chunks)
    # buffer after push k: 16560 + 16000 k samples; the dynamic clip starts at 5 s (80000 samples)
    assert [c["dynamic_clip"] for c in chunks] == [16560 + SR * k >= 5 * SR for k in range(12)]


@pytest.mark.parametrize("sizes", [[7001, 23456], [160, 16000, 999]])
def test_streaming_simplex_odd_pieces(sizes):
    stream_both(X12, sizes, feed="simplex", last=True)


def test_streaming_raw_odd_pieces_and_flush():
    chunks = stream_both(X12, [1234, 40000, 3, 16480], feed="raw", flush=True)
    assert chunks[-1]["is_flush"]
    assert sum(c["core_frames"] for c in chunks) == X12.size // HOP  # every frame exactly once


def test_streaming_duplex_redundancy():
    chunks = stream_both(X12, [SR], feed="duplex", redundancy=2)
    # 16480 samples first (1030 ms after front padding to 16560), then 16000: chunk 0 has no left
    # context ([0, 102)), later chunks [100k - 2, 100k + 102)
    assert [c["mel"].shape[1] for c in chunks] == [102] + [104] * (len(chunks) - 1)
    assert [(c["prefix_frames"], c["core_frames"], c["suffix_frames"]) for c in chunks] == \
        [(0, 100, 2)] + [(2, 100, 2)] * (len(chunks) - 1)
    assert [c["first_frame"] for c in chunks] == [0] + [100 * k - 2 for k in range(1, len(chunks))]


@pytest.mark.parametrize("sizes", [[5000, 31000], [16480, 16000], [123, 50000]])
def test_streaming_duplex_odd_pieces(sizes):
    stream_both(X12, sizes, feed="duplex", redundancy=2)


def test_streaming_sliding_buffer():
    x = speech_like(45 * SR, seed=45)
    chunks = stream_both(x, [SR], feed="simplex")
    # the buffer reaches 30 s at push 29 (16560 + 29 * 16000) and drops 10 s (1000 frames), again at
    # push 39; frame numbering stays global and chunks stay contiguous
    assert len(chunks) == 45
    assert [c["first_frame"] for c in chunks] == [100 * k for k in range(45)]
    cpp = _testing.StreamingMel(FILTERS, feed="simplex")
    starts = []
    for k in range(45):
        cpp.push(np.ascontiguousarray(x[k * SR:(k + 1) * SR]))
        starts.append(cpp.buffer_first_frame)
        assert cpp.buffer_samples < PIECE
    assert starts[28] == 0 and starts[29] == 1000 and starts[39] == 2000


def test_streaming_duplex_sliding_buffer():
    stream_both(speech_like(45 * SR, seed=46), [SR], feed="duplex", redundancy=2)


def test_streaming_without_slide_stops_at_30_seconds():
    # the extractor truncates its input to 30 s: without the slide nothing past frame 3000 is stable
    chunks = stream_both(speech_like(35 * SR, seed=35), [SR], feed="raw", sliding_window=False)
    assert chunks[-1]["first_frame"] + chunks[-1]["mel"].shape[1] == 3000


def test_streaming_last_chunk_and_reset():
    x = X12[: 3 * SR + 4321]
    chunks = stream_both(x, [SR], feed="simplex", last=True)
    assert chunks[-1]["mel"].shape[1] < 100  # the last call emits what exists, unstable frames included
    cpp = _testing.StreamingMel(FILTERS, feed="simplex")
    for k in range(3):
        cpp.push(np.ascontiguousarray(x[k * SR:(k + 1) * SR]))
    cpp.reset()
    assert (cpp.buffer_samples, cpp.emitted_frames, cpp.queued_chunks, cpp.chunk_samples) == (0, 0, 0, 16480)
    again = []
    for k in range(3):
        cpp.push(np.ascontiguousarray(x[k * SR:(k + 1) * SR]))
        again.append(cpp.next_chunk())
    for a, b in zip(again, chunks):
        np.testing.assert_array_equal(a["mel"], b["mel"])


def test_streaming_relation_to_batch():
    """Streaming chunk k holds frames [100k, 100k + 100) of the (front-padded) audio seen as one
    signal; against the batch log-mel of that audio only the lower clip differs (the streaming clip
    is fixed at -10 below 5 s of buffer, else the buffer's max - 8; the batch one is the 30-s piece's
    max - 8), plus the last frames, which the batch path computes over zero padding. So with both
    clipped at the larger threshold they agree."""
    padded = np.concatenate([np.zeros(560, np.float32), X12])  # the simplex front padding
    chunks = stream_both(X12, [SR], feed="simplex")
    raw_batch = log10_mel_frames(np.concatenate([padded, np.zeros(PIECE - padded.size)]), FILTERS64)
    batch_threshold = raw_batch.max() - 8.0
    batch = _testing.log_mel(padded, FILTERS)
    for c in chunks:
        t = max(c["clip_threshold"], batch_threshold)
        lo, hi = c["first_frame"], c["first_frame"] + c["mel"].shape[1]
        floor = np.float32((t + 4.0) / 4.0)
        np.testing.assert_allclose(np.maximum(c["mel"], floor), np.maximum(batch[:, lo:hi], floor), rtol=0, atol=TOL)


# ------------------------------------------------------------------------------------ bad inputs

Err = _core.MinicpmoError


def test_bad_batch_inputs():
    ok = np.zeros(1000, np.float32)
    with pytest.raises(Err, match="empty"):
        _testing.log_mel(np.zeros(0, np.float32), FILTERS)
    bad = ok.copy()
    bad[5] = np.nan
    with pytest.raises(Err, match="sample 5 is NaN"):
        _testing.log_mel(bad, FILTERS)
    bad[5] = -np.inf
    with pytest.raises(Err, match="sample 5 is infinite"):
        _testing.log_mel(bad, FILTERS)
    with pytest.raises(Err, match="float32"):
        _testing.log_mel(ok.astype(np.float64), FILTERS)
    with pytest.raises(Err, match="float32"):
        _testing.log_mel(list(ok), FILTERS)
    with pytest.raises(Err, match="shape"):
        _testing.log_mel(ok.reshape(10, 100), FILTERS)
    with pytest.raises(Err, match="filters must have shape"):
        _testing.log_mel(ok, FILTERS[:, :200].copy())
    nan_filters = FILTERS.copy()
    nan_filters[3, 7] = np.nan
    with pytest.raises(Err, match="band 3, bin 7"):
        _testing.log_mel(ok, nan_filters)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_fft=0), "n_fft"),
    (dict(n_fft=10**7), "n_fft"),
    (dict(hop=0), "hop"),
    (dict(hop=401), "hop"),
    (dict(sample_rate=0), "sample_rate"),
    (dict(chunk_samples=100), "chunk_samples"),
    (dict(chunk_samples=2**40), "chunk_samples"),
    (dict(dynamic_range_db=-1.0), "dynamic_range_db"),
    (dict(dynamic_range_db=float("nan")), "dynamic_range_db"),
])
def test_bad_mel_config(kwargs, message):
    with pytest.raises(Err, match=message):
        _testing.log_mel(np.zeros(1000, np.float32), FILTERS, **kwargs)
    with pytest.raises(Err, match=message):
        _testing.StreamingMel(FILTERS, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(feed="both"), "feed"),
    (dict(redundancy_frames=-1), "redundancy_frames"),
    (dict(chunk_ms=0), "chunk_ms"),
    (dict(first_chunk_ms=0), "first_chunk_ms"),
    (dict(slide_stride_seconds=float("inf")), "sliding-window"),
    (dict(log_floor=float("nan")), "log_floor"),
])
def test_bad_streaming_options(kwargs, message):
    with pytest.raises(Err, match=message):
        _testing.StreamingMel(FILTERS, **kwargs)


def test_bad_streaming_push_leaves_state_unchanged():
    cpp = _testing.StreamingMel(FILTERS, feed="duplex", redundancy_frames=2)
    clean = _testing.StreamingMel(FILTERS, feed="duplex", redundancy_frames=2)
    bad = X12[:SR].copy()
    bad[100] = np.inf
    for k in range(3):
        piece = np.ascontiguousarray(X12[k * SR:(k + 1) * SR])
        if k == 1:
            with pytest.raises(Err, match="sample 100 is infinite"):
                cpp.push(bad)
            with pytest.raises(Err, match="float32"):
                cpp.push(piece.astype(np.float64))
        cpp.push(piece)
        clean.push(piece)
        np.testing.assert_array_equal(cpp.next_chunk()["mel"], clean.next_chunk()["mel"])


def test_streaming_short_buffer_emits_nothing():
    # a buffer shorter than one window: the official processor raises inside its STFT; here the
    # call just emits nothing, and an empty push is a valid call
    cpp = _testing.StreamingMel(FILTERS)
    assert cpp.push(np.zeros(100, np.float32), True) is False
    assert cpp.push(np.zeros(0, np.float32)) is False
    assert cpp.flush() is False and cpp.next_chunk() is None
