"""Vision tower + resampler in the omni companion GGUF (the contract in the project notes; spec §1.1,
§2, §9, gap G1), converted from the tiny checkpoint by the converter users run and read back with
the `gguf` package's GGUFReader (the companion has no vocabulary, so that reader is fast here).

Expected names, shapes and transforms are written out below from the contract, not imported from
the converter.
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
from gguf_values import bf16_round, decode, f16_round

convert = _import_convert("")
ConversionError = convert.ConversionError
convert_checkpoint = convert.convert_checkpoint

# tiny dims (tiny_config / spec §8): vision D=32, MLP 64, 2 heads, 3 layers + drop -> 2 run,
# patch 14, image 980 (70x70 positions); LLM / resampler width E=64, 64 queries, 2 resampler heads
D, FF, P, C, SIDE, E, NQ, RUN = 32, 64, 14, 3, 70, 64, 64, 2

# contract name inside v.blk.{i}. -> HF name inside vpm.encoder.layers.{i}.
VISION_LAYER = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_out": "self_attn.out_proj", "ln1": "layer_norm1", "ln2": "layer_norm2",
    "ffn_up": "mlp.fc1", "ffn_down": "mlp.fc2",
}
LAYER_SHAPES = {"attn_q": (D, D), "attn_k": (D, D), "attn_v": (D, D), "attn_out": (D, D),
                "ln1": None, "ln2": None, "ffn_up": (FF, D), "ffn_down": (D, FF)}


def expected_tensors(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Contract name -> the float32 values it must hold, built from the checkpoint's tensors."""
    want = {
        # conv weight (D, C, P, P) flattened row-major: column index c*P*P + ky*P + kx
        "v.patch_embd.weight": state["vpm.embeddings.patch_embedding.weight"].reshape(D, C * P * P),
        "v.patch_embd.bias": state["vpm.embeddings.patch_embedding.bias"],
        "v.pos_embd.weight": state["vpm.embeddings.position_embedding.weight"],
    }
    for i in range(RUN):
        for short, hf in VISION_LAYER.items():
            for leaf in ("weight", "bias"):
                want[f"v.blk.{i}.{short}.{leaf}"] = state[f"vpm.encoder.layers.{i}.{hf}.{leaf}"]
    want["v.post_ln.weight"] = state["vpm.post_layernorm.weight"]
    want["v.post_ln.bias"] = state["vpm.post_layernorm.bias"]
    want["resampler.query"] = state["resampler.query"]
    want["resampler.kv_proj.weight"] = state["resampler.kv_proj.weight"]
    w_in, b_in = state["resampler.attn.in_proj_weight"], state["resampler.attn.in_proj_bias"]
    for k, part in enumerate(("attn_q", "attn_k", "attn_v")):
        want[f"resampler.{part}.weight"] = w_in[k * E:(k + 1) * E]
        want[f"resampler.{part}.bias"] = b_in[k * E:(k + 1) * E]
    want["resampler.attn_out.weight"] = state["resampler.attn.out_proj.weight"]
    want["resampler.attn_out.bias"] = state["resampler.attn.out_proj.bias"]
    for ln in ("ln_q", "ln_kv", "ln_post"):
        want[f"resampler.{ln}.weight"] = state[f"resampler.{ln}.weight"]
        want[f"resampler.{ln}.bias"] = state[f"resampler.{ln}.bias"]
    want["resampler.proj.weight"] = state["resampler.proj"].T
    return want


def expected_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """(name, PyTorch-order shape) of every vision tensor, in file order."""
    out = [("v.patch_embd.weight", (D, C * P * P)), ("v.patch_embd.bias", (D,)),
           ("v.pos_embd.weight", (SIDE * SIDE, D))]
    for i in range(RUN):
        for short, shape in LAYER_SHAPES.items():
            rows = shape[0] if shape else D
            out.append((f"v.blk.{i}.{short}.weight", shape or (D,)))
            out.append((f"v.blk.{i}.{short}.bias", (rows,)))
    out += [("v.post_ln.weight", (D,)), ("v.post_ln.bias", (D,)),
            ("resampler.query", (NQ, E)), ("resampler.kv_proj.weight", (E, D))]
    for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
        out += [(f"resampler.{part}.weight", (E, E)), (f"resampler.{part}.bias", (E,))]
    for ln in ("ln_q", "ln_kv", "ln_post"):
        out += [(f"resampler.{ln}.weight", (E,)), (f"resampler.{ln}.bias", (E,))]
    out.append(("resampler.proj.weight", (E, E)))
    return out


