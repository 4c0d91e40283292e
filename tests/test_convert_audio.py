"""Whisper encoder + projector + log-mel settings in the omni companion GGUF (the audio contract in
the project notes; spec §3, §9), converted from the tiny checkpoint by the converter users run and
read back with the `gguf` package's GGUFReader.

Expected names, shapes, transforms and storage types are written out below from the contract, not
imported from the converter; the mel filter bank is checked against transformers' implementation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFValueType as V

from conftest import _import_convert
from gguf_values import decode, f16_round
from reference.mel_filters import slaney_mel_filters

convert = _import_convert("")
ConversionError = convert.ConversionError
convert_checkpoint = convert.convert_checkpoint

# tiny dims (tiny_config): Whisper d_model 64, 2 layers, 4 heads, ffn 256, 80 mels, 1500 positions;
# LLM width E = 64 (projector output)
D, LAYERS, HEADS, FF, MEL, NPOS, E = 64, 2, 4, 256, 80, 1500, 64
N_FREQ = 201  # n_fft 400 -> 201 rfft bins

# contract name inside a.blk.{i}. -> (HF name inside apm.layers.{i}., leaves written)
AUDIO_LAYER = {
    "attn_q": ("self_attn.q_proj", ("weight", "bias")),
    "attn_k": ("self_attn.k_proj", ("weight",)),  # Whisper's key projection has no bias
    "attn_v": ("self_attn.v_proj", ("weight", "bias")),
    "attn_out": ("self_attn.out_proj", ("weight", "bias")),
    "ln1": ("self_attn_layer_norm", ("weight", "bias")),
    "ln2": ("final_layer_norm", ("weight", "bias")),
    "ffn_up": ("fc1", ("weight", "bias")),
    "ffn_down": ("fc2", ("weight", "bias")),
}
LAYER_WEIGHT_SHAPES = {"attn_q": (D, D), "attn_k": (D, D), "attn_v": (D, D), "attn_out": (D, D),
                       "ln1": (D,), "ln2": (D,), "ffn_up": (FF, D), "ffn_down": (D, FF)}
AUDIO_PREFIXES = ("apm.", "audio_projection_layer.")


def reference_mel_filters(n_freq: int = N_FREQ, n_mel: int = MEL, sr: int = 16000) -> np.ndarray:
    """The Whisper filter bank, (n_mel, n_freq) float64, from the numpy Slaney reference
    (tests/reference/mel_filters.py; checked against transformers' in test_mel_filter_bank_matches_transformers)."""
    return slaney_mel_filters(n_freq, n_mel, sr, 0.0, 8000.0)


# float32 rounding of a float64 value: half an ulp, 2^-24 relative; plus 1e-12 relative for the float64
# differences between two evaluations of the same formula (measured 5e-15)
F32_OF_F64_RTOL = 2.0 ** -24 + 1e-12


def expected_tensors(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Contract name -> the values it must hold, built from the checkpoint's tensors."""
    want = {
        "a.mel_filters": reference_mel_filters(),
        # Conv1d weight (out, in, 3) flattened row-major: column index in_channel*3 + tap
        "a.conv1.weight": state["apm.conv1.weight"].reshape(D, MEL * 3),
        "a.conv1.bias": state["apm.conv1.bias"],
        "a.conv2.weight": state["apm.conv2.weight"].reshape(D, D * 3),
        "a.conv2.bias": state["apm.conv2.bias"],
        "a.pos_embd.weight": state["apm.embed_positions.weight"],
    }
    for i in range(LAYERS):
        for short, (hf, leaves) in AUDIO_LAYER.items():
            for leaf in leaves:
                want[f"a.blk.{i}.{short}.{leaf}"] = state[f"apm.layers.{i}.{hf}.{leaf}"]
    want["a.post_ln.weight"] = state["apm.layer_norm.weight"]
    want["a.post_ln.bias"] = state["apm.layer_norm.bias"]
    for k in (1, 2):
        want[f"a.proj{k}.weight"] = state[f"audio_projection_layer.linear{k}.weight"]
        want[f"a.proj{k}.bias"] = state[f"audio_projection_layer.linear{k}.bias"]
    return want


def expected_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """(name, PyTorch-order shape) of every audio tensor, in file order."""
    out = [("a.mel_filters", (MEL, N_FREQ)),
           ("a.conv1.weight", (D, MEL * 3)), ("a.conv1.bias", (D,)),
           ("a.conv2.weight", (D, D * 3)), ("a.conv2.bias", (D,)),
           ("a.pos_embd.weight", (NPOS, D))]
    for i in range(LAYERS):
        for short, (_, leaves) in AUDIO_LAYER.items():
            w = LAYER_WEIGHT_SHAPES[short]
            out.append((f"a.blk.{i}.{short}.weight", w))
            if "bias" in leaves:
                out.append((f"a.blk.{i}.{short}.bias", (w[0],)))
    out += [("a.post_ln.weight", (D,)), ("a.post_ln.bias", (D,)),
            ("a.proj1.weight", (E, FF // 4)), ("a.proj1.bias", (E,)),
            ("a.proj2.weight", (E, E)), ("a.proj2.bias", (E,))]
    return out


def expected_type(name: str, shape: tuple[int, ...], outtype: str) -> Q:
    """The contract's storage policy."""
    if len(shape) == 1 or name == "a.mel_filters":
        return Q.F32
    if name == "a.pos_embd.weight":
        return Q.F32 if outtype == "f32" else Q.F16
    matrix = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}[outtype]
    if matrix == Q.Q8_0 and shape[-1] % 32:
        return Q.F16  # rows must fill whole 32-element blocks (conv1: 240 columns)
    return matrix


def audio_tensors(path: Path) -> dict:
    return {t.name: t for t in GGUFReader(path).tensors if t.name.startswith("a.")}


def read_kv(path: Path) -> dict[str, tuple[list, object]]:
    """key -> (GGUF value types, value) of the companion's audio keys."""
    fields = GGUFReader(path).fields
    return {k: (list(f.types), f.contents()) for k, f in fields.items() if k.startswith("minicpmo.audio.")}


@pytest.fixture(scope="module")
def state(tiny_hf) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(tiny_hf / "model.safetensors"))  # stored as F32


@pytest.fixture(scope="module")
def tiny_q8(tmp_path_factory, tiny_hf):
    out = tmp_path_factory.mktemp("audio_q8_0")
    return convert_checkpoint(tiny_hf, out, outtype="q8_0", quiet=True)


@pytest.fixture(scope="module")
def rest_shard(tmp_path_factory, state) -> Path:
    """Every tensor of the tiny checkpoint except the audio ones, written once as one shard; the
    checkpoint variants below link it and add their own (small) audio shard."""
    from safetensors.numpy import save_file

    p = tmp_path_factory.mktemp("audio_rest") / "rest.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith(AUDIO_PREFIXES)}, str(p))
    return p


def variant(tiny_hf: Path, rest: Path, dst: Path, audio: dict[str, np.ndarray] | None,
            config: dict | None = None, pre: dict | None = None) -> Path:
    """A copy of the tiny checkpoint whose audio tensors are `audio` (none when empty or None),
    optionally with another config.json / preprocessor_config.json."""
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True)
    for f in tiny_hf.iterdir():
        if f.is_dir():  # the Token2Wav assets folder
            (dst / f.name).symlink_to(f)
        elif f.suffix != ".safetensors" and f.name != "model.safetensors.index.json":
            shutil.copy(f, dst / f.name)
    (dst / rest.name).symlink_to(rest)
    weight_map = {k: rest.name for k in load_file(str(rest))}
    if audio:
        save_file({k: np.ascontiguousarray(v) for k, v in audio.items()}, str(dst / "audio.safetensors"))
        weight_map.update({k: "audio.safetensors" for k in audio})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if config is not None:
        (dst / "config.json").write_text(json.dumps(config))
    if pre is not None:
        (dst / "preprocessor_config.json").write_text(json.dumps(pre))
    return dst


def audio_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in state.items() if k.startswith(AUDIO_PREFIXES)}


