"""numpy-only checks of the audio reference's bookkeeping (no torch): token / placeholder counts,
30-s piece splitting, the streaming cache-reset rule, duplex chunk slicing, the chat padding recipe
and clear errors for bad input. The encoder math itself is checked against PyTorch in
test_audio_reference_vs_torch.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from audio_weights import random_audio_weights, smooth_mel
from reference.audio import (AudioReference, ProjectorReference, StreamingWhisperReference, audio_pieces,
                             audio_placeholder_count, chat_padding_frames, duplex_chunk, encoder_frame_count,
                             mel_frame_count, pooled_token_count, whisper_encode)

N_HEADS = 4


@pytest.fixture(scope="module")
def weights():
    return random_audio_weights(0)  # spec §8 tiny Whisper: d_model 64, 2 layers, ffn 256


# ------------------------------------------------------------------------------------------------
# counts
# ------------------------------------------------------------------------------------------------

# (samples, tokens) worked by hand from spec §3.3: F = ceil(n/160), F' = (F-1)//2+1, N = (F'-5)//5+1
HAND_COUNTS = [
    (1, 0),            # F 1, F' 1
    (1440, 1),         # F 9, F' 5: the first full pool window
    (16000, 10),       # 1 s = 100 mel = 50 frames = 10 tokens
    (16560, 10),       # the simplex first chunk (1035 ms): 104 mel -> 52 -> 10
    (480000, 300),     # one whole 30-s piece
    (727845, 455),     # 45.49 s: 4550 mel -> 2275 -> 455
]


@pytest.mark.parametrize("n,tokens", HAND_COUNTS)
def test_placeholder_count_by_hand(n, tokens):
    assert audio_placeholder_count(n) == tokens


def test_whole_audio_count_equals_sum_of_30s_pieces():
    """The processor counts placeholders on the whole audio while the model encodes 30-s pieces
    separately; the two agree for every length (a piece is 3000 mel = 1500 frames = 300 tokens)."""
    rng = np.random.default_rng(0)
    lengths = [1, 159, 160, 161, 479999, 480000, 480001, 480159, 480160, 480161, 960000, 960001,
               1440000 + 799, 1440000 + 800] + list(rng.integers(1, 5_000_000, 300))
    for n in lengths:
        pieces = audio_pieces(int(n))
        assert pieces[0][0] == 0 and pieces[-1][1] == n
        assert all(b - a == 480000 for a, b in pieces[:-1]) and 0 < pieces[-1][1] - pieces[-1][0] <= 480000
        per_piece = sum(pooled_token_count(encoder_frame_count(mel_frame_count(b - a))) for a, b in pieces)
        assert per_piece == audio_placeholder_count(int(n)), n


def test_pooled_count_formula_is_floor():
    for t in range(0, 2000):
        assert pooled_token_count(t) == t // 5


# ------------------------------------------------------------------------------------------------
# streaming
# ------------------------------------------------------------------------------------------------

def test_cache_resets_at_the_30th_one_second_chunk(weights):
    """Reset when cache_len + T' >= 1500: offsets 0, 50, ..., 1400 (29 chunks), then the 30th chunk
    starts a new cache at offset 0 and behaves exactly like the first chunk of a fresh stream."""
    mel = smooth_mel(1, 3100)
    chunks = [mel[:, 100 * k:100 * (k + 1)] for k in range(31)]
    stream = StreamingWhisperReference(weights, N_HEADS)
    lens, resets, outs = [], [], []
    for c in chunks:
        outs.append(stream.push(c))
        lens.append(stream.cache_len)
        resets.append(stream.last_push_reset)
    assert lens == [50 * (k + 1) for k in range(29)] + [50, 100]
    assert resets == [False] * 29 + [True, False]
    fresh = StreamingWhisperReference(weights, N_HEADS)
    assert np.array_equal(fresh.push(chunks[29]), outs[29])
    assert np.array_equal(fresh.push(chunks[30]), outs[30])


def test_reset_uses_the_length_before_context_frames_are_dropped(weights):
    """At cache 1448 a duplex chunk of 104 mel (52 conv frames, 50 after dropping context) resets:
    the official check adds the undropped 52 (1448 + 52 >= 1500) although 50 would still fit."""
    stream = StreamingWhisperReference(weights, N_HEADS)
    mel = smooth_mel(2, 3000)
    for k in range(28):
        stream.push(mel[:, 100 * k:100 * (k + 1)])
    stream.push(mel[:, 2800:2896])  # 96 mel -> 48 frames
    assert stream.cache_len == 1448
    out = stream.push(mel[:, 2894:2998], prefix_frames=2, suffix_frames=2)
    assert stream.last_push_reset and stream.cache_len == 50 and out.shape == (50, 64)


def test_duplex_chunk_slices():
    mel = np.arange(80 * 402, dtype=np.float32).reshape(80, 402)
    c0, p0, s0 = duplex_chunk(mel, 0)
    c3, p3, s3 = duplex_chunk(mel, 3)
    assert (p0, s0, p3, s3) == (0, 2, 2, 2)
    assert np.array_equal(c0, mel[:, 0:102]) and np.array_equal(c3, mel[:, 298:402])
    with pytest.raises(ValueError, match="up to 502"):
        duplex_chunk(mel, 4)


def test_streaming_tokens_per_chunk(weights):
    """100, 102 and 104 emitted mel frames (simplex, duplex first, duplex later) -> 10 tokens each."""
    mel = smooth_mel(3, 402)
    assert StreamingWhisperReference(weights, N_HEADS).push_embeddings(mel[:, :100]).shape == (10, 64)
    stream = StreamingWhisperReference(weights, N_HEADS)
    for k in range(3):
        assert stream.push_embeddings(*duplex_chunk(mel, k)).shape == (10, 64)


# ------------------------------------------------------------------------------------------------
# chat padding recipe
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_mel,batch,want", [(131, 300, 200), (27, 300, 100), (300, 300, 300),
                                              (1550, 3000, 1600), (2999, 3000, 3000), (99, 99, 99)])
def test_chat_padding_frames(n_mel, batch, want):
    assert chat_padding_frames(n_mel, batch) == want


def test_trimmed_padding_gives_the_padded_batch_result(weights):
    """Block mode: padding to the end of the last 1-s block equals padding to the batch length
    (checked against torch in test_audio_reference_vs_torch.py as well)."""
    ref = AudioReference(weights, N_HEADS, np.float64)
    m = smooth_mel(4, 151)
    full = ref.batch_embeddings([m], batch_mel_frames=600)[0]
    padded = np.zeros((80, chat_padding_frames(151, 600)), np.float32)
    padded[:, :151] = m
    trimmed = ref.project_and_pool(ref.encode(padded, key_limit=151))[:full.shape[0]]
    # float64 and only masked (exp(-inf) = 0) keys removed: equal to rounding
    assert np.max(np.abs(trimmed - full)) <= 1e-12 * np.max(np.abs(full))


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors(weights):
    ref = AudioReference(weights, N_HEADS)
    with pytest.raises(ValueError, match=r"mel must be \(80, T\)"):
        ref.encode(np.zeros((40, 100), np.float32))
    with pytest.raises(ValueError, match="no frames"):
        ref.encode(np.zeros((80, 0), np.float32))
    bad = np.zeros((80, 10), np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ref.encode(bad)
    with pytest.raises(ValueError, match="mode must be"):
        ref.encode(np.zeros((80, 10), np.float32), mode="causal")
    with pytest.raises(ValueError, match="exceed the table of 1500"):
        ref.encode(np.zeros((80, 3002), np.float32))
    with pytest.raises(ValueError, match="fewer than the pool step"):
        ref.project_and_pool(np.zeros((4, 64), np.float32))
    with pytest.raises(ValueError, match=r"encoder output must be \(T', 64\)"):
        ref.project(np.zeros((10, 63), np.float32))
    with pytest.raises(ValueError, match="batch_mel_frames 50 < longest piece 100"):
        ref.batch_embeddings([np.zeros((80, 100), np.float32)], batch_mel_frames=50)
    with pytest.raises(ValueError, match="no frame left"):
        StreamingWhisperReference(ref).push(np.zeros((80, 2), np.float32), prefix_frames=2, suffix_frames=2)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        audio_placeholder_count(0)
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        AudioReference(weights, 5)
    with pytest.raises(KeyError, match="apm.layer_norm.weight"):
        AudioReference({k: v for k, v in weights.items() if k != "apm.layer_norm.weight"}, N_HEADS)
    with pytest.raises(ValueError, match="k_proj has a bias"):
        AudioReference({**weights, "apm.layers.0.self_attn.k_proj.bias": np.zeros(64, np.float32)}, N_HEADS)
    with pytest.raises(KeyError, match="linear2.bias"):
        ProjectorReference({k: v for k, v in weights.items() if k != "audio_projection_layer.linear2.bias"})
    with pytest.raises(ValueError, match="n_heads is required"):
        StreamingWhisperReference(weights)


def test_functional_wrapper_matches_class(weights):
    mel = smooth_mel(5, 120)
    assert np.array_equal(whisper_encode(weights, mel, n_heads=N_HEADS),
                          AudioReference(weights, N_HEADS).encode(mel))
