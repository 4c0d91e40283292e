"""The HF -> GGUF converter as users run it: `minicpmo_cpp.convert.convert_checkpoint` and the
`minicpmo-convert` console script, on the tiny checkpoint made by the project's generator.

Tensor data is read back with numpy at data_offset + offset (from the project's fast header reader):
gguf.GGUFReader takes ~8 s per file on the 151748-token vocabulary. Quantized blocks are decoded
here from the GGUF block layout, independently of the gguf package that encoded them.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ENDOFTEXT, IM_END, IM_START, END_THINK, THINK, TTS_BOS, TTS_EOS

from minicpmo_cpp.convert import ConversionError, convert_checkpoint
from minicpmo_cpp.convert.gguf_read import read_gguf_info

N_VOCAB = 151748

# llama.cpp's qwen3 tensor names (src/llama-arch.cpp, LLM_ARCH_QWEN3), written out here on purpose
# instead of importing the converter's table
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {
    "llm.model.embed_tokens.weight": "token_embd.weight",
    "llm.model.norm.weight": "output_norm.weight",
    "llm.lm_head.weight": "output.weight",
}

# ggml type ids (ggml.h) and GGUF general.file_type values (llama.h LLAMA_FTYPE_*)
GGML_F32, GGML_F16, GGML_Q8_0, GGML_BF16 = 0, 1, 8, 30
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}
MATRIX_TYPE = {"f32": GGML_F32, "f16": GGML_F16, "q8_0": GGML_Q8_0, "bf16": GGML_BF16}
LABEL = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "bf16": "BF16"}


def gguf_name(hf: str) -> str:
    if hf in TOP_NAMES:
        return TOP_NAMES[hf]
    assert hf.startswith("llm.model.layers."), hf
    idx, rest = hf[len("llm.model.layers."):].split(".", 1)
    return f"blk.{int(idx)}.{LAYER_NAMES[rest]}"


def llm_state(state):
    """HF LLM tensors (llm.*) of the checkpoint state dict."""
    return {k: v for k, v in state.items() if k.startswith("llm.")}


def _nbytes(ggml_type: int, n: int) -> int:
    if ggml_type == GGML_F32:
        return 4 * n
    if ggml_type in (GGML_F16, GGML_BF16):
        return 2 * n
    if ggml_type == GGML_Q8_0:
        assert n % 32 == 0
        return n // 32 * 34  # block: f16 scale + 32 int8
    raise AssertionError(f"unexpected ggml type {ggml_type}")


def read_tensor(path, info, name) -> tuple[np.ndarray, int]:
    """(values as float32 in PyTorch order, ggml type) of one GGUF tensor."""
    t = info.tensor(name)
    shape = tuple(reversed(t.shape))  # ggml order (ne0 = row length first) -> PyTorch order
    n = int(np.prod(shape))
    nb = _nbytes(t.ggml_type, n)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=info.data_offset + t.offset, shape=(nb,))
    if t.ggml_type == GGML_F32:
        vals = raw.view("<f4")
    elif t.ggml_type == GGML_F16:
        vals = raw.view("<f2").astype(np.float32)
    elif t.ggml_type == GGML_BF16:
        vals = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    else:  # Q8_0: y = d * q per block of 32
        blocks = np.asarray(raw).reshape(-1, 34)
        d = blocks[:, :2].copy().view("<f2").astype(np.float32)
        q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
        vals = (d * q).reshape(-1)
    return np.array(vals, dtype=np.float32).reshape(shape), t.ggml_type


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even) -> float32."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return (u.astype(np.uint32) << 16).view(np.float32)


def f16_round(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def check_layout(path, info):
    """Tensor data lies inside the file, aligned, without overlaps."""
    size = Path(path).stat().st_size
    spans = []
    for t in info.tensors:
        assert t.offset % info.alignment == 0, t
        spans.append((t.offset, t.offset + _nbytes(t.ggml_type, int(np.prod(t.shape)))))
    spans.sort()
    for (a0, a1), (b0, _) in zip(spans, spans[1:]):
        assert a1 <= b0, "overlapping tensor data"
    assert info.data_offset + spans[-1][1] <= size


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def state(tiny_hf):
    """The checkpoint's tensors as float32 numpy arrays (the tiny checkpoint is stored as F32)."""
    from safetensors.numpy import load_file

    return load_file(str(tiny_hf / "model.safetensors"))