# ------------------------------------------------------------------------------------------------
# mel filter bank
# ------------------------------------------------------------------------------------------------

def test_mel_filter_bank_matches_the_numpy_reference():
    mel = _import_convert(".mel_filters").mel_filter_bank(80, 400, 16000, 0.0, 8000.0)
    assert mel.dtype == np.float32 and mel.shape == (MEL, N_FREQ)
    ref = reference_mel_filters()
    # computed in float64 and rounded once: within half a float32 ulp of the float64 reference
    # (measured: max |diff| 9.2e-10 at values up to 0.026, i.e. float32 rounding only)
    err = np.abs(mel.astype(np.float64) - ref)
    assert np.all(err <= F32_OF_F64_RTOL * np.abs(ref)), err.max()
    assert np.array_equal(mel == 0, ref == 0)  # same support (each triangle's zero region)
    # other sizes follow the same formula (n_fft 512 -> 257 bins, 40 mels)
    mel2 = _import_convert(".mel_filters").mel_filter_bank(40, 512, 16000, 0.0, 8000.0)
    np.testing.assert_allclose(mel2, reference_mel_filters(257, 40), rtol=F32_OF_F64_RTOL, atol=0)


@pytest.mark.torch
def test_mel_filter_bank_matches_transformers():
    """transformers (librosa's formulas) is the outside anchor of the numpy reference and the converter."""
    from transformers import WhisperFeatureExtractor
    from transformers.audio_utils import mel_filter_bank

    mel = _import_convert(".mel_filters").mel_filter_bank(80, 400, 16000, 0.0, 8000.0)
    for n_freq, n_mel, sr in [(201, 80, 16000), (257, 40, 16000), (961, 80, 24000), (201, 128, 16000)]:
        tf = mel_filter_bank(num_frequency_bins=n_freq, num_mel_filters=n_mel, min_frequency=0.0,
                             max_frequency=8000.0, sampling_rate=sr, norm="slaney", mel_scale="slaney").T
        ref = reference_mel_filters(n_freq, n_mel, sr)
        # both float64 evaluations of the same formulas: measured 1.1e-14 relative to the peak -> 1e-12
        np.testing.assert_allclose(ref, tf, rtol=0, atol=1e-12 * tf.max())
        assert np.array_equal(ref == 0, tf == 0)
    tf = np.asarray(WhisperFeatureExtractor().mel_filters).T  # the bank the official processor uses
    err = np.abs(mel.astype(np.float64) - tf)
    assert np.all(err <= F32_OF_F64_RTOL * np.abs(tf)), err.max()
    assert np.array_equal(mel == 0, tf == 0)


