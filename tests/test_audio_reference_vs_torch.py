"""The numpy audio reference (tests/reference/audio.py) against PyTorch float32 on random weights
with the HF names (apm.*, audio_projection_layer.*).

* full attention: the real ``transformers.WhisperEncoder`` forward (it needs exactly
  2 * max_source_positions mel frames, so its position table is cut to T'; the rows used are the same);
* block-causal / padded batch / streaming: transformers ignores the encoder attention mask, so the
  MiniCPMWhisperEncoder forward is rebuilt from the WhisperEncoder's own modules (conv1, conv2,
  embed_positions, WhisperEncoderLayer with a 4-D additive mask or a DynamicCache, layer_norm);
* projector + pooling: torch nn.Linear / nn.ReLU / nn.AvgPool1d.
This validates the oracle; the C++ runtime is compared with the oracle elsewhere.
Metric: rel = max|torch - reference| / max|reference|.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from transformers import WhisperConfig
from transformers.cache_utils import DynamicCache
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from audio_weights import random_audio_weights, smooth_mel
from reference.audio import (AudioReference, ProjectorReference, StreamingWhisperReference, audio_pieces,
                             audio_placeholder_count, chat_padding_frames, duplex_chunk, encoder_frame_count,
                             mel_frame_count, pooled_token_count, whisper_encode)

pytestmark = pytest.mark.torch

# float32 torch vs float32 (or float64) numpy through 2 layers of width <= 128: sums of <= 512
# products, LayerNorm, softmax over <= 1500 keys. float32 rounding gives ~1e-6 relative; 1e-5 leaves
# room for BLAS summation order. Any formula error (mask off by one frame, position offset, missing
# q scale or k bias, tanh-GELU, pooling before projection) moves outputs by >= 1e-3 relative.
REL_TOL = 1e-5
# projector + pooling alone: two matmuls and a 5-term mean, ~1e-7 relative
PROJ_REL_TOL = 2e-6

# spec §8 tiny Whisper (d_model 64, 2 layers, 4 heads, ffn 256 = 4 d) and a wider one
TINY = dict(d_model=64, n_layers=2, n_heads=4, ffn=256, d_out=64)
WIDE = dict(d_model=128, n_layers=2, n_heads=8, ffn=512, d_out=96)  # d_out != d_model: catches transposes


def rel(a, ref):
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def make_weights(dims, seed):
    return random_audio_weights(seed, dims["d_model"], dims["n_layers"], dims["ffn"], d_out=dims["d_out"])


def torch_encoder(weights, dims, n_positions=1500):
    """transformers WhisperEncoder (eager attention) holding the same weights; the position table
    is cut to ``n_positions`` rows (the real forward requires T' == n_positions)."""
    cfg = WhisperConfig(d_model=dims["d_model"], encoder_layers=dims["n_layers"],
                        encoder_attention_heads=dims["n_heads"], encoder_ffn_dim=dims["ffn"], num_mel_bins=80,
                        max_source_positions=n_positions, activation_function="gelu", dropout=0.0,
                        attention_dropout=0.0, activation_dropout=0.0)
    cfg._attn_implementation = "eager"  # matmul + softmax with an additive float mask
    enc = WhisperEncoder(cfg).eval()
    sd = {k[len("apm."):]: torch.from_numpy(np.asarray(v, np.float32)) for k, v in weights.items()
          if k.startswith("apm.")}
    sd["embed_positions.weight"] = sd["embed_positions.weight"][:n_positions]
    enc.load_state_dict(sd, strict=True)  # k_proj has no bias in WhisperAttention either
    return enc


def torch_projector(weights):
    """MultiModalProjector (linear1 -> ReLU -> linear2) with the checkpoint's parameter names."""
    w1 = weights["audio_projection_layer.linear1.weight"]
    w2 = weights["audio_projection_layer.linear2.weight"]
    m = nn.Module()
    m.linear1 = nn.Linear(w1.shape[1], w1.shape[0])
    m.linear2 = nn.Linear(w2.shape[1], w2.shape[0])
    m.load_state_dict({k[len("audio_projection_layer."):]: torch.from_numpy(v) for k, v in weights.items()
                       if k.startswith("audio_projection_layer.")}, strict=True)
    return lambda h: m.linear2(nn.functional.relu(m.linear1(h)))


def torch_pool(e, step=5):
    """(B, T', E) -> (B, T'//step, E) with nn.AvgPool1d over time, as the official code does."""
    return nn.AvgPool1d(step, stride=step)(e.transpose(1, 2)).transpose(1, 2)


def torch_stem(enc, mel_batch):
    """(B, 80, T) -> (B, T', D): gelu(conv2(gelu(conv1(x)))) with the WhisperEncoder's convs."""
    h = nn.functional.gelu(enc.conv1(mel_batch))
    return nn.functional.gelu(enc.conv2(h)).permute(0, 2, 1)


def torch_layers(enc, x, mask=None, cache=None):
    """WhisperEncoderLayer stack + final LayerNorm (the MiniCPMWhisperEncoder loop)."""
    for layer in enc.layers:
        x = layer(x, mask, cache=cache) if cache is not None else layer(x, mask)
    return enc.layer_norm(x)


def torch_block_keep(n, block):
    """(n, n) bool, True = may attend; built row by row like the official subsequent_chunk_mask."""
    keep = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        keep[i, :min((i // block + 1) * block, n)] = True
    return keep


def additive(masked):
    out = torch.zeros(masked.shape)
    out[masked] = float("-inf")
    return out


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))


# ------------------------------------------------------------------------------------------------
# whole sequences
# ------------------------------------------------------------------------------------------------

FULL_CASES = [(TINY, 3000), (WIDE, 300)]  # a full 30-s piece (whole table) and 3 s at width 128


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims,n_mel", FULL_CASES, ids=["d64-T3000", "d128-T300"])
def test_full_attention_matches_whisper_encoder(dims, n_mel, dtype):
    w = make_weights(dims, 1)
    mel = smooth_mel(2, n_mel)
    n_enc = encoder_frame_count(n_mel)
    enc = torch_encoder(w, dims, n_positions=n_enc)
    with torch.no_grad():
        got = enc(input_features=t(mel)[None]).last_hidden_state[0].numpy()
    want = whisper_encode(w, mel, n_heads=dims["n_heads"], mode="full", dtype=dtype)
    e = rel(got, want)
    print(f"full d{dims['d_model']} T={n_mel} {np.dtype(dtype).name}: rel {e:.2e}")
    assert want.shape == (n_enc, dims["d_model"])
    assert e < REL_TOL  # see REL_TOL


BLOCK_CASES = [(TINY, 257, 50), (WIDE, 300, 50), (TINY, 300, 20)]  # odd T; 3 whole blocks; other block


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims,n_mel,block", BLOCK_CASES, ids=["d64-T257", "d128-T300", "d64-T300-b20"])
def test_block_causal_matches_torch_layers_with_4d_mask(dims, n_mel, block, dtype):
    w = make_weights(dims, 3)
    mel = smooth_mel(4, n_mel)
    enc = torch_encoder(w, dims)
    n = encoder_frame_count(n_mel)
    with torch.no_grad():
        x = torch_stem(enc, t(mel)[None]) + enc.embed_positions.weight[:n]
        got = torch_layers(enc, x, additive(~torch_block_keep(n, block))[None, None])[0].numpy()
        full = torch_layers(enc, x)[0].numpy()
    want = whisper_encode(w, mel, n_heads=dims["n_heads"], mode="block", block_frames=block, dtype=dtype)
    e = rel(got, want)
    print(f"block {block} d{dims['d_model']} T={n_mel} {np.dtype(dtype).name}: rel {e:.2e} "
          f"(block vs full attention differ by {rel(full, want):.2e})")
    assert e < REL_TOL  # see REL_TOL
    assert rel(full, want) > 1e-2  # the mask is not a no-op on these inputs
    # block-causal: the first block ignores everything after it (changing later mel frames is invisible)
    mel2 = mel.copy()
    mel2[:, 2 * block + 2:] += 1.0  # conv2 frame k reads mel <= 2k+2, so frames < block are untouched
    first = whisper_encode(w, mel2, n_heads=dims["n_heads"], mode="block", block_frames=block, dtype=dtype)
    assert np.array_equal(first[:block], want[:block])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_enc", [150, 153])  # 153: the 3-frame tail is dropped by the pool
def test_projector_and_pool_match_torch(n_enc, dtype):
    w = make_weights(WIDE, 5)
    h = np.random.default_rng(6).standard_normal((n_enc, WIDE["d_model"])).astype(np.float32)
    with torch.no_grad():
        got = torch_pool(torch_projector(w)(t(h))[None])[0].numpy()
    want = ProjectorReference(w, dtype).project_and_pool(h)
    e = rel(got, want)
    print(f"projector+pool {n_enc} frames {np.dtype(dtype).name}: rel {e:.2e}")
    assert want.shape == (n_enc // 5, WIDE["d_out"]) == (pooled_token_count(n_enc), WIDE["d_out"])
    assert e < PROJ_REL_TOL  # see PROJ_REL_TOL
    # pooling happens AFTER the projection: pooling first gives something else (ReLU is not linear)
    pooled_first = ProjectorReference(w).project(h[:n_enc // 5 * 5].reshape(-1, 5, h.shape[1]).mean(1))
    assert rel(pooled_first, want) > 1e-2


# ------------------------------------------------------------------------------------------------
# the official chat batch (get_audio_embedding with chunk_length=1.0)
# ------------------------------------------------------------------------------------------------

def official_batch_torch(enc, proj, mels, block=50):
    """get_audio_embedding on one processor batch, rebuilt in torch from the official code's facts:
    zero padding to the longest mel, key mask `encoder index >= MEL length` (sic), block-causal
    chunk mask (block=None: full attention), projection, AvgPool1d, per-item token slice."""
    lens = torch.tensor([m.shape[1] for m in mels])
    x = nn.utils.rnn.pad_sequence([t(m.T) for m in mels], batch_first=True, padding_value=0.0).transpose(1, 2)
    b, _, tmax = x.shape
    n = (tmax - 1) // 2 + 1
    masked = (torch.arange(n)[None, :] >= lens[:, None]).view(b, 1, 1, n).expand(b, 1, n, n)
    if block is not None:
        masked = masked | ~torch_block_keep(n, block)
    h = torch_layers(enc, torch_stem(enc, x) + enc.embed_positions.weight[:n], additive(masked))
    e = torch_pool(proj(h))
    counts = (((lens - 1) // 2 + 1) - 5) // 5 + 1
    return [e[i, :counts[i]].numpy() for i in range(b)]


def test_chat_batch_matches_official_padded_batch():
    """Three audios of one chat() call (3 s, 1.31 s, 0.27 s): padded to 300 mel frames in one batch.
    The short ones see unmasked padding keys in their last block (mel-length key mask) and, for odd
    lengths, a padded conv edge; the reference reproduces it, trimmed padding included."""
    w = make_weights(TINY, 7)
    mels = [smooth_mel(10 + i, n) for i, n in enumerate([300, 131, 27])]
    enc, proj = torch_encoder(w, TINY), torch_projector(w)
    with torch.no_grad():
        got = official_batch_torch(enc, proj, mels)
    ref = AudioReference(w, TINY["n_heads"])
    want = ref.batch_embeddings(mels)
    for i, (g, m) in enumerate(zip(got, mels)):
        n_mel = m.shape[1]
        assert want[i].shape == (pooled_token_count(encoder_frame_count(n_mel)), TINY["d_out"])
        e = rel(g, want[i])
        # the runtime recipe: pad only to the end of the last 1-s block, same key limit
        p = chat_padding_frames(n_mel, 300)
        padded = np.zeros((80, p), np.float32)
        padded[:, :n_mel] = m
        trimmed = ref.project_and_pool(ref.encode(padded, "block", key_limit=n_mel))[:want[i].shape[0]]
        e_trim = rel(g, trimmed)
        # what an unpadded single-audio encoding gives (different for the padded short items)
        alone = ref.chat_embedding([m])
        print(f"item {i} ({n_mel} mel, padded to 300, trimmed to {p}): rel {e:.2e}, trimmed rel {e_trim:.2e}, "
              f"unpadded differs by {rel(alone, g):.2e}")
        assert e < REL_TOL and e_trim < REL_TOL  # see REL_TOL
        if i > 0:
            assert rel(alone, g) > 1e-3  # the padding quirk is visible: the runtime must emulate it
    assert rel(want[0], ref.chat_embedding([mels[0]])) == 0.0  # the longest item is not padded at all


def test_long_audio_is_encoded_in_30s_pieces():
    """45.49 s of audio: pieces of 480000 and 247845 samples (3000 and 1550 mel frames), encoded as
    separate batch items (positions from 0 each) and concatenated; the token count equals the
    placeholder count computed from the whole sample count."""
    n_samples = 480000 + 247845
    pieces = audio_pieces(n_samples)
    assert pieces == [(0, 480000), (480000, 727845)]
    mels = [smooth_mel(20 + i, mel_frame_count(b - a)) for i, (a, b) in enumerate(pieces)]
    assert [m.shape[1] for m in mels] == [3000, 1550]
    w = make_weights(TINY, 8)
    enc, proj = torch_encoder(w, TINY), torch_projector(w)
    with torch.no_grad():
        got = np.concatenate(official_batch_torch(enc, proj, mels))
    want = AudioReference(w, TINY["n_heads"]).chat_embedding(mels)
    e = rel(got, want)
    print(f"45.49 s audio in 2 pieces: {want.shape[0]} tokens, rel {e:.2e}")
    assert want.shape == (audio_placeholder_count(n_samples), TINY["d_out"]) == (455, TINY["d_out"])
    assert e < REL_TOL  # see REL_TOL


def test_full_attention_batch_matches_official():
    """chunk_length=-1 (simplex-streaming system audio): same batch without the block mask; the
    mel-length key mask still leaves padding keys [T', T) visible to every frame."""
    w = make_weights(TINY, 9)
    mels = [smooth_mel(30, 240), smooth_mel(31, 101)]
    enc, proj = torch_encoder(w, TINY), torch_projector(w)
    with torch.no_grad():
        got = official_batch_torch(enc, proj, mels, block=None)
    want = AudioReference(w, TINY["n_heads"]).batch_embeddings(mels, mode="full")
    for g, x in zip(got, want):
        e = rel(g, x)
        print(f"full-attention batch item {x.shape[0]} tokens: rel {e:.2e}")
        assert e < REL_TOL  # see REL_TOL


# ------------------------------------------------------------------------------------------------
# streaming (get_audio_embedding_streaming)
# ------------------------------------------------------------------------------------------------

def torch_stream(enc, chunks):
    """Official streaming in torch: one DynamicCache for all chunks, positions from the cache length,
    no mask (the official all-zero mask), conv stem per chunk with optional context trimming."""
    for i, layer in enumerate(enc.layers):
        layer.self_attn.layer_idx = i  # the cache is indexed by layer (MiniCPMWhisperEncoderLayer does this)
    cache = DynamicCache()
    outs = []
    for mel, prefix, suffix in chunks:
        x = torch_stem(enc, t(mel)[None])
        drop_front = (prefix + 1) // 2 if prefix > 0 else 0
        drop_back = (suffix + 1) // 2 if suffix > 0 else 0
        x = x[:, drop_front:x.shape[1] - drop_back]
        off = cache.get_seq_length(0)
        x = x + enc.embed_positions.weight[off:off + x.shape[1]]
        outs.append(torch_layers(enc, x, None, cache)[0].numpy())
    return outs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simplex_streaming_matches_torch_cache_and_block_causal_on_chunk_stems(dtype):
    """Simplex: four 1-s chunks (100 mel frames, no extra context) through the K/V cache.
    Exact relation: streaming == block-causal attention (50-frame blocks) over the concatenation of
    the PER-CHUNK conv stems, because chunk k's keys at every layer only depend on chunks <= k and
    positions continue at 50k. It is NOT the block-causal encoding of the whole mel: each chunk's
    conv sees zeros at its own edges (first and last frame of every chunk differ)."""
    w = make_weights(TINY, 11)
    mel = smooth_mel(12, 400)
    chunks = [(mel[:, 100 * k:100 * (k + 1)], 0, 0) for k in range(4)]
    enc = torch_encoder(w, TINY)
    stream = StreamingWhisperReference(w, TINY["n_heads"], dtype)
    want = np.concatenate([stream.push(*c) for c in chunks])
    assert stream.cache_len == 200
    with torch.no_grad():
        got_cache = np.concatenate(torch_stream(enc, chunks))
        stems = torch.cat([torch_stem(enc, t(c[0])[None]) for c in chunks], 1) + enc.embed_positions.weight[:200]
        got_block = torch_layers(enc, stems, additive(~torch_block_keep(200, 50))[None, None])[0].numpy()
    whole = whisper_encode(w, mel, n_heads=TINY["n_heads"], mode="block", dtype=dtype)
    e_cache, e_block = rel(got_cache, want), rel(got_block, want)
    print(f"simplex streaming {np.dtype(dtype).name}: vs torch cache {e_cache:.2e}, vs block-causal on chunk "
          f"stems {e_block:.2e}; whole-mel block-causal differs by {rel(whole, want):.2e}")
    assert e_cache < REL_TOL and e_block < REL_TOL  # see REL_TOL
    # the edge frame 49 of chunk 0 already differs, and attention inside a block spreads it to all frames
    assert rel(whole[:50], want[:50]) > 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_duplex_streaming_equals_block_causal_on_whole_mel(dtype):
    """Duplex (prefix 0 then 2, suffix 2 mel frames, first/last conv2 frame dropped): the conv stem
    of every chunk equals the whole-mel stem, so streaming K chunks equals block-causal attention on
    the whole mel (100K + 2 frames; the extra 1-frame block K cannot influence blocks < K)."""
    w = make_weights(TINY, 13)
    n_chunks = 4
    mel = smooth_mel(14, 100 * n_chunks + 2)
    chunks = [duplex_chunk(mel, k) for k in range(n_chunks)]
    assert [(c.shape[1], p, s) for c, p, s in chunks] == [(102, 0, 2)] + [(104, 2, 2)] * (n_chunks - 1)
    stream = StreamingWhisperReference(w, TINY["n_heads"], dtype)
    want = np.concatenate([stream.push(*c) for c in chunks])
    assert want.shape[0] == 50 * n_chunks
    enc = torch_encoder(w, TINY)
    n = encoder_frame_count(mel.shape[1])  # 201
    with torch.no_grad():
        x = torch_stem(enc, t(mel)[None]) + enc.embed_positions.weight[:n]
        got_block = torch_layers(enc, x, additive(~torch_block_keep(n, 50))[None, None])[0, :50 * n_chunks].numpy()
        got_cache = np.concatenate(torch_stream(enc, chunks))
    ref_block = whisper_encode(w, mel, n_heads=TINY["n_heads"], mode="block", dtype=dtype)[:50 * n_chunks]
    e_block, e_cache, e_self = rel(got_block, want), rel(got_cache, want), rel(ref_block, want)
    print(f"duplex streaming {np.dtype(dtype).name}: vs torch whole-mel block-causal {e_block:.2e}, "
          f"vs torch cache {e_cache:.2e}, vs reference whole-mel block-causal {e_self:.2e}")
    assert e_block < REL_TOL and e_cache < REL_TOL  # see REL_TOL
    # same formulas in one dtype, only the summation length differs (cache concat vs -inf mask):
    # float64 rounding ~1e-16, float32 ~1e-7
    assert e_self < (1e-12 if dtype == np.float64 else 1e-6)


def test_streaming_tokens_match_torch_projector():
    """Per-chunk embeddings: projection + AvgPool1d of the chunk's 50 frames -> 10 tokens for 100,
    102 and 104 emitted mel frames."""
    w = make_weights(TINY, 15)
    mel = smooth_mel(16, 302)
    chunks = [duplex_chunk(mel, k) for k in range(3)]
    stream = StreamingWhisperReference(w, TINY["n_heads"])
    want = [stream.push_embeddings(*c) for c in chunks]
    enc, proj = torch_encoder(w, TINY), torch_projector(w)
    with torch.no_grad():
        got = [torch_pool(proj(t(h)[None]))[0].numpy() for h in torch_stream(enc, chunks)]
    for k, (g, x) in enumerate(zip(got, want)):
        assert x.shape == (10, TINY["d_out"])
        e = rel(g, x)
        print(f"duplex chunk {k} tokens: rel {e:.2e}")
        assert e < REL_TOL  # see REL_TOL