def expected_type(name: str, shape: tuple[int, ...], outtype: str) -> Q:
    """The contract's storage policy."""
    if len(shape) == 1:
        return Q.F32
    if name in ("v.pos_embd.weight", "resampler.query"):
        return Q.F32 if outtype == "f32" else Q.F16
    matrix = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[outtype]
    if matrix == Q.Q8_0 and shape[-1] % 32:
        return Q.F16  # rows must fill whole 32-element blocks (patch_embd: 588)
    return matrix


def vision_tensors(path: Path) -> dict:
    return {t.name: t for t in GGUFReader(path).tensors if t.name.startswith(("v.", "resampler."))}


def read_kv(path: Path) -> dict[str, tuple[list, object]]:
    """key -> (GGUF value types, value) of the companion's vision / resampler keys."""
    fields = GGUFReader(path).fields
    return {k: (list(f.types), f.contents()) for k, f in fields.items()
            if k.startswith(("minicpmo.vision.", "minicpmo.resampler."))}


@pytest.fixture(scope="module")
def state(tiny_hf) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(tiny_hf / "model.safetensors"))  # stored as F32


def copy_checkpoint(src: Path, dst: Path, state: dict[str, np.ndarray] | None = None,
                    config: dict | None = None) -> Path:
    """A copy of checkpoint dir src, optionally with other weights and/or another config.json."""
    from safetensors.numpy import save_file

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if (f.suffix == ".safetensors" and state is None) or f.is_dir():  # weights, Token2Wav assets
            (dst / f.name).symlink_to(f)
        elif f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    if state is not None:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(dst / "model.safetensors"))
    if config is not None:
        (dst / "config.json").write_text(json.dumps(config))
    return dst


# ------------------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------------------

def test_vision_keys(tiny_f32, tiny_f16):
    u32, f32, s, b = [V.UINT32], [V.FLOAT32], [V.STRING], [V.BOOL]
    arr = [V.ARRAY, V.FLOAT32]
    eps = float(np.float32(1e-6))  # stored as a float32
    want = {
        "minicpmo.vision.block_count": (u32, RUN),  # 3 in config.json, last one dropped (G1)
        "minicpmo.vision.embedding_length": (u32, D),
        "minicpmo.vision.feed_forward_length": (u32, FF),
        "minicpmo.vision.attention.head_count": (u32, 2),
        "minicpmo.vision.attention.layer_norm_epsilon": (f32, eps),
        "minicpmo.vision.patch_size": (u32, P),
        "minicpmo.vision.image_size": (u32, 980),
        "minicpmo.vision.num_channels": (u32, C),
        "minicpmo.vision.hidden_act": (s, "gelu_pytorch_tanh"),
        "minicpmo.vision.image_mean": (arr, [0.5, 0.5, 0.5]),  # preprocessor_config norm_mean
        "minicpmo.vision.image_std": (arr, [0.5, 0.5, 0.5]),
        "minicpmo.vision.scale_resolution": (u32, 448),
        "minicpmo.vision.max_slice_nums": (u32, 9),
        "minicpmo.vision.query_num": (u32, NQ),
        "minicpmo.vision.use_image_id": (b, True),
        "minicpmo.vision.batch_size": (u32, 16),
        "minicpmo.resampler.embedding_length": (u32, E),
        "minicpmo.resampler.attention.head_count": (u32, 2),  # config key resampler_num_heads
        "minicpmo.resampler.layer_norm_epsilon": (f32, eps),
    }
    for path in (tiny_f32[1], tiny_f16[1]):  # the keys do not depend on the outtype
        assert read_kv(path) == want
        # the tiny checkpoint also has audio (test_convert_audio.py) and speech (test_convert_speech.py)
        assert GGUFReader(path).fields["minicpmo.components"].contents() == \
            ["vision", "audio", "tts", "token2wav", "voice"]


