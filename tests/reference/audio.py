"""numpy reference of the MiniCPM-o 4.5 audio input path: Whisper encoder (``apm``), projector and
pooling, written from MODEL_SPEC.md §3.2, §3.3, §3.4 and Appendix A.2.

Precision: ``dtype=np.float32`` by default (weights cast once, every op in float32 like the float32
PyTorch model); pass ``dtype=np.float64`` for a higher-precision oracle. GELU is the exact erf form
(libm ``erf`` in double, then cast).

Input mel layout: (n_mel, T) = (80, T), time fastest, i.e. the official ``audio_features[b]``.
Outputs are (frames, features) row-major.

Encoder (per spec §3.2):
    h = gelu(conv1(mel))                 Conv1d(n_mel -> D, k3, s1, zero pad 1)
    h = gelu(conv2(h))                   Conv1d(D -> D, k3, s2, zero pad 1)      T' = (T-1)//2 + 1
    x = h^T + pos[offset : offset+T']
    n x pre-LN layer (eps 1e-5): a = LN1(x); q = (a Wq^T + bq) * hd^-0.5; k = a Wk^T (no bias);
        v = a Wv^T + bv; x += softmax(q k^T + mask) v Wo^T + bo; x += fc2(gelu(fc1(LN2(x))))
    out = LN_post(x)                     (official ``hidden_states[-1]`` = after apm.layer_norm)
Projector + pooling (§3.3): e = linear2(relu(linear1(out))); AvgPool1d(5, 5) over time AFTER the
projection; tokens kept = (T'-5)//5 + 1 (= T'//5).

Facts read from the official code (MiniCPM-o 4.5 ``modeling_minicpmo.py``: get_audio_embedding,
get_audio_embedding_streaming, subsequent_chunk_mask, _get_feat_extract_output_lengths;
``processing_minicpmo.py``: chunk_audio, process_audio_batch; the MiniCPMWhisperEncoder forward):

* Chat / reference audio (``get_audio_embedding(chunk_length=1.0)``):
  - every audio longer than 30 s is cut into 30-s pieces of samples (480000; the last piece is the
    remainder); each piece gets its own mel (own dynamic-range max) and is encoded as a SEPARATE
    batch item: positions restart at 0 per piece, no attention across pieces. The piece outputs of
    one audio are concatenated in order (config.stream_input=True path of get_omni_embedding).
  - ALL pieces of ALL audios of one ``chat()`` call (system voice prompt + user audio...) form one
    batch: each mel is zero-padded (value 0.0, not silence) at the end to the longest mel of the
    batch and the whole padded sequence is run through the encoder (so conv edges at the end of a
    shorter item see those zeros).
  - attention mask: key j is masked for query i iff j >= (i//50 + 1)*50 (block-causal, 50 encoder
    frames = 1 s; ``chunk_length=-1`` gives full attention) OR j >= len, where **len is the item's
    mel-frame count, compared with encoder-frame indices** (official quirk: the encoder frame count
    is about half of it). So padding frames in [T'_valid, min(len, T'_max)) are NOT masked; in
    block mode valid frames of the last partial 1-s block attend to them. A single audio <= 30 s
    alone in its batch has no padding and none of this matters.
  - the projection and AvgPool1d run over the padded sequence; each item keeps its first
    (T'_valid-5)//5+1 pooled vectors (every kept window lies inside the valid frames).
  - placeholders are computed from the whole audio's sample count; that equals the sum of the
    per-piece token counts (480000 samples = 3000 mel = 1500 encoder frames = 300 tokens exactly).
* Streaming (``get_audio_embedding_streaming``): per-layer K/V cache of earlier chunks; the new
  chunk's queries attend to [cache || chunk] with an all-zero mask; positions start at
  offset = cache length. Before encoding, if cache_len + L0 >= n_positions (1500) the cache is
  dropped (offset 0), where L0 = (T-1)//2+1 is the conv2 output length of the chunk BEFORE the
  extra-context frames are removed. With 50-frame chunks that resets at the 30th chunk (offsets
  0, 50, ..., 1400, then 0 again).
* Duplex conv context (``use_extra_context=True``): the chunk mel carries ``prefix`` extra frames
  before and ``suffix`` after (0/2 and 2 in the duplex loop); after conv2 the first (prefix+1)//2
  frames (if prefix > 0) and the last (suffix+1)//2 frames (if 0 < that < remaining) are dropped.
  The pooled token count is taken from the emitted mel-frame count ((T-1)//2+1 -> (x-5)//5+1) and
  applied as a slice, so it can only shorten the pooled output.
"""