@pytest.fixture(scope="module")
def f32_info(tiny_f32):
    return read_gguf_info(tiny_f32[0]), read_gguf_info(tiny_f32[1])


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_hf, tiny_f32, tiny_f16):
    """outtype -> (llm, omni) of the tiny checkpoint, each converted once."""
    cache = {"f32": tiny_f32, "f16": tiny_f16}

    def get(outtype):
        if outtype not in cache:
            out = tmp_path_factory.mktemp(f"conv_{outtype}")
            llm, omni = convert_checkpoint(tiny_hf, out, outtype=outtype, quiet=True)
            cache[outtype] = (Path(llm), Path(omni))
        return cache[outtype]

    return get


def variant(src: Path, dst: Path, drop=()) -> Path:
    """A copy of checkpoint dir ``src`` without the files in ``drop``: small files are copied,
    weight files symlinked (callers that change weights unlink the link and write a new file)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name in drop:
            continue
        if f.suffix == ".safetensors" or f.is_dir():  # weights and the Token2Wav assets folder
            os.symlink(f, dst / f.name)
        else:
            shutil.copy(f, dst / f.name)
    return dst


# ------------------------------------------------------------------------------------------------
# F32 round trip and metadata
# ------------------------------------------------------------------------------------------------

def test_f32_round_trip_is_exact(tiny_f32, f32_info, state, tiny_hf):
    path = tiny_f32[0]
    info = f32_info[0]
    assert path.name == "MiniCPM-o-4_5-F32.gguf" and tiny_f32[1].name == "MiniCPM-o-4_5-omni-F32.gguf"
    llm = llm_state(state)
    cfg = json.loads((tiny_hf / "config.json").read_text())
    # every LLM tensor of the checkpoint, nothing else (vision/audio/TTS do not go into the LLM file)
    assert sorted(t.name for t in info.tensors) == sorted(gguf_name(k) for k in llm)
    assert len(info.tensors) == 2 + 11 * cfg["num_hidden_layers"] + 1  # embd, norm, head + 11/layer
    # llama.cpp's order: token_embd first, blocks in order, output last
    assert info.tensors[0].name == "token_embd.weight" and info.tensors[-1].name == "output.weight"
    check_layout(path, info)
    for hf, want in llm.items():
        name = gguf_name(hf)
        t = info.tensor(name)
        assert t.shape == tuple(reversed(want.shape)), (name, t.shape, want.shape)  # ggml: ne0 = cols
        got, gtype = read_tensor(path, info, name)
        assert gtype == GGML_F32, name
        assert np.array_equal(got, want), f"{name} differs from {hf}"  # F32 -> F32: bit exact
    e = info.tensor("token_embd.weight")
    assert e.shape == (cfg["hidden_size"], N_VOCAB)


def test_llm_metadata(tiny_f32, f32_info, tiny_hf):
    kv = f32_info[0].kv
    cfg = json.loads((tiny_hf / "config.json").read_text())
    tc = json.loads((tiny_hf / "tokenizer_config.json").read_text())
    tj = json.loads((tiny_hf / "tokenizer.json").read_text())
    assert kv["general.architecture"] == "qwen3"
    assert kv["general.name"] == "MiniCPM-o-4_5"
    assert kv["general.file_type"] == FILE_TYPE["f32"]
    assert kv["qwen3.context_length"] == cfg["max_position_embeddings"] == 40960
    assert kv["qwen3.embedding_length"] == cfg["hidden_size"] == 64
    assert kv["qwen3.block_count"] == cfg["num_hidden_layers"] == 2
    assert kv["qwen3.feed_forward_length"] == cfg["intermediate_size"]
    assert kv["qwen3.attention.head_count"] == cfg["num_attention_heads"] == 4
    assert kv["qwen3.attention.head_count_kv"] == cfg["num_key_value_heads"] == 2
    assert kv["qwen3.attention.key_length"] == kv["qwen3.attention.value_length"] == cfg["head_dim"] == 16
    # stored as float32 in GGUF
    assert kv["qwen3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6, rel=1e-6)
    assert kv["qwen3.rope.freq_base"] == 1e6
    assert kv["tokenizer.ggml.model"] == "gpt2" and kv["tokenizer.ggml.pre"] == "qwen2"
    tokens, types, merges = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"], kv["tokenizer.ggml.merges"]
    assert len(tokens) == len(types) == N_VOCAB
    assert merges == tj["model"]["merges"]
    for text, i in tj["model"]["vocab"].items():
        if i == 128244:  # "<unk>": a base-vocab string that MiniCPM registers as special
            continue
        assert tokens[i] == text
    # added tokens: text + CONTROL (3) when special, USER_DEFINED (4) otherwise (gguf TokenType)
    for t in tj["added_tokens"]:
        assert tokens[t["id"]] == t["content"], t
        assert types[t["id"]] == (3 if t["special"] else 4), t
    assert tokens[IM_END] == "<|im_end|>" and types[IM_END] == 3
    assert tokens[THINK] == "<think>" and types[THINK] == 4  # not special in Qwen3
    assert tokens[128244] == "<unk>" and types[128244] == 3
    assert types[0] == 1  # NORMAL
    assert kv["tokenizer.ggml.eos_token_id"] == IM_END
    assert kv["tokenizer.ggml.padding_token_id"] == ENDOFTEXT
    assert kv["tokenizer.ggml.add_bos_token"] is False
    assert kv["tokenizer.chat_template"] == tc["chat_template"] and "<|im_start|>" in kv["tokenizer.chat_template"]
    assert kv["minicpmo.omni_file"] == tiny_f32[1].name  # a basename, not a path


def test_companion_metadata(tiny_f32, f32_info, tiny_hf):
    kv = f32_info[1].kv
    tc = json.loads((tiny_hf / "tokenizer_config.json").read_text())
    assert kv["general.architecture"] == "minicpmo-omni"
    assert kv["minicpmo.version"] == "4.5"
    assert kv["minicpmo.llm_file"] == tiny_f32[0].name
    assert kv["minicpmo.llm.embedding_length"] == 64
    assert kv["minicpmo.llm.vocab_size"] == N_VOCAB
    want = {"im_start": IM_START, "im_end": IM_END, "endoftext": ENDOFTEXT, "think_start": THINK,
            "think_end": END_THINK, "tts_bos": TTS_BOS, "tts_eos": TTS_EOS, "unk": 128244,
            "image_start": 151669, "slice_start": 151679, "audio_start": 151697, "audio": 151698,
            "spk_bos": 151700, "listen": 151705, "speak": 151706, "tts_pad": 151722}
    for key, i in want.items():
        assert kv[f"minicpmo.token.{key}"] == i, key
    assert kv["minicpmo.bad_token_ids"] == tc["bad_token_ids"] and len(tc["bad_token_ids"]) > 0
    comps = kv["minicpmo.components"]
    assert isinstance(comps, list) and all(isinstance(c, str) for c in comps)
    if not comps:
        assert f32_info[1].tensors == []  # metadata-only companion


# ------------------------------------------------------------------------------------------------
# other output types
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_outtype_rounding(converted, state, f32_info, outtype):
    llm_path, omni_path = converted(outtype)
    assert llm_path.name == f"MiniCPM-o-4_5-{LABEL[outtype]}.gguf"
    assert omni_path.name == f"MiniCPM-o-4_5-omni-{LABEL[outtype]}.gguf"
    info = read_gguf_info(llm_path)
    assert info.kv["general.file_type"] == FILE_TYPE[outtype]
    assert info.kv["minicpmo.omni_file"] == omni_path.name
    assert read_gguf_info(omni_path).kv["minicpmo.llm_file"] == llm_path.name
    # metadata other than the type and the file names equals the F32 file's
    skip = {"general.file_type", "minicpmo.omni_file"}
    f32_kv = {k: v for k, v in f32_info[0].kv.items() if k not in skip}
    assert {k: v for k, v in info.kv.items() if k not in skip} == f32_kv
    check_layout(llm_path, info)
    worst = 0.0
    for hf, x in llm_state(state).items():
        name = gguf_name(hf)
        got, gtype = read_tensor(llm_path, info, name)
        err = np.abs(got.astype(np.float64) - x)
        if x.ndim == 1:
            assert gtype == GGML_F32, name  # norms stay F32, bit exact
            assert np.array_equal(got, x), name
            continue
        assert gtype == MATRIX_TYPE[outtype], name  # all tiny rows (64, 128) fill whole Q8_0 blocks
        if outtype == "f16":
            # round to nearest: half an ulp = 2^-11 relative for normals, 2^-25 absolute in the
            # subnormal range; and exactly IEEE round-to-nearest-even
            assert np.all(err <= 2.0 ** -11 * np.abs(x) + 2.0 ** -25), name
            assert np.array_equal(got, f16_round(x)), name
        elif outtype == "bf16":
            # 8 significant bits: half an ulp is at most 2^-8 relative; exactly RNE of the float32
            assert np.all(err <= 2.0 ** -8 * np.abs(x)), name
            assert np.array_equal(got, bf16_round(x)), name
        else:
            # Q8_0: per block of 32 a scale d = amax/127 (stored as f16) and q = round(x/d) in
            # [-127, 127]: |x - q*d16| <= d/2 (rounding of q) + 127*|d - d16| (f16 scale,
            # <= 127 * 2^-11 d = 0.062 d); 0.57 d covers both
            blocks = x.reshape(-1, 32).astype(np.float64)
            d = np.abs(blocks).max(axis=1, keepdims=True) / 127
            assert np.all(err.reshape(-1, 32) <= 0.57 * d + 1e-12), name
            assert np.max(np.abs(got.reshape(-1, 32))) <= np.max(np.abs(blocks)) * (1 + 2.0 ** -10)
        if outtype == "q8_0":  # error in units of the block scale amax/127
            worst = max(worst, float(np.max(err.reshape(-1, 32) / np.maximum(d, 1e-30))))
        else:  # relative error over normal-range f16 values (tiny ones may round to 0)
            big = np.abs(x) >= 2.0 ** -14
            worst = max(worst, float(np.max(err[big] / np.abs(x[big]))))
    print(f"{outtype}: max element error {worst:.3e} "
          f"({'of the block scale' if outtype == 'q8_0' else 'relative'})")


# ------------------------------------------------------------------------------------------------
# storage variants: shards, bf16/f16 checkpoints
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,shards", [("float32", 3), ("bfloat16", 1), ("bfloat16", 2), ("float16", 2)])
def test_storage_variants_convert_to_same_values(tmp_path, qwen2_vocab_gguf, tiny_f32, f32_info, state,
                                                 dtype, shards):
    from minicpmo_cpp.convert import make_tiny_checkpoint

    hf = Path(make_tiny_checkpoint(tmp_path / "hf", seed=0, vocab_gguf=qwen2_vocab_gguf, dtype=dtype,
                                   shards=shards))
    if shards > 1:
        assert (hf / "model.safetensors.index.json").is_file()
        assert len(list(hf.glob("model-*-of-*.safetensors"))) == shards
        assert not (hf / "model.safetensors").exists()
    llm, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f32", quiet=True)
    info = read_gguf_info(llm)
    # same metadata (incl. the vocabulary) and same tensor list as the single-file F32 conversion;
    # the LLM fingerprint follows the values: shards alone keep it, rounded weights are another LLM
    fp = "minicpmo.llm_fingerprint"
    omni_kv = read_gguf_info(omni).kv
    assert (info.kv[fp] == f32_info[0].kv[fp]) == (dtype == "float32") and omni_kv[fp] == info.kv[fp]
    assert {k: v for k, v in info.kv.items() if k != fp} == {k: v for k, v in f32_info[0].kv.items() if k != fp}
    assert {k: v for k, v in omni_kv.items() if k != fp} == {k: v for k, v in f32_info[1].kv.items() if k != fp}
    assert [(t.name, t.shape, t.ggml_type) for t in info.tensors] == \
           [(t.name, t.shape, t.ggml_type) for t in f32_info[0].tensors]
    rnd = {"float32": lambda a: a, "bfloat16": bf16_round, "float16": f16_round}[dtype]
    for hf_name, x in llm_state(state).items():
        got, _ = read_tensor(llm, info, gguf_name(hf_name))
        # the stored values widened to F32 exactly: the seed-0 originals rounded to the storage type
        assert np.array_equal(got, rnd(x)), hf_name


def test_tokenizer_json_only_equals_vocab_merges_only(tmp_path, tiny_hf, f32_info):
    fast = variant(tiny_hf, tmp_path / "fast", drop=("vocab.json", "merges.txt"))
    slow = variant(tiny_hf, tmp_path / "slow", drop=("tokenizer.json",))
    kvs = []
    for d in (fast, slow):
        llm, _ = convert_checkpoint(d, tmp_path / (d.name + "_out"), outtype="f32", quiet=True)
        kvs.append(read_gguf_info(llm).kv)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"):
        assert kvs[0][key] == kvs[1][key], key
        assert kvs[0][key] == f32_info[0].kv[key], key  # and what the full checkpoint gives
    assert len(kvs[1]["tokenizer.ggml.merges"]) > 150_000
    assert kvs[0] == kvs[1]  # every other key as well


# ------------------------------------------------------------------------------------------------
# bad inputs: API raises ConversionError naming the problem; CLI exits 1 with one line
# ------------------------------------------------------------------------------------------------

def _rewrite_weights(d: Path, state, drop=(), replace=None):
    from safetensors.numpy import save_file

    tensors = {k: v for k, v in state.items() if k not in drop}
    tensors.update(replace or {})
    (d / "model.safetensors").unlink()  # the symlink, never the shared original
    save_file(tensors, str(d / "model.safetensors"))


def _case_missing_dir(src, d, state):
    return d / "does-not-exist", "f16", [str(d / "does-not-exist"), "not found"]


def _case_missing_config(src, d, state):
    variant(src, d, drop=("config.json",))
    return d, "f16", ["config.json", "missing"]


def _case_corrupt_config(src, d, state):
    variant(src, d)
    (d / "config.json").unlink()
    (d / "config.json").write_text('{"hidden_size": 64, "num_hidden_layers": ')
    return d, "f16", ["config.json", "invalid JSON"]


def _case_missing_tokenizer(src, d, state):
    variant(src, d, drop=("tokenizer.json", "vocab.json", "merges.txt"))
    return d, "f16", ["tokenizer", "tokenizer.json", "vocab.json", "merges.txt"]


def _case_missing_tokenizer_config(src, d, state):
    variant(src, d, drop=("tokenizer_config.json",))
    return d, "f16", ["tokenizer_config.json"]


def _case_missing_weights(src, d, state):
    variant(src, d, drop=("model.safetensors",))
    return d, "f16", ["model.safetensors"]


def _case_missing_tensor(src, d, state):
    variant(src, d)
    _rewrite_weights(d, state, drop=("llm.model.layers.1.mlp.up_proj.weight",))
    return d, "f16", ["missing tensor", "llm.model.layers.1.mlp.up_proj.weight"]


def _case_wrong_shape(src, d, state):
    variant(src, d)
    name = "llm.model.layers.0.self_attn.k_proj.weight"
    _rewrite_weights(d, state, replace={name: np.zeros((16, 64), np.float32)})
    return d, "f16", [name, "(32, 64)", "(16, 64)", "expected"]


def _case_extra_layer(src, d, state):
    variant(src, d)
    name = "llm.model.layers.2.mlp.up_proj.weight"
    _rewrite_weights(d, state, replace={name: np.zeros((128, 64), np.float32)})
    return d, "f16", ["unexpected tensor", name]


def _case_unknown_outtype(src, d, state):
    variant(src, d)
    return d, "q4_zz", ["unknown outtype", "q4_zz", "f16", "q8_0"]


def _case_truncated_weights(src, d, state):
    variant(src, d)
    data = (src / "model.safetensors").read_bytes()
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return d, "f16", ["model.safetensors"]


def _case_garbage_weights(src, d, state):
    variant(src, d)
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").write_bytes(b"\xff" * 64)
    return d, "f16", ["model.safetensors", "not a safetensors file"]


BAD_CASES = {
    "missing_dir": _case_missing_dir,
    "missing_config": _case_missing_config,
    "corrupt_config": _case_corrupt_config,
    "missing_tokenizer": _case_missing_tokenizer,
    "missing_tokenizer_config": _case_missing_tokenizer_config,
    "missing_weights": _case_missing_weights,
    "missing_tensor": _case_missing_tensor,
    "wrong_shape": _case_wrong_shape,
    "extra_layer": _case_extra_layer,
    "unknown_outtype": _case_unknown_outtype,
    "truncated_weights": _case_truncated_weights,
    "garbage_weights": _case_garbage_weights,
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input(tmp_path, tiny_hf, state, case):
    hf, outtype, words = BAD_CASES[case](tiny_hf, tmp_path / "hf", state)
    out_api, out_cli = tmp_path / "out_api", tmp_path / "out_cli"

    with pytest.raises(ConversionError) as ei:
        convert_checkpoint(hf, out_api, outtype=outtype, quiet=True)
    msg = str(ei.value)
    print(f"{case}: {msg}")
    for w in words:
        assert w in msg, f"{case}: message should mention {w!r}: {msg!r}"
    assert not out_api.exists() or not any(out_api.iterdir()), list(out_api.iterdir())

    exe = shutil.which("minicpmo-convert")
    assert exe, "minicpmo-convert must be on PATH after pip install"
    r = subprocess.run([exe, str(hf), "-o", str(out_cli), "--outtype", outtype, "-q"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"minicpmo-convert: error: {msg}", r.stderr  # no traceback
    assert "Traceback" not in r.stderr
    assert not out_cli.exists() or not any(out_cli.iterdir()), list(out_cli.iterdir())


def test_cli_converts_like_the_api(tmp_path, tiny_hf, tiny_f16_default):
    """Both with their defaults (the TTS matrices Q8_0 in an f16 file)."""
    exe = shutil.which("minicpmo-convert")
    assert exe
    r = subprocess.run([exe, str(tiny_hf), "-o", str(tmp_path), "--outtype", "F16"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    llm, omni = tmp_path / tiny_f16_default[0].name, tmp_path / tiny_f16_default[1].name
    assert r.stdout.splitlines() == [str(llm), str(omni)]  # the two paths, nothing else on stdout
    assert "token_embd.weight" in r.stderr  # per-tensor progress without -q
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([llm.name, omni.name])  # no .part
    # deterministic writer: byte-identical to the API's conversion (filecmp: a failure does not make
    # pytest diff two files of tens of MB)
    assert filecmp.cmp(llm, tiny_f16_default[0], shallow=False)
    assert filecmp.cmp(omni, tiny_f16_default[1], shallow=False)


def test_unwritable_output_leaves_no_part_file(tmp_path, tiny_hf):
    """Writing fails (a directory occupies the companion's name): OSError/ConversionError from the
    API, exit 1 from the CLI, and neither a temporary .part file nor a half model is left behind."""
    out = tmp_path / "out"
    (out / "MiniCPM-o-4_5-omni-F32.gguf").mkdir(parents=True)
    with pytest.raises((OSError, ConversionError)):
        convert_checkpoint(tiny_hf, out, outtype="f32", quiet=True)
    assert not list(out.glob("*.part"))
    exe = shutil.which("minicpmo-convert")
    r = subprocess.run([exe, str(tiny_hf), "-o", str(out), "--outtype", "f32", "-q"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("minicpmo-convert: error: "), r.stderr
    assert "Traceback" not in r.stderr
    assert not list(out.glob("*.part"))
    # the LLM file is not left behind naming a companion that was never written
    leftovers = sorted(p.name for p in out.iterdir() if p.name != "MiniCPM-o-4_5-omni-F32.gguf")
    assert leftovers == []