# ------------------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------------------

def test_audio_keys(tiny_f32, tiny_f16):
    u32, f32, s = [V.UINT32], [V.FLOAT32], [V.STRING]
    want = {
        "minicpmo.audio.n_embd": (u32, D),
        "minicpmo.audio.n_layer": (u32, LAYERS),
        "minicpmo.audio.n_head": (u32, HEADS),
        "minicpmo.audio.n_ff": (u32, FF),
        "minicpmo.audio.n_mel": (u32, MEL),
        "minicpmo.audio.n_positions": (u32, NPOS),
        "minicpmo.audio.layer_norm_eps": (f32, float(np.float32(1e-5))),  # stored as a float32
        "minicpmo.audio.activation": (s, "gelu"),
        "minicpmo.audio.sample_rate": (u32, 16000),
        "minicpmo.audio.n_fft": (u32, 400),
        "minicpmo.audio.hop_length": (u32, 160),
        "minicpmo.audio.chunk_seconds": (u32, 30),
        "minicpmo.audio.dynamic_range_db": (f32, 8.0),
        "minicpmo.audio.block_seconds": (f32, 1.0),
        "minicpmo.audio.pool_step": (u32, 5),
        "minicpmo.audio.n_embd_out": (u32, E),
    }
    for path in (tiny_f32[1], tiny_f16[1]):  # the keys do not depend on the outtype
        assert read_kv(path) == want
        assert "audio" in GGUFReader(path).fields["minicpmo.components"].contents()