def test_keys_follow_preprocessor_config_and_defaults(tmp_path, tiny_hf):
    pre = json.loads((tiny_hf / "preprocessor_config.json").read_text())
    pre.update(norm_mean=[0.25, 0.5, 0.75], norm_std=[0.125, 2.0, 1.5], max_slice_nums=4,
               scale_resolution=336, use_image_id=False)
    custom = copy_checkpoint(tiny_hf, tmp_path / "custom")
    (custom / "preprocessor_config.json").write_text(json.dumps(pre))
    kv = read_kv(convert_checkpoint(custom, tmp_path / "o1", outtype="f32", quiet=True)[1])
    # all exactly representable in float32
    assert kv["minicpmo.vision.image_mean"][1] == [0.25, 0.5, 0.75]
    assert kv["minicpmo.vision.image_std"][1] == [0.125, 2.0, 1.5]
    assert kv["minicpmo.vision.max_slice_nums"][1] == 4
    assert kv["minicpmo.vision.scale_resolution"][1] == 336
    assert kv["minicpmo.vision.use_image_id"][1] is False

    # without preprocessor_config.json: config.json's slice_config, then the processor defaults
    bare = copy_checkpoint(tiny_hf, tmp_path / "bare")
    (bare / "preprocessor_config.json").unlink()
    cfg = json.loads((bare / "config.json").read_text())
    cfg["slice_config"]["max_slice_nums"] = 6
    (bare / "config.json").write_text(json.dumps(cfg))
    kv = read_kv(convert_checkpoint(bare, tmp_path / "o2", outtype="f32", quiet=True)[1])
    assert kv["minicpmo.vision.image_mean"][1] == [0.5, 0.5, 0.5]
    assert kv["minicpmo.vision.image_std"][1] == [0.5, 0.5, 0.5]
    assert kv["minicpmo.vision.max_slice_nums"][1] == 6
    assert kv["minicpmo.vision.scale_resolution"][1] == 448


# ------------------------------------------------------------------------------------------------
# tensors: names, shapes, types, values
# ------------------------------------------------------------------------------------------------

def test_f32_tensors_are_exact(tiny_f32, state):
    got = vision_tensors(tiny_f32[1])
    want_shapes = expected_shapes()
    assert [(n, tuple(int(x) for x in reversed(t.shape))) for n, t in got.items()] == want_shapes
    assert not any(n.startswith("v.blk.2.") for n in got)  # the dropped layer is absent (G1)
    want = expected_tensors(state)
    for name, shape in want_shapes:
        t = got[name]
        assert t.tensor_type == expected_type(name, shape, "f32"), name
        assert np.array_equal(decode(t), want[name]), name  # F32 -> F32 is lossless
    # the transforms spelled out on single elements, independent of numpy's reshape / transpose
    w2 = decode(got["v.patch_embd.weight"])
    w4 = state["vpm.embeddings.patch_embedding.weight"]
    for d, c, ky, kx in [(0, 0, 0, 1), (5, 1, 3, 7), (31, 2, 13, 13)]:
        assert w2[d, c * P * P + ky * P + kx] == w4[d, c, ky, kx]
    k_w = decode(got["resampler.attn_k.weight"])
    assert k_w[3, 7] == state["resampler.attn.in_proj_weight"][E + 3, 7]
    assert decode(got["resampler.attn_v.bias"])[5] == state["resampler.attn.in_proj_bias"][2 * E + 5]
    # y = W x with the stored weight equals the reference's x @ proj
    x = np.random.default_rng(0).standard_normal(E).astype(np.float64)
    w = decode(got["resampler.proj.weight"]).astype(np.float64)
    np.testing.assert_allclose(w @ x, x @ state["resampler.proj"].astype(np.float64), rtol=1e-12, atol=1e-12)


def test_f16_tensors_round_once(tiny_f16, state):
    got = vision_tensors(tiny_f16[1])
    want = expected_tensors(state)
    assert [n for n, _ in expected_shapes()] == list(got)
    for name, shape in expected_shapes():
        t = got[name]
        assert t.tensor_type == expected_type(name, shape, "f16"), name
        vals, x = decode(t), want[name]
        if len(shape) == 1:
            assert np.array_equal(vals, x), name  # 1-D tensors stay F32, bit exact
            continue
        # round to nearest: within half an ulp (2^-11 relative for normals, 2^-25 absolute for
        # subnormals), and exactly IEEE round-to-nearest-even of the F32 value
        err = np.abs(vals.astype(np.float64) - x)
        assert np.all(err <= 2.0 ** -11 * np.abs(x) + 2.0 ** -25), name
        assert np.array_equal(vals, f16_round(x)), name