from __future__ import annotations

import math

import numpy as np

LN_EPS = 1e-5  # Whisper's nn.LayerNorm default; not a config key
ENC_PREFIX = "apm."
PROJ_PREFIX = "audio_projection_layer."
DEFAULT_BLOCK_FRAMES = 50  # int(audio_chunk_length * 50), audio_chunk_length = 1.0 s
DEFAULT_POOL_STEP = 5
HOP_LENGTH = 160
PIECE_SAMPLES = 30 * 16000  # chunk_audio: max_duration_seconds=30 at 16 kHz

_erf = np.frompyfunc(math.erf, 1, 1)


# ------------------------------------------------------------------------------------------------
# counts (spec §3.3)
# ------------------------------------------------------------------------------------------------

def _check_count(name, n, minimum=0):
    try:
        ok = not isinstance(n, bool) and int(n) == n and n >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def mel_frame_count(n_samples: int, hop_length: int = HOP_LENGTH) -> int:
    """Mel frames of a batch-extracted audio piece: ceil(n / hop) (attention_mask[::hop].sum())."""
    n = _check_count("n_samples", n_samples, 1)
    return -(-n // hop_length)


def encoder_frame_count(n_mel: int) -> int:
    """conv2 (k3, s2, pad 1) output length: (T-1)//2 + 1."""
    t = _check_count("n_mel", n_mel)
    return (t - 1) // 2 + 1 if t > 0 else 0


def pooled_token_count(n_enc: int, pool_step: int = DEFAULT_POOL_STEP) -> int:
    """(T'-pool)//pool + 1, the official formula; equal to T'//pool for every T' >= 0."""
    t = _check_count("n_enc", n_enc)
    return (t - pool_step) // pool_step + 1


def audio_placeholder_count(n_samples: int, hop_length: int = HOP_LENGTH,
                            pool_step: int = DEFAULT_POOL_STEP) -> int:
    """Number of ``<unk>`` placeholders of one audio in chat mode (processor, from the raw sample
    count of the whole audio, whatever its length)."""
    return pooled_token_count(encoder_frame_count(mel_frame_count(n_samples, hop_length)), pool_step)


def audio_pieces(n_samples: int, piece_samples: int = PIECE_SAMPLES) -> list[tuple[int, int]]:
    """[start, end) sample ranges of the 30-s pieces the processor encodes separately."""
    n = _check_count("n_samples", n_samples, 1)
    return [(s, min(s + piece_samples, n)) for s in range(0, n, piece_samples)]


# ------------------------------------------------------------------------------------------------
# masks (Appendix A.2)
# ------------------------------------------------------------------------------------------------

def block_causal_masked(n: int, block_frames: int = DEFAULT_BLOCK_FRAMES, key_limit: int | None = None):
    """(n, n) bool, True = masked: j >= (i // block + 1) * block, or j >= key_limit."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    masked = j >= (i // block_frames + 1) * block_frames
    if key_limit is not None:
        masked = masked | (j >= key_limit)
    return masked


def full_masked(n: int, key_limit: int | None = None):
    """(n, n) bool, True = masked: only j >= key_limit."""
    j = np.broadcast_to(np.arange(n)[None, :], (n, n))
    return j >= (key_limit if key_limit is not None else n)


# ------------------------------------------------------------------------------------------------
# primitives
# ------------------------------------------------------------------------------------------------

def layer_norm(x, w, b, eps=LN_EPS):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_erf(x):
    # exact GELU (torch nn.functional.gelu default): 0.5 x (1 + erf(x / sqrt 2)), erf in double
    e = _erf(np.asarray(x, np.float64) / math.sqrt(2.0)).astype(np.float64)
    return (0.5 * x * (1.0 + e.astype(x.dtype))).astype(x.dtype)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def conv1d_k3(x, w_flat, b, stride):
    """x (C_in, T); w_flat (C_out, C_in*3) with column c*3 + tap (the contract's a.conv*.weight
    flattening); zero padding 1 each side -> (T_out, C_out), T_out = (T-1)//stride + 1."""
    c_in, t = x.shape
    t_out = (t - 1) // stride + 1
    xp = np.zeros((c_in, t + 2), x.dtype)
    xp[:, 1:t + 1] = x
    taps = [xp[:, k: k + stride * (t_out - 1) + 1: stride] for k in range(3)]  # 3 x (C_in, T_out)
    cols = np.stack(taps, axis=-1).transpose(1, 0, 2).reshape(t_out, c_in * 3)  # [t, c*3 + k]
    return cols @ w_flat.T + b


def attention(q, k, v, n_heads, masked=None):
    """q (Lq, D) already scaled, k/v (Lk, D); masked (Lq, Lk) bool (True = -inf) or None."""
    lq, d = q.shape
    hd = d // n_heads
    qh = q.reshape(lq, n_heads, hd).transpose(1, 0, 2)
    kh = k.reshape(-1, n_heads, hd).transpose(1, 2, 0)
    vh = v.reshape(-1, n_heads, hd).transpose(1, 0, 2)
    s = qh @ kh  # (H, Lq, Lk)
    if masked is not None:
        s = np.where(masked[None], np.array(-np.inf, s.dtype), s)
    return (softmax(s) @ vh).transpose(1, 0, 2).reshape(lq, d)


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------

class ProjectorReference:
    """audio_projection_layer (Linear -> ReLU -> Linear) + AvgPool1d over time (spec §3.3)."""

    def __init__(self, weights, dtype=np.float32):
        self.dtype = np.dtype(dtype)

        def W(name):
            if name not in weights:
                raise KeyError(f"missing audio projector weight {name!r}")
            return np.asarray(weights[name]).astype(self.dtype)

        self.w1, self.b1 = W(PROJ_PREFIX + "linear1.weight"), W(PROJ_PREFIX + "linear1.bias")
        self.w2, self.b2 = W(PROJ_PREFIX + "linear2.weight"), W(PROJ_PREFIX + "linear2.bias")
        self.d_in, self.d_out = self.w1.shape[1], self.w2.shape[0]
        if self.w2.shape[1] != self.w1.shape[0]:
            raise ValueError(f"linear2 input {self.w2.shape[1]} != linear1 output {self.w1.shape[0]}")

    def project(self, h):
        h = np.asarray(h)
        if h.ndim != 2 or h.shape[1] != self.d_in:
            raise ValueError(f"encoder output must be (T', {self.d_in}), got {h.shape}")
        h = h.astype(self.dtype)
        return np.maximum(h @ self.w1.T + self.b1, 0) @ self.w2.T + self.b2

    def project_and_pool(self, h, pool_step: int = DEFAULT_POOL_STEP):
        pool_step = _check_count("pool_step", pool_step, 1)
        e = self.project(h)
        n = e.shape[0] // pool_step
        if n == 0:  # torch AvgPool1d refuses an input shorter than its kernel
            raise ValueError(f"{e.shape[0]} encoder frames are fewer than the pool step {pool_step}")
        return e[:n * pool_step].reshape(n, pool_step, -1).mean(1)  # windows [5k, 5k+5), tail dropped


class AudioReference:
    """Whisper encoder + projector of one checkpoint, weights cast to ``dtype`` once.

    ``weights``: dict of HF state-dict arrays named ``apm.*`` and ``audio_projection_layer.*``
    (projector optional: only needed by project/project_and_pool). The number of layers is the
    number of ``apm.layers.{i}`` present; ``n_heads`` is not in the weights and must be given.
    """

    def __init__(self, weights, n_heads: int, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")

        def W(name):
            if name not in weights:
                raise KeyError(f"missing audio weight {name!r}")
            return np.asarray(weights[name]).astype(self.dtype)

        c1 = W(ENC_PREFIX + "conv1.weight")
        c2 = W(ENC_PREFIX + "conv2.weight")
        if c1.ndim != 3 or c1.shape[2] != 3 or c2.shape != (c1.shape[0], c1.shape[0], 3):
            raise ValueError(f"conv weights must be (D, n_mel, 3) and (D, D, 3), got {c1.shape}, {c2.shape}")
        self.d_model, self.n_mel = c1.shape[0], c1.shape[1]
        n_heads = _check_count("n_heads", n_heads, 1)
        if self.d_model % n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.conv1_w, self.conv1_b = c1.reshape(self.d_model, -1), W(ENC_PREFIX + "conv1.bias")
        self.conv2_w, self.conv2_b = c2.reshape(self.d_model, -1), W(ENC_PREFIX + "conv2.bias")
        self.pos = W(ENC_PREFIX + "embed_positions.weight")
        self.n_positions = self.pos.shape[0]
        self.layers = []
        while f"{ENC_PREFIX}layers.{len(self.layers)}.self_attn.q_proj.weight" in weights:
            p = f"{ENC_PREFIX}layers.{len(self.layers)}."
            self.layers.append({k: W(p + n) for k, n in [
                ("ln1_w", "self_attn_layer_norm.weight"), ("ln1_b", "self_attn_layer_norm.bias"),
                ("ln2_w", "final_layer_norm.weight"), ("ln2_b", "final_layer_norm.bias"),
                ("wq", "self_attn.q_proj.weight"), ("bq", "self_attn.q_proj.bias"),
                ("wk", "self_attn.k_proj.weight"),
                ("wv", "self_attn.v_proj.weight"), ("bv", "self_attn.v_proj.bias"),
                ("wo", "self_attn.out_proj.weight"), ("bo", "self_attn.out_proj.bias"),
                ("w1", "fc1.weight"), ("b1", "fc1.bias"), ("w2", "fc2.weight"), ("b2", "fc2.bias")]})
        if not self.layers:
            raise ValueError("no apm.layers.{i} weights found")
        if f"{ENC_PREFIX}layers.0.self_attn.k_proj.bias" in weights:
            raise ValueError("apm k_proj has a bias; Whisper keys have none (wrong checkpoint?)")
        self.post_w, self.post_b = W(ENC_PREFIX + "layer_norm.weight"), W(ENC_PREFIX + "layer_norm.bias")
        self.projector = None
        if PROJ_PREFIX + "linear1.weight" in weights:
            self.projector = ProjectorReference(weights, self.dtype)
            if self.projector.d_in != self.d_model:
                raise ValueError(f"projector input {self.projector.d_in} != d_model {self.d_model}")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    # -- pieces ---------------------------------------------------------------------------------

    def _mel(self, mel):
        m = np.asarray(mel)
        if m.ndim != 2 or m.shape[0] != self.n_mel:
            raise ValueError(f"mel must be ({self.n_mel}, T), got shape {m.shape}")
        if m.shape[1] < 1:
            raise ValueError("mel has no frames")
        if not np.all(np.isfinite(m)):
            raise ValueError("mel contains NaN or inf")
        return m.astype(self.dtype)

    def conv_stem(self, mel):
        """(n_mel, T) -> (T', D) = gelu(conv2(gelu(conv1(mel)))), zero padding at both ends."""
        m = self._mel(mel)
        h = gelu_erf(conv1d_k3(m, self.conv1_w, self.conv1_b, 1))  # (T, D)
        return gelu_erf(conv1d_k3(np.ascontiguousarray(h.T), self.conv2_w, self.conv2_b, 2))

    def positions(self, offset: int, n: int):
        if offset < 0 or offset + n > self.n_positions:
            raise ValueError(f"positions [{offset}, {offset + n}) exceed the table of {self.n_positions} "
                             f"(a piece must be at most {2 * self.n_positions} mel frames)")
        return self.pos[offset:offset + n]

    def _layer(self, L, x, masked=None, cache=None):
        """One pre-LN layer. cache: None or a dict {'k','v'} of earlier keys/values, extended in place."""
        a = layer_norm(x, L["ln1_w"], L["ln1_b"])
        scale = np.array((self.d_model // self.n_heads) ** -0.5, self.dtype)
        q = (a @ L["wq"].T + L["bq"]) * scale  # HF scales the projected q (bias included)
        k = a @ L["wk"].T
        v = a @ L["wv"].T + L["bv"]
        if cache is not None:
            if cache.get("k") is not None:
                k = np.concatenate([cache["k"], k])
                v = np.concatenate([cache["v"], v])
            cache["k"], cache["v"] = k, v
        x = x + attention(q, k, v, self.n_heads, masked) @ L["wo"].T + L["bo"]
        m = layer_norm(x, L["ln2_w"], L["ln2_b"])
        return x + gelu_erf(m @ L["w1"].T + L["b1"]) @ L["w2"].T + L["b2"]

    def layers_forward(self, x, masked=None):
        """(T', D) layer input (stem + positions) -> post-LayerNorm output."""
        for L in self.layers:
            x = self._layer(L, x, masked)
        return layer_norm(x, self.post_w, self.post_b)

    # -- whole sequences ------------------------------------------------------------------------

    def encode(self, mel, mode: str = "block", block_frames: int = DEFAULT_BLOCK_FRAMES,
               key_limit: int | None = None):
        """(n_mel, T) -> (T', D) encoder output, positions from 0.

        mode "block": block-causal attention with ``block_frames`` encoder frames per block (chat,
        reference audio); "full": bidirectional (simplex-streaming system audio). ``key_limit``:
        keys j >= key_limit are masked (the official batch passes the item's MEL frame count here,
        see the module docstring); None = no padding mask.
        """
        x = self.conv_stem(mel)
        n = x.shape[0]
        x = x + self.positions(0, n)
        if key_limit is not None:
            key_limit = _check_count("key_limit", key_limit, 1)
        if mode == "block":
            masked = block_causal_masked(n, _check_count("block_frames", block_frames, 1), key_limit)
        elif mode == "full":
            masked = full_masked(n, key_limit) if key_limit is not None and key_limit < n else None
        else:
            raise ValueError(f"mode must be 'block' or 'full', got {mode!r}")
        return self.layers_forward(x, masked)

    def project(self, h):
        """(T', D) -> (T', E): linear2(relu(linear1(h)))."""
        if self.projector is None:
            raise ValueError("audio_projection_layer.* weights were not given")
        return self.projector.project(h)

    def project_and_pool(self, h, pool_step: int = DEFAULT_POOL_STEP):
        """(T', D) -> (T' // pool_step, E): projection, then AvgPool1d(pool, stride pool) over time."""
        if self.projector is None:
            raise ValueError("audio_projection_layer.* weights were not given")
        return self.projector.project_and_pool(h, pool_step)

    # -- the official batch (chat mode) ---------------------------------------------------------

    def batch_embeddings(self, mels, mode: str = "block", block_frames: int = DEFAULT_BLOCK_FRAMES,
                         pool_step: int = DEFAULT_POOL_STEP, batch_mel_frames: int | None = None):
        """The official get_audio_embedding on one processor batch: [(n_mel, T_i)] mel pieces ->
        [(n_i, E)] pooled embeddings, n_i = (T'_i-5)//5+1.

        Each item is zero-padded to the batch length (``batch_mel_frames``, default the longest
        piece), encoded with positions from 0, mask = block/full OR key j >= T_i (mel count)."""
        mels = [self._mel(m) for m in mels]
        if not mels:
            raise ValueError("no mel pieces given")
        t_max = max(m.shape[1] for m in mels)
        if batch_mel_frames is not None:
            if _check_count("batch_mel_frames", batch_mel_frames, 1) < t_max:
                raise ValueError(f"batch_mel_frames {batch_mel_frames} < longest piece {t_max}")
            t_max = int(batch_mel_frames)
        out = []
        for m in mels:
            t = m.shape[1]
            padded = np.zeros((self.n_mel, t_max), self.dtype)
            padded[:, :t] = m
            h = self.encode(padded, mode, block_frames, key_limit=t)
            e = self.project_and_pool(h, pool_step)
            out.append(e[:pooled_token_count(encoder_frame_count(t), pool_step)])
        return out

    def chat_embedding(self, mel_pieces, mode: str = "block", block_frames: int = DEFAULT_BLOCK_FRAMES,
                       pool_step: int = DEFAULT_POOL_STEP, batch_mel_frames: int | None = None):
        """(N, E) chat-mode embedding of ONE audio given the mels of its 30-s pieces in order
        (``audio_pieces``). ``batch_mel_frames``: the longest mel of the whole chat() batch when
        other audios share it (default: this audio's longest piece)."""
        return np.concatenate(self.batch_embeddings(mel_pieces, mode, block_frames, pool_step,
                                                    batch_mel_frames))


def chat_padding_frames(n_mel: int, batch_mel_frames: int, block_frames: int = DEFAULT_BLOCK_FRAMES) -> int:
    """Shortest zero-padded mel length that gives, in block mode, the same valid outputs as padding
    to the batch length: up to the end of the item's last 1-s block (keys beyond it are masked by
    the block mask, and conv2 frame k reads mel frames <= 2k+2), capped at the batch length."""
    n_mel = _check_count("n_mel", n_mel, 1)
    if _check_count("batch_mel_frames", batch_mel_frames, 1) < n_mel:
        raise ValueError(f"batch_mel_frames {batch_mel_frames} < n_mel {n_mel}")
    blocks = -(-encoder_frame_count(n_mel) // block_frames)
    return min(batch_mel_frames, 2 * blocks * block_frames)


# ------------------------------------------------------------------------------------------------
# streaming (spec §3.4)
# ------------------------------------------------------------------------------------------------

class StreamingWhisperReference:
    """get_audio_embedding_streaming: per-layer K/V cache across the chunks of one stream."""

    def __init__(self, weights_or_ref, n_heads: int | None = None, dtype=np.float32):
        if isinstance(weights_or_ref, AudioReference):
            self.ref = weights_or_ref
        else:
            if n_heads is None:
                raise ValueError("n_heads is required when building from a weights dict")
            self.ref = AudioReference(weights_or_ref, n_heads, dtype)
        self.reset()

    def reset(self):
        self.caches = [{"k": None, "v": None} for _ in self.ref.layers]
        self.cache_len = 0
        self.last_push_reset = False

    def push(self, mel_chunk, prefix_frames: int = 0, suffix_frames: int = 0):
        """Encode one mel chunk (with ``prefix``/``suffix`` extra context frames, duplex) ->
        (L, D) encoder output of its new frames; the K/V cache grows by L."""
        r = self.ref
        prefix_frames = _check_count("prefix_frames", prefix_frames)
        suffix_frames = _check_count("suffix_frames", suffix_frames)
        x = r.conv_stem(mel_chunk)
        l0 = x.shape[0]
        # the official overflow check uses the conv2 length before the extra frames are dropped
        self.last_push_reset = self.cache_len > 0 and self.cache_len + l0 >= r.n_positions
        if self.last_push_reset:
            self.reset()
            self.last_push_reset = True
        drop_front = (prefix_frames + 1) // 2 if prefix_frames > 0 else 0
        drop_back = (suffix_frames + 1) // 2 if suffix_frames > 0 else 0
        if drop_front:
            x = x[drop_front:]
        if 0 < drop_back < x.shape[0]:
            x = x[:-drop_back]
        if x.shape[0] == 0:
            raise ValueError(f"chunk of {np.shape(mel_chunk)[1]} mel frames has no frame left after "
                             f"dropping the {prefix_frames}/{suffix_frames} context frames")
        x = x + r.positions(self.cache_len, x.shape[0])
        for L, cache in zip(r.layers, self.caches):
            x = r._layer(L, x, None, cache)  # no mask: attend to the whole [cache || chunk]
        self.cache_len = self.caches[0]["k"].shape[0]
        return layer_norm(x, r.post_w, r.post_b)

    def push_embeddings(self, mel_chunk, prefix_frames: int = 0, suffix_frames: int = 0,
                        pool_step: int = DEFAULT_POOL_STEP):
        """push + projection + pooling, keeping (T-1)//2+1 -> (x-5)//5+1 tokens of the chunk's mel
        count T (extra frames included), as the official code slices them."""
        h = self.push(mel_chunk, prefix_frames, suffix_frames)
        e = self.ref.project_and_pool(h, pool_step)
        return e[:pooled_token_count(encoder_frame_count(np.shape(mel_chunk)[1]), pool_step)]


def duplex_chunk(mel_full, k: int, chunk_frames: int = 100, redundancy: int = 2):
    """Mel slice of duplex chunk k with its conv context as the streaming processor emits it:
    [max(0, 100k - 2), 100k + 102) -> (mel, prefix_frames, suffix_frames) with prefix 0 for k = 0."""
    k = _check_count("k", k)
    m = np.asarray(mel_full)
    start = chunk_frames * k
    end = start + chunk_frames + redundancy
    if end > m.shape[1]:
        raise ValueError(f"chunk {k} needs mel frames up to {end}, only {m.shape[1]} given")
    prefix = min(redundancy, start)
    return m[:, start - prefix:end], prefix, redundancy


# ------------------------------------------------------------------------------------------------
# functional wrappers (weights dict in, arrays out)
# ------------------------------------------------------------------------------------------------

def whisper_encode(weights, mel, *, n_heads: int, mode: str = "block", block_frames: int = DEFAULT_BLOCK_FRAMES,
                   key_limit: int | None = None, dtype=np.float32):
    return AudioReference(weights, n_heads, dtype).encode(mel, mode, block_frames, key_limit)


def project_and_pool(weights, h, pool_step: int = DEFAULT_POOL_STEP, dtype=np.float32):
    return ProjectorReference(weights, dtype).project_and_pool(h, pool_step)


def chat_audio_embedding(weights, mel_pieces, *, n_heads: int, mode: str = "block",
                         block_frames: int = DEFAULT_BLOCK_FRAMES, pool_step: int = DEFAULT_POOL_STEP,
                         batch_mel_frames: int | None = None, dtype=np.float32):
    return AudioReference(weights, n_heads, dtype).chat_embedding(mel_pieces, mode, block_frames, pool_step,
                                                                  batch_mel_frames)