def test_keys_follow_preprocessor_config(tmp_path, tiny_hf, rest_shard, state):
    pre = json.loads((tiny_hf / "preprocessor_config.json").read_text())
    pre.update(n_fft=512, hop_length=128, chunk_length=20, dynamic_range_db=6.5)
    cfg = json.loads((tiny_hf / "config.json").read_text())
    cfg.update(audio_chunk_length=0.5, audio_pool_step=2)
    hf = variant(tiny_hf, rest_shard, tmp_path / "hf", audio_state(state), cfg, pre)
    omni = convert_checkpoint(hf, tmp_path / "out", outtype="f32", quiet=True)[1]
    kv = {k: v for k, (_, v) in read_kv(omni).items()}
    assert (kv["minicpmo.audio.n_fft"], kv["minicpmo.audio.hop_length"]) == (512, 128)
    assert kv["minicpmo.audio.chunk_seconds"] == 20
    assert kv["minicpmo.audio.dynamic_range_db"] == 6.5  # all exactly representable in float32
    assert kv["minicpmo.audio.block_seconds"] == 0.5
    assert kv["minicpmo.audio.pool_step"] == 2
    mel = decode(audio_tensors(omni)["a.mel_filters"])
    assert mel.shape == (MEL, 257)  # 512-point FFT
    np.testing.assert_allclose(mel, reference_mel_filters(257), rtol=F32_OF_F64_RTOL, atol=0)  # float32 rounding

    # without preprocessor_config.json the WhisperFeatureExtractor defaults apply
    bare = variant(tiny_hf, rest_shard, tmp_path / "bare", audio_state(state))
    (bare / "preprocessor_config.json").unlink()
    kv = {k: v for k, (_, v) in read_kv(convert_checkpoint(bare, tmp_path / "o2", outtype="f32", quiet=True)[1]).items()}
    assert [kv[f"minicpmo.audio.{k}"] for k in ("sample_rate", "n_fft", "hop_length", "chunk_seconds",
                                                 "dynamic_range_db")] == [16000, 400, 160, 30, 8.0]


# ------------------------------------------------------------------------------------------------
# tensors: names, shapes, types, values
# ------------------------------------------------------------------------------------------------

def test_f32_tensors_are_exact(tiny_f32, state):
    got = audio_tensors(tiny_f32[1])
    want_shapes = expected_shapes()
    assert [(n, tuple(int(x) for x in reversed(t.shape))) for n, t in got.items()] == want_shapes
    assert not [n for n in got if n.startswith("a.blk.") and n.endswith("attn_k.bias")]
    want = expected_tensors(state)
    for name, shape in want_shapes:
        t = got[name]
        assert t.tensor_type == expected_type(name, shape, "f32"), name
        if name == "a.mel_filters":  # float64 reference: within float32 rounding
            np.testing.assert_allclose(decode(t), want[name], rtol=F32_OF_F64_RTOL, atol=0)
        else:
            assert np.array_equal(decode(t), want[name]), name  # F32 -> F32 is lossless
    # the conv flattening spelled out on single elements, independent of numpy's reshape
    for conv, n_in in (("conv1", MEL), ("conv2", D)):
        w2, w3 = decode(got[f"a.{conv}.weight"]), state[f"apm.{conv}.weight"]
        for o, c, tap in [(0, 0, 1), (5, 7, 2), (D - 1, n_in - 1, 0)]:
            assert w2[o, c * 3 + tap] == w3[o, c, tap]


def test_f16_tensors_round_once(tiny_f16, state):
    got = audio_tensors(tiny_f16[1])
    want = expected_tensors(state)
    assert [n for n, _ in expected_shapes()] == list(got)
    for name, shape in expected_shapes():
        t = got[name]
        assert t.tensor_type == expected_type(name, shape, "f16"), name
        vals, x = decode(t), want[name]
        if name == "a.mel_filters":
            np.testing.assert_allclose(vals, x, rtol=F32_OF_F64_RTOL, atol=0)  # stays F32
        elif len(shape) == 1:
            assert np.array_equal(vals, x), name  # 1-D tensors stay F32, bit exact
        else:
            # round to nearest: within half an ulp (2^-11 ~ 4.9e-4 relative for normals, 2^-25
            # absolute for subnormals), and exactly IEEE round-to-nearest-even of the F32 value
            err = np.abs(vals.astype(np.float64) - x)
            assert np.all(err <= 2.0 ** -11 * np.abs(x) + 2.0 ** -25), name
            assert np.array_equal(vals, f16_round(x)), name