@pytest.mark.parametrize("outtype", ["q8_0", "bf16"])
def test_storage_policy(tmp_path, tiny_hf, state, outtype):
    _, omni = convert_checkpoint(tiny_hf, tmp_path, outtype=outtype, quiet=True)
    got = vision_tensors(omni)
    want = expected_tensors(state)
    for name, shape in expected_shapes():
        t = got[name]
        qtype = expected_type(name, shape, outtype)
        assert t.tensor_type == qtype, name
        vals, x = decode(t), want[name]
        if qtype == Q.F32:
            assert np.array_equal(vals, x), name
        elif qtype == Q.F16:
            assert np.array_equal(vals, f16_round(x)), name
        elif qtype == Q.BF16:
            assert np.array_equal(vals, bf16_round(x)), name  # RNE of the F32 value
        else:
            # Q8_0 per block of 32: d = amax/127 (stored as f16), q = round(x/d): |x - q*d16| <=
            # d/2 + 127*|d - d16| <= 0.5 d + 0.062 d; 0.57 d covers both. Checks that each
            # block holds the right source rows/columns (q/k/v split, proj transpose).
            blocks = x.reshape(-1, 32).astype(np.float64)
            d = np.abs(blocks).max(axis=1, keepdims=True) / 127
            err = np.abs(vals.reshape(-1, 32).astype(np.float64) - blocks)
            assert np.all(err <= 0.57 * d + 1e-12), name
    if outtype == "q8_0":  # 588 = 18.4 blocks: F16 fallback
        assert got["v.patch_embd.weight"].tensor_type == Q.F16


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_chunked_transforms(tiny_hf, state, monkeypatch, outtype):
    """Row slices, the transpose and the reshape encoded a few rows at a time (as the real
    4096-wide tensors are) give the same bytes as the whole transformed tensor encoded at once."""
    outtypes = _import_convert(".outtypes")
    src = _import_convert(".safetensors_io").SafetensorsSource.open_dir(tiny_hf)
    monkeypatch.setattr(outtypes, "_CHUNK_ELEMENTS", 1000)  # 15 of 64 rows per chunk
    qtype = Q.F32 if outtype == "f32" else Q.Q8_0
    w_in = state["resampler.attn.in_proj_weight"]
    cases = [  # (source, shape, rows, transpose, expected values, type)
        ("resampler.attn.in_proj_weight", (E, E), (E, 2 * E), False, w_in[E:2 * E], qtype),
        ("resampler.attn.in_proj_bias", (E,), (2 * E, 3 * E), False,
         state["resampler.attn.in_proj_bias"][2 * E:], Q.F32),
        ("resampler.proj", (E, E), None, True, state["resampler.proj"].T, qtype),
        ("vpm.embeddings.patch_embedding.weight", (D, C * P * P), None, False,
         state["vpm.embeddings.patch_embedding.weight"].reshape(D, -1), Q.F16 if outtype == "q8_0" else Q.F32),
    ]
    from gguf.quants import quantize

    for name, shape, rows, transpose, x, qt in cases:
        got = outtypes.encode_tensor(src, name, qt, shape, rows, transpose)
        assert np.array_equal(got, quantize(np.ascontiguousarray(x), qt)), name
    with pytest.raises(ConversionError, match="reshape"):  # reshapes may only merge trailing axes
        outtypes.encode_tensor(src, "resampler.proj", Q.F32, (E * E,))


# ------------------------------------------------------------------------------------------------
# layer count (G1)
# ------------------------------------------------------------------------------------------------

def test_extra_stored_layer_is_not_written(tmp_path, tiny_hf, tiny_f32, state):
    """Config 3 layers + drop, checkpoint stores all 3: only layers 0-1 are written."""
    extra = dict(state)
    rng = np.random.default_rng(1)
    for name, x in state.items():
        if name.startswith("vpm.encoder.layers.0."):
            extra[name.replace(".layers.0.", ".layers.2.")] = rng.standard_normal(x.shape).astype(np.float32)
    hf = copy_checkpoint(tiny_hf, tmp_path / "hf", state=extra)
    llm, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f32", quiet=True)
    assert read_kv(omni)["minicpmo.vision.block_count"][1] == RUN
    assert omni.read_bytes() == tiny_f32[1].read_bytes()  # same file as without the extra layer
    assert llm.read_bytes() == tiny_f32[0].read_bytes()