def test_q8_0_storage(tiny_q8, state):
    got = audio_tensors(tiny_q8[1])
    want = expected_tensors(state)
    assert [n for n, _ in expected_shapes()] == list(got)
    for name, shape in expected_shapes():
        t = got[name]
        qtype = expected_type(name, shape, "q8_0")
        assert t.tensor_type == qtype, name
        vals, x = decode(t), want[name]
        if name == "a.mel_filters":
            np.testing.assert_allclose(vals, x, rtol=F32_OF_F64_RTOL, atol=0)
        elif qtype == Q.F32:
            assert np.array_equal(vals, x), name
        elif qtype == Q.F16:
            assert np.array_equal(vals, f16_round(x)), name
        else:
            # Q8_0 per block of 32: d = amax/127 (stored as f16), q = round(x/d): |x - q*d16| <=
            # d/2 + 127*|d - d16| <= 0.5 d + 0.062 d; 0.57 d (below the 1/127-of-block-max bound)
            # covers both. Checks each block holds the right source values (conv flattening).
            blocks = x.reshape(-1, 32).astype(np.float64)
            d = np.abs(blocks).max(axis=1, keepdims=True) / 127
            err = np.abs(vals.reshape(-1, 32).astype(np.float64) - blocks)
            assert np.all(err <= 0.57 * d + 1e-12), name
    assert got["a.conv1.weight"].tensor_type == Q.F16  # 240 columns = 7.5 blocks: F16 fallback
    assert got["a.conv2.weight"].tensor_type == Q.Q8_0  # 192 columns = 6 blocks


# ------------------------------------------------------------------------------------------------
# without audio; ignored key bias
# ------------------------------------------------------------------------------------------------

def test_llm_file_is_the_same_without_audio(tmp_path, tiny_hf, tiny_f16, rest_shard):
    cfg = json.loads((tiny_hf / "config.json").read_text())
    cfg["init_audio"] = False  # and no apm / projector tensors at all
    hf = variant(tiny_hf, rest_shard, tmp_path / "hf", None, cfg)
    # the TTS matrices in F16 as in tiny_f16 (tests/conftest.py), so every other tensor compares
    llm, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f16", quiet=True, tts_outtype="f16")
    assert llm.read_bytes() == tiny_f16[0].read_bytes()
    r = GGUFReader(omni)
    assert r.fields["minicpmo.components"].contents() == ["vision", "tts", "token2wav", "voice"]
    assert not [k for k in r.fields if k.startswith("minicpmo.audio.")]
    assert not [t.name for t in r.tensors if t.name.startswith("a.")]
    # the other components are written as before
    with_audio = {t.name: t for t in GGUFReader(tiny_f16[1]).tensors if not t.name.startswith("a.")}
    assert list(with_audio) == [t.name for t in r.tensors]
    for t in r.tensors:
        assert np.array_equal(np.asarray(t.data), np.asarray(with_audio[t.name].data)), t.name


def test_key_bias_is_ignored(tmp_path, tiny_hf, tiny_f32, rest_shard, state):
    """A checkpoint that stores k_proj biases converts to the same companion: softmax attention is
    invariant to a key bias (it adds q·b to every score of a row), and Whisper has none."""
    audio = audio_state(state)
    rng = np.random.default_rng(3)
    for i in range(LAYERS):
        audio[f"apm.layers.{i}.self_attn.k_proj.bias"] = rng.standard_normal(D).astype(np.float32)
    hf = variant(tiny_hf, rest_shard, tmp_path / "hf", audio)
    omni = convert_checkpoint(hf, tmp_path / "out", outtype="f32", quiet=True)[1]
    assert omni.read_bytes() == tiny_f32[1].read_bytes()


# ------------------------------------------------------------------------------------------------
# generator options
# ------------------------------------------------------------------------------------------------