def test_no_drop_runs_every_stored_layer(tmp_path, tiny_hf, state):
    """drop_vision_last_layer false with 2 layers in config.json: both run and are written."""
    cfg = json.loads((tiny_hf / "config.json").read_text())
    cfg["drop_vision_last_layer"] = False
    cfg["vision_config"]["num_hidden_layers"] = 2
    hf = copy_checkpoint(tiny_hf, tmp_path / "hf", config=cfg)
    _, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f32", quiet=True)
    assert read_kv(omni)["minicpmo.vision.block_count"][1] == 2
    got = vision_tensors(omni)
    assert np.array_equal(decode(got["v.blk.1.ffn_down.weight"]), state["vpm.encoder.layers.1.mlp.fc2.weight"])


# ------------------------------------------------------------------------------------------------
# checkpoints without vision, generator options
# ------------------------------------------------------------------------------------------------

def test_init_vision_false_has_no_vision_component(tmp_path, tiny_hf):
    cfg = json.loads((tiny_hf / "config.json").read_text())
    cfg["init_vision"] = False  # the vpm/resampler tensors still in the file are ignored
    hf = copy_checkpoint(tiny_hf, tmp_path / "hf", config=cfg)
    _, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f16", quiet=True)
    r = GGUFReader(omni)
    assert r.fields["minicpmo.components"].contents() == ["audio", "tts", "token2wav", "voice"]
    assert not [k for k in r.fields if k.startswith(("minicpmo.vision.", "minicpmo.resampler."))]
    assert not [t.name for t in r.tensors if not t.name.startswith(("a.", "tts.", "t2w.", "voice."))]


def test_make_tiny_vision_only_with_other_dims(tmp_path, qwen2_vocab_gguf):
    make_tiny = _import_convert(".make_tiny").make_tiny_checkpoint
    dims = dict(hidden_size=48, intermediate_size=80, num_attention_heads=3, num_hidden_layers=4,
                resampler_num_heads=4)
    hf = Path(make_tiny(tmp_path / "hf", seed=2, vocab_gguf=qwen2_vocab_gguf, vision_dims=dims,
                        components=("vision",)))
    cfg = json.loads((hf / "config.json").read_text())
    assert (cfg["init_vision"], cfg["init_audio"], cfg["init_tts"]) == (True, False, False)
    from safetensors.numpy import load_file

    st = load_file(str(hf / "model.safetensors"))
    assert not [n for n in st if n.startswith(("apm.", "audio_projection_layer.", "tts."))]
    assert st["vpm.embeddings.patch_embedding.weight"].shape == (48, 3, 14, 14)
    assert "vpm.encoder.layers.2.mlp.fc1.weight" in st and "vpm.encoder.layers.3.mlp.fc1.weight" not in st

    _, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f32", quiet=True)
    kv = {k: v for k, (_, v) in read_kv(omni).items()}
    assert kv["minicpmo.vision.block_count"] == 3  # 4 - the dropped last layer
    assert kv["minicpmo.vision.embedding_length"] == 48
    assert kv["minicpmo.vision.feed_forward_length"] == 80
    assert kv["minicpmo.vision.attention.head_count"] == 3
    assert kv["minicpmo.resampler.attention.head_count"] == 4
    got = vision_tensors(omni)
    assert tuple(reversed(got["v.blk.2.ffn_up.weight"].shape)) == (80, 48)
    assert tuple(reversed(got["resampler.kv_proj.weight"].shape)) == (E, 48)
    assert np.array_equal(decode(got["resampler.proj.weight"]), st["resampler.proj"].T)

    with pytest.raises(ConversionError, match="vision dimension.*num_layers"):
        make_tiny(tmp_path / "bad1", vocab_gguf=qwen2_vocab_gguf, vision_dims={"num_layers": 2})
    with pytest.raises(ConversionError, match="component.*speech"):
        make_tiny(tmp_path / "bad2", vocab_gguf=qwen2_vocab_gguf, components=("vision", "speech"))