def test_make_tiny_audio_only_with_other_dims(tmp_path, qwen2_vocab_gguf):
    """make_tiny's CLI with --components / --audio-dims / --llm-dims, then converted."""
    main = _import_convert(".make_tiny").main
    rc = main([str(tmp_path / "hf"), "--seed", "4", "--vocab-gguf", str(qwen2_vocab_gguf),
               "--components", "audio", "--audio-dims", "d_model=32,encoder_layers=3,encoder_attention_heads=2",
               "--llm-dims", "hidden_size=96,num_attention_heads=6,num_key_value_heads=2"])
    assert rc == 0
    hf = tmp_path / "hf"
    cfg = json.loads((hf / "config.json").read_text())
    assert (cfg["init_vision"], cfg["init_audio"], cfg["init_tts"]) == (False, True, False)
    a = cfg["audio_config"]
    assert (a["d_model"], a["encoder_layers"], a["encoder_attention_heads"], a["encoder_ffn_dim"]) == (32, 3, 2, 128)
    from safetensors.numpy import load_file

    st = load_file(str(hf / "model.safetensors"))
    assert not [n for n in st if n.startswith(("vpm.", "resampler.", "tts."))]
    assert st["audio_projection_layer.linear1.weight"].shape == (96, 32)

    _, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f32", quiet=True)
    r = GGUFReader(omni)
    assert r.fields["minicpmo.components"].contents() == ["audio"]
    kv = {k: v for k, (_, v) in read_kv(omni).items()}
    assert [kv[f"minicpmo.audio.{k}"] for k in ("n_embd", "n_layer", "n_head", "n_ff", "n_embd_out")] == \
        [32, 3, 2, 128, 96]
    got = audio_tensors(omni)
    assert tuple(reversed(got["a.conv2.weight"].shape)) == (32, 96)
    assert np.array_equal(decode(got["a.blk.2.ffn_down.weight"]), st["apm.layers.2.fc2.weight"])
    assert np.array_equal(decode(got["a.proj1.weight"]), st["audio_projection_layer.linear1.weight"])

    # bad options: a clear message and exit code 1 / 2, no traceback
    assert main([str(tmp_path / "bad"), "--vocab-gguf", str(qwen2_vocab_gguf),
                 "--audio-dims", "d_model=32,encoder_ffn_dim=100"]) == 1
    with pytest.raises(SystemExit) as ei:
        main([str(tmp_path / "bad2"), "--audio-dims", "d_model=big"])
    assert ei.value.code == 2
    make_tiny = _import_convert(".make_tiny").make_tiny_checkpoint
    with pytest.raises(ConversionError, match="audio dimension.*n_mels"):
        make_tiny(tmp_path / "bad3", vocab_gguf=qwen2_vocab_gguf, audio_dims={"n_mels": 128})


def test_real_size_audio_layout():
    """The benchmark shape: Whisper-medium (1024 wide, 24 layers, 16 heads, ffn 4096) under a 4096 LLM."""
    tiny_config = _import_convert(".tiny_config").tiny_config
    layout = _import_convert(".layout")
    cfg = tiny_config(dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                           intermediate_size=12288, num_hidden_layers=1),
                      components=("audio",),
                      audio_dims=dict(d_model=1024, encoder_layers=24, encoder_attention_heads=16))
    a = cfg["audio_config"]
    assert (a["d_model"], a["encoder_layers"], a["encoder_attention_heads"], a["encoder_ffn_dim"]) == \
        (1024, 24, 16, 4096)
    s = layout.checkpoint_shapes(cfg)
    assert s["apm.conv1.weight"] == (1024, 80, 3)
    assert s["apm.conv2.weight"] == (1024, 1024, 3)
    assert s["apm.embed_positions.weight"] == (1500, 1024)
    assert "apm.layers.23.fc2.weight" in s and "apm.layers.24.fc2.weight" not in s
    assert s["apm.layers.0.fc1.weight"] == (4096, 1024)
    assert "apm.layers.0.self_attn.k_proj.bias" not in s
    assert s["audio_projection_layer.linear1.weight"] == (4096, 1024)
    assert s["audio_projection_layer.linear2.weight"] == (4096, 4096)
    assert not [n for n in s if n.startswith(("vpm.", "resampler.", "tts."))]


# ------------------------------------------------------------------------------------------------
# bad checkpoints
# ------------------------------------------------------------------------------------------------

def _with(d: dict, **kw) -> dict:
    return {**d, **kw}


def _audio_cfg(cfg: dict, **kw) -> dict:
    return {**cfg, "audio_config": {**cfg["audio_config"], **kw}}