def test_real_size_vision_layout():
    """The benchmark shape: real tower (1152/4304/16 heads/27 layers + drop) under a 4096 LLM."""
    tiny_config = _import_convert(".tiny_config").tiny_config
    layout = _import_convert(".layout")
    cfg = tiny_config(dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                           intermediate_size=12288, num_hidden_layers=1),
                      dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16,
                           num_hidden_layers=27, resampler_num_heads=32),
                      components=("vision",))
    s = layout.checkpoint_shapes(cfg)
    assert s["vpm.embeddings.patch_embedding.weight"] == (1152, 3, 14, 14)
    assert s["vpm.embeddings.position_embedding.weight"] == (4900, 1152)
    assert "vpm.encoder.layers.25.mlp.fc2.weight" in s and "vpm.encoder.layers.26.mlp.fc2.weight" not in s
    assert s["vpm.encoder.layers.0.mlp.fc1.weight"] == (4304, 1152)
    assert s["resampler.kv_proj.weight"] == (4096, 1152)
    assert s["resampler.attn.in_proj_weight"] == (12288, 4096)
    assert not [n for n in s if n.startswith(("apm.", "tts."))]
    assert cfg["resampler_num_heads"] == 32


# ------------------------------------------------------------------------------------------------
# bad checkpoints
# ------------------------------------------------------------------------------------------------

def _drop(state, *names):
    return {k: v for k, v in state.items() if k not in names}


def _bad_missing_proj(state, cfg, pre):
    return _drop(state, "resampler.proj"), cfg, pre, ["missing tensor", "resampler.proj"]


def _bad_patch_shape(state, cfg, pre):
    name = "vpm.embeddings.patch_embedding.weight"
    return ({**state, name: np.zeros((D, C, P, P - 1), np.float32)}, cfg, pre,
            [name, "(32, 3, 14, 14)", "(32, 3, 14, 13)"])


def _bad_in_proj_shape(state, cfg, pre):
    name = "resampler.attn.in_proj_weight"
    return {**state, name: np.zeros((2 * E, E), np.float32)}, cfg, pre, [name, "(192, 64)", "(128, 64)"]


def _bad_too_few_layers(state, cfg, pre):
    fewer = {k: v for k, v in state.items() if not k.startswith("vpm.encoder.layers.1.")}
    return fewer, cfg, pre, ["vpm.encoder.layers.1.", "stores 1 vision encoder layers", "2 are needed"]


def _bad_missing_layer_tensor(state, cfg, pre):
    name = "vpm.encoder.layers.1.layer_norm2.bias"
    return _drop(state, name), cfg, pre, ["missing tensor", name]


def _bad_layer_beyond_config(state, cfg, pre):
    extra = dict(state)
    for k, v in state.items():
        if k.startswith("vpm.encoder.layers.0."):
            extra[k.replace(".layers.0.", ".layers.3.")] = v
    return extra, cfg, pre, ["unexpected tensor", "vpm.encoder.layers.3.", "num_hidden_layers is 3"]


def _bad_norm_std(state, cfg, pre):
    return state, cfg, {**pre, "norm_std": [0.5, 0.0, 0.5]}, ["preprocessor_config.json", "norm_std"]


def _bad_vision_config(state, cfg, pre):
    return state, {**cfg, "vision_config": {**cfg["vision_config"], "num_attention_heads": 5}}, pre, \
        ["vision_config", "num_attention_heads 5"]


BAD = {
    "missing_proj": _bad_missing_proj,
    "patch_shape": _bad_patch_shape,
    "in_proj_shape": _bad_in_proj_shape,
    "too_few_layers": _bad_too_few_layers,
    "missing_layer_tensor": _bad_missing_layer_tensor,
    "layer_beyond_config": _bad_layer_beyond_config,
    "norm_std": _bad_norm_std,
    "vision_config": _bad_vision_config,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_vision_input(tmp_path, tiny_hf, state, case):
    cfg = json.loads((tiny_hf / "config.json").read_text())
    pre = json.loads((tiny_hf / "preprocessor_config.json").read_text())
    new_state, new_cfg, new_pre, words = BAD[case](state, cfg, pre)
    hf = copy_checkpoint(tiny_hf, tmp_path / "hf", state=None if new_state is state else new_state,
                         config=new_cfg)
    (hf / "preprocessor_config.json").write_text(json.dumps(new_pre))
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as ei:
        convert_checkpoint(hf, out, outtype="f16", quiet=True)
    msg = str(ei.value)
    print(f"{case}: {msg}")
    for w in words:
        assert w in msg, f"{case}: message should mention {w!r}: {msg!r}"
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())  # nothing left behind