# case -> function(audio tensors, config, preprocessor config) -> (audio, config, pre, words the
# error message must contain)
BAD = {
    "missing_k_proj": lambda a, c, p: (
        {k: v for k, v in a.items() if k != "apm.layers.1.self_attn.k_proj.weight"}, c, p,
        ["missing tensor", "apm.layers.1.self_attn.k_proj.weight"]),
    "missing_projector": lambda a, c, p: (
        {k: v for k, v in a.items() if not k.startswith("audio_projection_layer.linear2")}, c, p,
        ["missing tensor", "audio_projection_layer.linear2."]),
    "conv1_shape": lambda a, c, p: (
        _with(a, **{"apm.conv1.weight": np.zeros((D, MEL, 2), np.float32)}), c, p,
        ["apm.conv1.weight", "(64, 80, 3)", "(64, 80, 2)"]),
    "projector_shape": lambda a, c, p: (
        _with(a, **{"audio_projection_layer.linear1.weight": np.zeros((E, FF), np.float32)}), c, p,
        ["audio_projection_layer.linear1.weight", "(64, 64)", "(64, 256)"]),
    "int_dtype": lambda a, c, p: (
        _with(a, **{"apm.layer_norm.bias": np.zeros(D, np.int32)}), c, p,
        ["apm.layer_norm.bias", "unsupported dtype I32"]),
    "layer_beyond_config": lambda a, c, p: (
        _with(a, **{"apm.layers.2.fc1.weight": a["apm.layers.0.fc1.weight"]}), c, p,
        ["unexpected tensor apm.layers.2.fc1.weight", "2 encoder layers"]),
    "activation_relu": lambda a, c, p: (
        a, _audio_cfg(c, activation_function="relu"), p,
        ["audio_config", "activation_function", "'relu'"]),
    "ffn_not_4x": lambda a, c, p: (
        a, _audio_cfg(c, encoder_ffn_dim=128), p,
        ["audio_config", "encoder_ffn_dim 128", "4 * d_model = 256"]),
    "heads_do_not_divide": lambda a, c, p: (
        a, _audio_cfg(c, encoder_attention_heads=5), p,
        ["audio_config", "d_model 64", "encoder_attention_heads 5"]),
    "no_audio_config": lambda a, c, p: (
        a, {k: v for k, v in c.items() if k != "audio_config"}, p,
        ["config.json", "'audio_config'"]),
    "init_audio_not_bool": lambda a, c, p: (
        a, _with(c, init_audio="yes"), p, ["config.json", "'init_audio'", "'yes'"]),
    "pool_step": lambda a, c, p: (
        a, _with(c, audio_pool_step=0), p, ["config.json", "'audio_pool_step'", "positive integer"]),
    "block_seconds": lambda a, c, p: (
        a, _with(c, audio_chunk_length=-1.0), p, ["config.json", "'audio_chunk_length'", "positive number"]),
    "feature_size": lambda a, c, p: (
        a, c, _with(p, feature_size=128), ["preprocessor_config.json", "'feature_size' 128", "num_mel_bins 80"]),
    "sampling_rate": lambda a, c, p: (
        a, c, _with(p, sampling_rate=8000), ["preprocessor_config.json", "'sampling_rate' 8000", "16000"]),
    "n_fft_odd": lambda a, c, p: (
        a, c, _with(p, n_fft=401), ["preprocessor_config.json", "'n_fft'", "even", "401"]),
    "hop_beyond_fft": lambda a, c, p: (
        a, c, _with(p, hop_length=500), ["preprocessor_config.json", "'hop_length' 500", "'n_fft' 400"]),
    "chunk_length": lambda a, c, p: (
        a, c, _with(p, chunk_length=0), ["preprocessor_config.json", "'chunk_length'", "positive integer"]),
    "chunk_length_float": lambda a, c, p: (
        a, c, _with(p, chunk_length=30.5), ["preprocessor_config.json", "'chunk_length'", "30.5"]),
    "dither": lambda a, c, p: (
        a, c, _with(p, dither=1e-5), ["preprocessor_config.json", "'dither'", "0.0"]),
    "padding_value": lambda a, c, p: (
        a, c, _with(p, padding_value=-1.0), ["preprocessor_config.json", "'padding_value'"]),
    "dynamic_range": lambda a, c, p: (
        a, c, _with(p, dynamic_range_db="8"), ["preprocessor_config.json", "'dynamic_range_db'", "'8'"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_audio_input(tmp_path, tiny_hf, rest_shard, state, case):
    cfg = json.loads((tiny_hf / "config.json").read_text())
    pre = json.loads((tiny_hf / "preprocessor_config.json").read_text())
    audio, new_cfg, new_pre, words = BAD[case](audio_state(state), cfg, pre)
    hf = variant(tiny_hf, rest_shard, tmp_path / "hf", audio, new_cfg, new_pre)
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as ei:
        convert_checkpoint(hf, out, outtype="f16", quiet=True)
    msg = str(ei.value)
    print(f"{case}: {msg}")
    for w in words:
        assert w in msg, f"{case}: message should mention {w!r}: {msg!r}"
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())  # nothing left behind
