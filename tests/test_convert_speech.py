"""Speech output in the omni companion GGUF (the speech contract, convert/SPEECH_CONTRACT.md; spec
§5, §8, §9): the TTS from model.safetensors, Token2Wav from assets/token2wav (flow.yaml + flow.pt,
hift.yaml + hift.pt) and the voices, converted from the tiny checkpoint by the converter users run
and read back with the `gguf` package's GGUFReader.

Expected names, shapes, transforms and storage types are written out below from the contract, not
imported from the converter; the sources are read with torch.load and safetensors (not the
converter's readers), and every weight norm is recomputed with torch's own _weight_norm.
"""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFValueType as V

from conftest import _import_convert
from gguf_values import decode, f16_round

convert = _import_convert("")
ConversionError = convert.ConversionError
convert_checkpoint = convert.convert_checkpoint
cli_main = _import_convert(".cli").main

# tiny dims (tiny_config; spec §8): TTS 64 wide, 2 layers, 4 heads (kv 4, head_dim 16), ffn 128,
# LLM width 64; Token2Wav: Conformer 64 wide, 2 heads, ffn 128, 2 + 2 blocks; DiT 64 wide, 2 layers,
# 2 heads x 32, ffn 256; HiFT base 32 (-> 16, 8, 4), F0 net 32; 3 CFM steps
E, LAYERS, HEADS, KV, HD, FF, L, NTEXT, NAUDIO = 64, 2, 4, 4, 16, 128, 64, 152064, 6562
D, EH, EFF, EB, EUB = 64, 2, 128, 2, 2
H, DL, DH, DHD, DFF = 64, 2, 2, 32, 256
M, VOC, SPK, HB, F0C = 80, 6561, 192, 32, 32
SPEECH_PREFIXES = ("tts.", "t2w.", "voice.")


# ------------------------------------------------------------------------------------------------
# expected contents, from the contract
# ------------------------------------------------------------------------------------------------

def weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """torch's own weight_norm (dim 0) in float64: the independent reference for every fold."""
    import torch

    return torch._weight_norm(torch.from_numpy(np.asarray(v, np.float64)),
                              torch.from_numpy(np.asarray(g, np.float64)), 0).numpy()


def expected_tts(st: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    want = {"tts.emb_text.weight": st["tts.emb_text.weight"]}
    layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_out": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(LAYERS):
        for short, hf in layer.items():
            want[f"tts.blk.{i}.{short}.weight"] = st[f"tts.model.layers.{i}.{hf}.weight"]
    want["tts.output_norm.weight"] = st["tts.model.norm.weight"]
    for k in (1, 2):
        for leaf in ("weight", "bias"):
            want[f"tts.proj{k}.{leaf}"] = st[f"tts.projector_semantic.linear{k}.{leaf}"]
    want["tts.emb_code.weight"] = st["tts.emb_code.0.weight"]
    # per output row: g[r] * v[r] / ||v[r]|| (written out in numpy; torch's version in another test)
    g = st["tts.head_code.0.parametrizations.weight.original0"].astype(np.float64)
    v = st["tts.head_code.0.parametrizations.weight.original1"].astype(np.float64)
    want["tts.head_code.weight"] = g * v / np.sqrt((v * v).sum(axis=1, keepdims=True))
    return want


def expected_flow(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    want: dict[str, np.ndarray] = {}

    def take(gguf: str, name: str, leaves=("weight", "bias")) -> None:
        for leaf in leaves:
            want[f"{gguf}.{leaf}"] = sd[f"{name}.{leaf}"]

    want["t2w.flow.tok_embd.weight"] = sd["input_embedding.weight"]
    take("t2w.flow.spk_proj", "spk_embed_affine_layer")
    take("t2w.flow.enc.embed", "encoder.embed.out.0")
    take("t2w.flow.enc.embed_norm", "encoder.embed.out.1")
    take("t2w.flow.enc.la_conv1", "encoder.pre_lookahead_layer.conv1")
    take("t2w.flow.enc.la_conv2", "encoder.pre_lookahead_layer.conv2")
    for stack, short, n in (("encoders", "blk", EB), ("up_encoders", "up_blk", EUB)):
        for i in range(n):
            g, s = f"t2w.flow.enc.{short}.{i}", f"encoder.{stack}.{i}"
            for a, b in (("attn_q", "linear_q"), ("attn_k", "linear_k"), ("attn_v", "linear_v"),
                         ("attn_out", "linear_out")):
                take(f"{g}.{a}", f"{s}.self_attn.{b}")  # key_bias true: linear_k has a bias
            take(f"{g}.attn_pos", f"{s}.self_attn.linear_pos", ("weight",))
            want[f"{g}.pos_bias_u"] = sd[f"{s}.self_attn.pos_bias_u"]
            want[f"{g}.pos_bias_v"] = sd[f"{s}.self_attn.pos_bias_v"]
            take(f"{g}.attn_norm", f"{s}.norm_mha")
            take(f"{g}.ffn_norm", f"{s}.norm_ff")
            take(f"{g}.ffn_up", f"{s}.feed_forward.w_1")
            take(f"{g}.ffn_down", f"{s}.feed_forward.w_2")
        if stack == "encoders":
            take("t2w.flow.enc.up_conv", "encoder.up_layer.conv")
            take("t2w.flow.enc.up_embed", "encoder.up_embed.out.0")
            take("t2w.flow.enc.up_embed_norm", "encoder.up_embed.out.1")
    take("t2w.flow.enc.out_norm", "encoder.after_norm")
    take("t2w.flow.enc_proj", "encoder_proj")
    e = "decoder.estimator."
    take("t2w.flow.dit.t_mlp1", e + "t_embedder.mlp.0")
    take("t2w.flow.dit.t_mlp2", e + "t_embedder.mlp.2")
    take("t2w.flow.dit.in_proj", e + "in_proj")
    for i in range(DL):
        g, b = f"t2w.flow.dit.blk.{i}", f"{e}blocks.{i}"
        for a, s in (("attn_q", "attn.to_q"), ("attn_k", "attn.to_k"), ("attn_v", "attn.to_v"),
                     ("attn_q_norm", "attn.q_norm"), ("attn_k_norm", "attn.k_norm"), ("attn_out", "attn.proj"),
                     ("conv1", "conv.block.1"), ("conv_norm", "conv.block.3"), ("conv2", "conv.block.6"),
                     ("ffn_up", "mlp.fc1"), ("ffn_down", "mlp.fc2"), ("adaln", "adaLN_modulation.1")):
            take(f"{g}.{a}", f"{b}.{s}")
    take("t2w.flow.dit.final_adaln", e + "final_layer.adaLN_modulation.1")
    take("t2w.flow.dit.final_proj", e + "final_layer.linear")
    return want


def expected_hift(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """hift.pt (prefix `generator.`) -> contract names; weight-normed weights folded by torch."""
    want: dict[str, np.ndarray] = {}

    def conv(gguf: str, name: str) -> None:
        p = "generator." + name
        if p + ".weight" in sd:
            want[gguf + ".weight"] = sd[p + ".weight"]
        else:
            want[gguf + ".weight"] = weight_norm(sd[p + ".parametrizations.weight.original0"],
                                                 sd[p + ".parametrizations.weight.original1"])
        want[gguf + ".bias"] = sd[p + ".bias"]

    def resblock(gguf: str, name: str) -> None:
        for j in range(3):
            conv(f"{gguf}.c1.{j}", f"{name}.convs1.{j}")
            conv(f"{gguf}.c2.{j}", f"{name}.convs2.{j}")
            want[f"{gguf}.a1.{j}.alpha"] = sd[f"generator.{name}.activations1.{j}.alpha"]
            want[f"{gguf}.a2.{j}.alpha"] = sd[f"generator.{name}.activations2.{j}.alpha"]

    for j in range(5):
        conv(f"t2w.hift.f0.conv{j}", f"f0_predictor.condnet.{2 * j}")
    conv("t2w.hift.f0.proj", "f0_predictor.classifier")
    conv("t2w.hift.source", "m_source.l_linear")
    conv("t2w.hift.conv_pre", "conv_pre")
    for i in range(3):
        conv(f"t2w.hift.up.{i}", f"ups.{i}")
        conv(f"t2w.hift.src_down.{i}", f"source_downs.{i}")
        resblock(f"t2w.hift.src_res.{i}", f"source_resblocks.{i}")
    for r in range(9):
        resblock(f"t2w.hift.res.{r}", f"resblocks.{r}")
    conv("t2w.hift.conv_post", "conv_post")
    return want


# spec §8 / §5.2.5 shapes of some tensors, spelled out (the rest follow from the sources' shapes)
SHAPES = {
    "tts.emb_text.weight": (NTEXT, E), "tts.blk.1.attn_k.weight": (KV * HD, E), "tts.blk.0.ffn_down.weight": (E, FF),
    "tts.proj1.weight": (E, L), "tts.emb_code.weight": (NAUDIO, E), "tts.head_code.weight": (NAUDIO, E),
    "t2w.flow.tok_embd.weight": (VOC, D), "t2w.flow.spk_proj.weight": (M, SPK),
    "t2w.flow.enc.la_conv1.weight": (D, D, 4), "t2w.flow.enc.up_conv.weight": (D, D, 5),
    "t2w.flow.enc.blk.1.pos_bias_u": (EH, D // EH), "t2w.flow.enc.up_blk.1.ffn_up.weight": (EFF, D),
    "t2w.flow.dit.in_proj.weight": (H, 4 * M), "t2w.flow.dit.t_mlp1.weight": (H, 256),
    "t2w.flow.dit.blk.1.adaln.weight": (9 * H, H), "t2w.flow.dit.blk.0.attn_q_norm.weight": (DHD,),
    "t2w.flow.dit.blk.0.ffn_up.weight": (DFF, H), "t2w.flow.dit.final_adaln.weight": (2 * H, H),
    "t2w.hift.conv_pre.weight": (HB, M, 7), "t2w.hift.up.0.weight": (HB, HB // 2, 16), "t2w.hift.up.0.bias": (HB // 2,),
    "t2w.hift.up.2.weight": (HB // 4, HB // 8, 7), "t2w.hift.src_down.0.weight": (HB // 2, 18, 30),
    "t2w.hift.src_down.1.weight": (HB // 4, 18, 6), "t2w.hift.src_down.2.weight": (HB // 8, 18, 1),
    "t2w.hift.res.8.c1.2.weight": (HB // 8, HB // 8, 11), "t2w.hift.src_res.2.c2.0.weight": (HB // 8, HB // 8, 11),
    "t2w.hift.conv_post.weight": (18, HB // 8, 7), "t2w.hift.f0.conv0.weight": (F0C, M, 3),
    "t2w.hift.f0.proj.weight": (1, F0C), "t2w.hift.source.weight": (1, 9),
    "voice.default.tokens": (50,), "voice.default.spk": (SPK,), "voice.default.mel": (100, M),
}
TABLES = ("tts.emb_text.weight", "tts.emb_code.weight", "t2w.flow.tok_embd.weight")


def expected_type(name: str, shape: tuple[int, ...], outtype: str, tts_outtype: str | None = None) -> Q:
    """The contract's storage policy."""
    if name.startswith("voice."):
        return Q.I32 if name.endswith(".tokens") else Q.F32
    if len(shape) == 1 or name.endswith(("pos_bias_u", "pos_bias_v")):
        return Q.F32
    table = Q.F32 if outtype == "f32" else Q.F16
    if name in TABLES or name.startswith("t2w.hift.") or len(shape) == 3:  # tables, vocoder, conv kernels
        return table
    if name.startswith("tts.") and tts_outtype is not None:  # the TTS decoder's matrices have a type of their own
        outtype = tts_outtype
    matrix = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[outtype]
    return Q.F16 if matrix == Q.Q8_0 and shape[-1] % 32 else matrix


def speech_tensors(path: Path) -> dict:
    return {t.name: t for t in GGUFReader(path).tensors if t.name.startswith(SPEECH_PREFIXES)}


@pytest.fixture(scope="module")
def state(tiny_hf) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(tiny_hf / "model.safetensors"))


def _torch_state(path: Path) -> dict[str, np.ndarray]:
    import torch

    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


@pytest.fixture(scope="module")
def expected(tiny_hf, state) -> dict[str, np.ndarray]:
    t2w = tiny_hf / "assets" / "token2wav"
    want = {**expected_tts(state), **expected_flow(_torch_state(t2w / "flow.pt")),
            **expected_hift(_torch_state(t2w / "hift.pt"))}
    with np.load(t2w / "default_voice.npz") as z:
        for k in ("tokens", "spk", "mel"):
            want[f"voice.default.{k}"] = z[k]
    return want


# tensors whose values the converter computed (weight-norm folds): compared within rounding
def _folded(name: str, expected_names: dict) -> bool:
    return name == "tts.head_code.weight" or (name.startswith("t2w.hift.") and name.endswith(".weight") and
                                              not name.startswith(("t2w.hift.src_down", "t2w.hift.f0.proj",
                                                                   "t2w.hift.source")))


# ------------------------------------------------------------------------------------------------
# tensors
# ------------------------------------------------------------------------------------------------

@pytest.mark.torch  # `expected` reads the assets with torch.load
def test_f32_tensors(tiny_f32, expected):
    got = speech_tensors(tiny_f32[1])
    assert set(got) == set(expected), (sorted(set(got) ^ set(expected)))[:10]
    for name, want in expected.items():
        t = got[name]
        shape = tuple(int(x) for x in reversed(t.shape))
        assert shape == want.shape, name
        if name in SHAPES:
            assert shape == SHAPES[name], name
        assert t.tensor_type == expected_type(name, shape, "f32"), name
        if t.tensor_type == Q.I32:
            assert np.array_equal(np.asarray(t.data).reshape(shape), want), name
        elif _folded(name, expected):
            # folded in float64 and rounded once: within half a float32 ulp of torch's float64 fold
            # (plus 1e-12 relative for float64 rounding differences between the two computations)
            err = np.abs(decode(t).astype(np.float64) - want)
            assert np.all(err <= (2.0 ** -24 + 1e-12) * np.abs(want)), (name, err.max())
        else:
            assert np.array_equal(decode(t), want), name  # F32 -> F32 is lossless
    # unused checkpoint tensors are not written
    assert not [n for n in got if "embed_tokens" in n or "spk" in n and n.startswith("tts.")]


@pytest.mark.torch
def test_tts_head_fold_matches_torch_weight_norm(state, tiny_f32):
    """The same fold as test_f32_tensors' numpy formula, by torch's weight_norm (dim=0)."""
    ref = weight_norm(state["tts.head_code.0.parametrizations.weight.original0"],
                      state["tts.head_code.0.parametrizations.weight.original1"])
    got = decode(speech_tensors(tiny_f32[1])["tts.head_code.weight"]).astype(np.float64)
    assert np.all(np.abs(got - ref) <= (2.0 ** -24 + 1e-12) * np.abs(ref))  # as above
    # each row's norm is its gain (the property weight norm guarantees), to float32 rounding
    g = state["tts.head_code.0.parametrizations.weight.original0"][:, 0]
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), g, rtol=1e-6)


@pytest.fixture(scope="module")
def tiny_q8(tmp_path_factory, tiny_hf):
    return convert_checkpoint(tiny_hf, tmp_path_factory.mktemp("speech_q8"), outtype="q8_0", quiet=True)


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory, tiny_hf):
    return convert_checkpoint(tiny_hf, tmp_path_factory.mktemp("speech_bf16"), outtype="bf16", quiet=True)


@pytest.mark.torch  # `expected` reads the assets with torch.load
@pytest.mark.parametrize("outtype,tts_outtype", [("f16", "f16"), ("f16", None), ("bf16", None), ("q8_0", None)])
def test_storage_types_and_rounding(outtype, tts_outtype, tiny_f16, tiny_f16_default, tiny_bf16, tiny_q8, expected):
    """tiny_f16 asks for F16 TTS matrices; the others take the converter's default: Q8_0 TTS
    matrices in f16 and bf16 files, the file's type in q8_0 ones."""
    path = {("f16", "f16"): tiny_f16, ("f16", None): tiny_f16_default, ("bf16", None): tiny_bf16,
            ("q8_0", None): tiny_q8}[(outtype, tts_outtype)][1]
    if tts_outtype is None and outtype in ("f16", "bf16"):
        tts_outtype = "q8_0"
    got = speech_tensors(path)
    assert set(got) == set(expected)
    seen = set()
    for name, want in expected.items():
        t = got[name]
        shape = tuple(int(x) for x in reversed(t.shape))
        qtype = expected_type(name, shape, outtype, tts_outtype)
        assert t.tensor_type == qtype, (name, t.tensor_type)
        seen.add(qtype)
        if qtype == Q.I32:
            assert np.array_equal(np.asarray(t.data).reshape(shape), want), name
            continue
        vals, x = decode(t).astype(np.float64), np.asarray(want, np.float64)
        if qtype == Q.F32:
            bound = (2.0 ** -24 + 1e-12) * np.abs(x) if _folded(name, expected) else 0 * x  # exact unless folded
        elif qtype == Q.F16:
            # round to nearest: half an ulp (2^-11 relative, 2^-25 absolute for subnormals); folded values
            # are rounded to float32 first (2^-24 more)
            bound = (2.0 ** -11 + 2.0 ** -24) * np.abs(x) + 2.0 ** -25
        elif qtype == Q.BF16:
            bound = (2.0 ** -8 + 2.0 ** -24) * np.abs(x)  # bfloat16: 8 significant bits, half an ulp
        else:
            # Q8_0 per block of 32: d = amax/127 (stored as f16), |x - q*d16| <= 0.5 d + 127 |d - d16|
            # <= 0.57 d (see test_convert_audio)
            d = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
            bound = np.broadcast_to(0.57 * d + 1e-12, (d.shape[0], 32)).reshape(x.shape)
        assert np.all(np.abs(vals - x) <= bound), (name, np.abs(vals - x).max())
        if qtype == Q.F16 and not _folded(name, expected):
            assert np.array_equal(vals, f16_round(x)), name  # exactly IEEE round-to-nearest-even
    if tts_outtype == "q8_0":
        assert got["tts.blk.0.ffn_down.weight"].tensor_type == Q.Q8_0  # 128 columns = 4 whole blocks
    if outtype == "q8_0":
        assert Q.Q8_0 in seen  # e.g. the TTS and Conformer matrices (64 columns = 2 blocks)
        assert got["t2w.flow.spk_proj.weight"].tensor_type == Q.Q8_0  # 192 columns = 6 whole blocks
    # conv kernels, HiFT and embedding tables are F16 outside f32 files, never block-quantized
    for n in ("t2w.flow.enc.la_conv1.weight", "t2w.hift.res.0.c1.0.weight", "t2w.hift.source.weight",
              "tts.emb_text.weight", "tts.emb_code.weight", "t2w.flow.tok_embd.weight"):
        assert got[n].tensor_type == Q.F16, n


# ------------------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------------------

def read_kv(path: Path, prefix: str) -> dict:
    fields = GGUFReader(path).fields
    return {k: (list(f.types), f.contents()) for k, f in fields.items() if k.startswith(prefix)}


def f32(x: float) -> float:
    return float(np.float32(x))


def test_tts_keys(tiny_f32, tiny_f16):
    u, f, s, b = [V.UINT32], [V.FLOAT32], [V.STRING], [V.BOOL]
    want = {
        "n_embd": (u, E), "n_layer": (u, LAYERS), "n_head": (u, HEADS), "n_head_kv": (u, KV), "head_dim": (u, HD),
        "n_ff": (u, FF), "n_ctx_train": (u, 4096), "rms_norm_eps": (f, f32(1e-6)), "rope_theta": (f, 10000.0),
        "rope_type": (s, "neox"), "hidden_act": (s, "silu"), "n_embd_llm": (u, L), "n_vocab_text": (u, NTEXT),
        "n_vocab_audio": (u, NAUDIO), "audio_eos_id": (u, 6561), "audio_bos_token_id": (u, 151687),
        "text_eos_token_id": (u, 151692), "projector_act": (s, "relu"), "normalize_projected_hidden": (b, True),
        "normalize_eps": (f, f32(1e-12)), "condition_type": (s, "hidden_text_merge"),
        "attention_type": (s, "full_attention"), "stream.text_chunk_tokens": (u, 10),
        "stream.audio_chunk_tokens": (u, 25), "duplex.tokens_per_unit": (u, 25),
    }
    # spec §5.1 sampling table
    for mode, (top_p, top_k, keep, lo, hi, scope, plain) in {
            "chat": (0.85, 25, 3, 50, 2048, "call", "call"), "stream": (0.85, 25, 3, 0, 500, "turn", "stream"),
            "duplex": (1.0, 0, 1, 25, 25, "call", "call")}.items():
        want.update({f"{mode}.temperature": (f, f32(0.8)), f"{mode}.repetition_penalty": (f, f32(1.05)),
                     f"{mode}.repetition_window": (u, 16), f"{mode}.repetition_scope": (s, scope),
                     f"{mode}.top_p": (f, f32(top_p)), f"{mode}.top_k": (u, top_k), f"{mode}.min_keep": (u, keep),
                     f"{mode}.min_new_tokens": (u, lo), f"{mode}.max_new_tokens": (u, hi),
                     f"{mode}.plain_first_sample": (s, plain)})
    want = {"minicpmo.tts." + k: v for k, v in want.items()}
    for path in (tiny_f32[1], tiny_f16[1]):  # the keys do not depend on the outtype
        assert read_kv(path, "minicpmo.tts.") == want


def test_token2wav_and_voice_keys(tiny_f32, tiny_f16):
    u, f, s, b, arr = [V.UINT32], [V.FLOAT32], [V.STRING], [V.BOOL], [V.ARRAY, V.UINT32]
    want = {
        "sample_rate": (u, 24000), "n_mel": (u, M), "mel_hop": (u, 480), "token_mel_ratio": (u, 2),
        "token_rate_hz": (u, 25), "mel_rate_hz": (u, 50),
        "prompt_mel.n_fft": (u, 1920), "prompt_mel.f_min": (f, 0.0), "prompt_mel.f_max": (f, 8000.0),
        "vocab_size": (u, VOC), "silence_token_id": (u, 4218), "chunk_tokens": (u, 25), "lookahead_tokens": (u, 3),
        "n_timesteps": (u, 3), "stream_cache_tail_frames": (u, 100),
        "flow.input_size": (u, D), "flow.spk_embed_dim": (u, SPK), "flow.spk_norm_eps": (f, f32(1e-12)),
        "enc.n_embd": (u, D), "enc.n_head": (u, EH), "enc.n_ff": (u, EFF), "enc.n_block": (u, EB),
        "enc.n_up_block": (u, EUB), "enc.pre_lookahead": (u, 3), "enc.up_stride": (u, 2),
        "enc.up_scale_factor": (f, 2.0), "enc.key_bias": (b, True), "enc.embed_norm_eps": (f, f32(1e-5)),
        "enc.block_norm_eps": (f, f32(1e-12)), "enc.after_norm_eps": (f, f32(1e-5)), "enc.activation": (s, "silu"),
        "enc.pos_enc": (s, "rel_pos_espnet"), "enc.pos_max_len": (u, 5000), "enc.lookahead_slope": (f, f32(0.01)),
        "cfm.cfg_rate": (f, f32(0.7)), "cfm.temperature": (f, 1.0), "cfm.t_scheduler": (s, "cosine"),
        "cfm.noise_frames": (u, 30000),
        "dit.n_embd": (u, H), "dit.n_layer": (u, DL), "dit.n_head": (u, DH), "dit.head_dim": (u, DHD),
        "dit.n_ff": (u, DFF), "dit.in_channels": (u, 320), "dit.out_channels": (u, M), "dit.t_freq_dim": (u, 256),
        "dit.t_scale": (f, 1000.0), "dit.t_max_period": (f, 10000.0), "dit.norm_eps": (f, f32(1e-6)),
        "dit.qk_norm_eps": (f, f32(1e-5)), "dit.conv_norm_eps": (f, f32(1e-5)), "dit.conv_kernel": (u, 3),
        "dit.mlp_act": (s, "gelu_tanh"),
        "hift.in_channels": (u, M), "hift.base_channels": (u, HB), "hift.nb_harmonics": (u, 8),
        "hift.nsf_alpha": (f, f32(0.1)), "hift.nsf_sigma": (f, f32(0.003)), "hift.voiced_threshold": (f, 10.0),
        "hift.upsample_rates": (arr, [8, 5, 3]), "hift.upsample_kernels": (arr, [16, 11, 7]),
        "hift.istft_n_fft": (u, 16), "hift.istft_hop": (u, 4), "hift.resblock_kernels": (arr, [3, 7, 11]),
        "hift.resblock_dilations": (arr, [1, 3, 5] * 3), "hift.source_resblock_kernels": (arr, [7, 7, 11]),
        "hift.source_resblock_dilations": (arr, [1, 3, 5] * 3), "hift.lrelu_slope": (f, f32(0.1)),
        "hift.post_lrelu_slope": (f, f32(0.01)), "hift.audio_limit": (f, f32(0.99)), "hift.magnitude_max": (f, 100.0),
        "hift.snake_eps": (f, f32(1e-9)), "hift.f0_channels": (u, F0C), "hift.f0_n_conv": (u, 5),
        "hift.stream_mel_cache_frames": (u, 8), "hift.stream_source_cache_samples": (u, 3840),
        "hift.crossfade_window": (s, "hamming"),
    }
    want = {"minicpmo.token2wav." + k: v for k, v in want.items()}
    for path in (tiny_f32[1], tiny_f16[1]):
        assert read_kv(path, "minicpmo.token2wav.") == want
        assert read_kv(path, "minicpmo.voice.") == {"minicpmo.voice.names": ([V.ARRAY, V.STRING], ["default"]),
                                                    "minicpmo.voice.default": ([V.STRING], "default")}
        comps = GGUFReader(path).fields["minicpmo.components"].contents()
        assert comps[-3:] == ["tts", "token2wav", "voice"]


def test_release_shaped_assets_give_the_spec_parameter_counts(tmp_path):
    """The converter's reading of a release-shaped flow.yaml (values of spec §5.2) and HiFT's
    defaults describes exactly the parameter counts of spec §7."""
    t2w = _import_convert(".token2wav_gguf")
    (tmp_path / "flow.yaml").write_text(
        "flow: !new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec\n"
        "    input_size: 512\n    output_size: 80\n    spk_embed_dim: 192\n    output_type: 'mel'\n    vocab_size: 6561\n"
        "    encoder: !new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2\n"
        "        input_size: 512\n        output_size: 512\n        pre_lookahead_len: 3\n        num_blocks: 6\n"
        "        num_up_blocks: 4\n        up_stride: 2\n        up_scale_factor: 2\n        attention_heads: 8\n"
        "        key_bias: true\n        linear_units: 2048\n        normalize_before: True\n"
        "    decoder: !new:cosyvoice2.flow.flow_matching.CausalConditionalCFM\n        inference_cfg_rate: 0.7\n"
        "        estimator: !new:cosyvoice2.flow.decoder_dit.DiT\n            in_channels: 320\n"
        "            out_channels: 80\n            mlp_ratio: 4.0\n            depth: 16\n            num_heads: 8\n"
        "            head_dim: 64\n            hidden_size: 512\n", encoding="utf-8")
    flow = t2w.flow_tensors(t2w.read_flow_config(tmp_path / "flow.yaml"))
    count = lambda pred: sum(int(np.prod(w.shape)) for w in flow if pred(w.name))  # noqa: E731
    assert count(lambda n: n.startswith("encoder.")) == 37_831_168  # spec §7: flow encoder (Conformer)
    assert count(lambda n: n.startswith(("input_embedding", "spk_embed", "encoder_proj"))) == 3_415_712
    assert count(lambda n: n.startswith("decoder.")) == 114_555_472  # DiT estimator
    hift = t2w.hift_tensors(t2w.read_hift_config(None))
    assert round(sum(int(np.prod(w.shape)) for w in hift) / 1e6, 1) == 20.8  # spec §7: "≈ 20.8 M"


# ------------------------------------------------------------------------------------------------
# variants of the tiny checkpoint
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def split_shards(tmp_path_factory, state) -> dict[str, Path]:
    """The tiny weights as three shards written once: everything but the TTS, the TTS but its
    output head, and the head; variants link them and may replace one."""
    from safetensors.numpy import save_file

    d = tmp_path_factory.mktemp("speech_shards")
    head = {k: v for k, v in state.items() if k.startswith("tts.head_code.")}
    tts = {k: v for k, v in state.items() if k.startswith("tts.") and k not in head}
    rest = {k: v for k, v in state.items() if not k.startswith("tts.")}
    for name, part in (("rest", rest), ("tts", tts), ("head", head)):
        save_file(part, str(d / f"{name}.safetensors"))
    return {"rest": d / "rest.safetensors", "tts": d / "tts.safetensors", "head": d / "head.safetensors"}


def variant(tiny_hf: Path, shards: dict[str, Path], dst: Path, config: dict | None = None,
            replace: dict[str, dict[str, np.ndarray]] | None = None, assets: bool = True) -> Path:
    """A copy of the tiny checkpoint (weights linked as shards, assets/token2wav copied so a case
    may change it); `replace` gives a shard's new contents."""
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True)
    for f in tiny_hf.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    if assets:
        shutil.copytree(tiny_hf / "assets", dst / "assets")
    weight_map = {}
    for key, path in shards.items():
        fname = f"{key}.safetensors"
        if replace and key in replace:
            save_file({k: np.ascontiguousarray(v) for k, v in replace[key].items()}, str(dst / fname))
            names = replace[key]
        else:
            (dst / fname).symlink_to(path)
            names = load_file(str(path))
        weight_map.update({k: fname for k in names})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if config is not None:
        (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_llm_file_and_other_components_unchanged_without_speech(tmp_path, tiny_hf, tiny_f16, split_shards):
    cfg = json.loads((tiny_hf / "config.json").read_text())
    cfg["init_tts"] = False
    hf = variant(tiny_hf, {"rest": split_shards["rest"]}, tmp_path / "hf", cfg, assets=False)
    llm, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f16", quiet=True)
    assert llm.read_bytes() == tiny_f16[0].read_bytes()  # the LLM file does not change at all
    r = GGUFReader(omni)
    assert r.fields["minicpmo.components"].contents() == ["vision", "audio"]
    assert not [k for k in r.fields if k.startswith(("minicpmo.tts.", "minicpmo.token2wav.", "minicpmo.voice."))]
    full = {t.name: t for t in GGUFReader(tiny_f16[1]).tensors}
    assert [t.name for t in r.tensors] == [n for n in full if not n.startswith(SPEECH_PREFIXES)]
    for t in r.tensors:
        assert np.array_equal(np.asarray(t.data), np.asarray(full[t.name].data)), t.name


def test_tts_without_assets_and_explicit_asset_folder(tmp_path, tiny_hf, tiny_f32, split_shards, capsys):
    hf = variant(tiny_hf, split_shards, tmp_path / "hf", assets=False)
    _, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f32", quiet=False)
    assert "no Token2Wav assets" in capsys.readouterr().err
    r = GGUFReader(omni)
    assert r.fields["minicpmo.components"].contents() == ["vision", "audio", "tts"]
    assert not [t for t in r.tensors if t.name.startswith(("t2w.", "voice."))]
    # the same assets given with --token2wav-dir from elsewhere: the same companion as the fixture's
    elsewhere = tmp_path / "my_assets"
    shutil.copytree(tiny_hf / "assets" / "token2wav", elsewhere)
    _, omni2 = convert_checkpoint(hf, tmp_path / "out2", outtype="f32", quiet=True, token2wav_dir=elsewhere)
    assert omni2.read_bytes() == tiny_f32[1].read_bytes()


@pytest.mark.torch
def test_safetensors_assets_and_old_weight_norm_spelling(tmp_path, tiny_hf, tiny_f32, split_shards):
    """flow.safetensors / hift.safetensors are preferred over the .pt files; weight norms stored as
    weight_g / weight_v (pre-parametrization torch) fold to the same tensors."""
    import torch

    from safetensors.numpy import save_file

    hf = variant(tiny_hf, split_shards, tmp_path / "hf")
    t2w = hf / "assets" / "token2wav"
    save_file(_torch_state(t2w / "flow.pt"), str(t2w / "flow.safetensors"))
    (t2w / "flow.pt").write_bytes(b"would fail if read")
    hift = OrderedDict()
    for k, v in torch.load(t2w / "hift.pt", weights_only=True).items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v")
        hift[k] = v
    torch.save(hift, t2w / "hift.pt")
    _, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f32", quiet=True)
    assert omni.read_bytes() == tiny_f32[1].read_bytes()


# ------------------------------------------------------------------------------------------------
# voices
# ------------------------------------------------------------------------------------------------

def _voice_npz(path: Path, n: int, seed: int, **override) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {"tokens": rng.integers(0, VOC, n).astype(np.int64), "spk": rng.standard_normal(SPK).astype(np.float32),
              "mel": rng.standard_normal((2 * n, M)).astype(np.float32)}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def _voice(r: GGUFReader, name: str) -> dict[str, np.ndarray]:
    ts = {t.name: t for t in r.tensors}
    tok = ts[f"voice.{name}.tokens"]
    assert tok.tensor_type == Q.I32
    return {"tokens": np.asarray(tok.data).reshape(-1), "spk": decode(ts[f"voice.{name}.spk"]),
            "mel": decode(ts[f"voice.{name}.mel"])}


def test_voice_options_at_conversion(tmp_path, tiny_hf, split_shards):
    hf = variant(tiny_hf, split_shards, tmp_path / "hf")
    mine = _voice_npz(tmp_path / "mine.npz", 30, 1)
    extra = _voice_npz(tmp_path / "extra.npz", 20, 2, tokens=np.arange(20)[None])  # leading 1-axis accepted
    _, omni = convert_checkpoint(hf, tmp_path / "out", outtype="f16", quiet=True, voice_npz=mine,
                                 voices=[("alice", extra)])
    r = GGUFReader(omni)
    assert r.fields["minicpmo.voice.names"].contents() == ["default", "alice"]
    assert r.fields["minicpmo.voice.default"].contents() == "default"
    for name, path in (("default", mine), ("alice", extra)):
        got = _voice(r, name)
        with np.load(path) as z:
            assert np.array_equal(got["tokens"], z["tokens"].reshape(-1))
            assert np.array_equal(got["spk"], z["spk"]) and np.array_equal(got["mel"], z["mel"])  # F32 always


def test_add_voices_to_an_existing_companion(tmp_path, tiny_f16):
    """--omni FILE --add-voice: the voices are appended; every other key and tensor is unchanged."""
    from test_voice_frontend import write_stand_in_onnx
    import soundfile

    omni = tmp_path / "omni.gguf"
    shutil.copy(tiny_f16[1], omni)
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    write_stand_in_onnx(onnx_dir)
    rng = np.random.default_rng(3)
    soundfile.write(tmp_path / "ref.wav", (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32), 16000)
    bob = _voice_npz(tmp_path / "bob.npz", 12, 4)
    rc = cli_main(["--omni", str(omni), "--add-voice", f"bob={bob}", "--add-voice", f"eve={tmp_path / 'ref.wav'}",
                   "--token2wav-dir", str(onnx_dir), "-q"])
    assert rc == 0
    before, after = GGUFReader(tiny_f16[1]), GGUFReader(omni)
    changed = {"minicpmo.components", "minicpmo.voice.names", "minicpmo.voice.default"}
    for k, f in before.fields.items():
        if k not in changed and not k.startswith("GGUF."):
            assert list(after.fields[k].types) == list(f.types) and after.fields[k].contents() == f.contents(), k
    assert after.fields["minicpmo.voice.names"].contents() == ["default", "bob", "eve"]
    assert after.fields["minicpmo.voice.default"].contents() == "default"
    assert after.fields["minicpmo.components"].contents() == before.fields["minicpmo.components"].contents()
    new = {t.name: t for t in after.tensors}
    for t in before.tensors:
        assert new[t.name].tensor_type == t.tensor_type and np.array_equal(
            np.asarray(new[t.name].data), np.asarray(t.data)), t.name
    with np.load(bob) as z:
        got = _voice(after, "bob")
        assert np.array_equal(got["tokens"], z["tokens"]) and np.array_equal(got["mel"], z["mel"])
    eve = _voice(after, "eve")
    assert eve["tokens"].shape == (50,) and eve["mel"].shape == (100, M) and eve["spk"].shape == (SPK,)
    assert not (tmp_path / "omni.gguf.part").exists()

    # errors: the name exists, not a companion, no voice, nothing changed by a failed call
    snapshot = omni.read_bytes()
    assert cli_main(["--omni", str(omni), "--add-voice", f"bob={bob}", "-q"]) == 1
    assert cli_main(["--omni", str(tiny_f16[0]), "--add-voice", f"x={bob}", "-q"]) == 1
    assert cli_main(["--omni", str(omni), "--add-voice", f"w={tmp_path / 'ref.wav'}", "-q"]) == 1  # no ONNX dir
    assert omni.read_bytes() == snapshot
    with pytest.raises(SystemExit):
        cli_main(["--omni", str(omni)])


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------

def _torch():
    """torch, imported by the bad-input cases that rewrite a .pt asset (TORCH_CASES, marked torch)."""
    import torch

    return torch


def _rewrite_pt(path: Path, edit) -> None:
    torch = _torch()
    sd = torch.load(path, weights_only=True)
    edit(sd)
    torch.save(sd, path)


def _edit_yaml(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _tts_cfg(cfg: dict, **kw) -> dict:
    return {**cfg, "tts_config": {**cfg["tts_config"], **kw}}


def _case_setup(case: str, hf: Path, tmp: Path, cfg: dict, state: dict):
    """Breaks the variant `hf` in one way; returns (config or None, convert kwargs, words the error
    message must contain)."""
    t2w = hf / "assets" / "token2wav"
    flow_pt, hift_pt, flow_yaml, hift_yaml = t2w / "flow.pt", t2w / "hift.pt", t2w / "flow.yaml", t2w / "hift.yaml"
    if case == "missing_flow_pt":
        flow_pt.unlink()
        return None, {}, ["missing flow.pt", "flow.safetensors", str(t2w)]
    if case == "corrupt_flow_pt":
        flow_pt.write_bytes(b"\x00" * 100)
        return None, {}, ["flow.pt", "not a torch zip archive"]
    if case == "flow_missing_tensor":
        _rewrite_pt(flow_pt, lambda sd: sd.pop("encoder.encoders.1.norm_ff.bias"))
        return None, {}, ["flow.pt: tensor encoder.encoders.1.norm_ff.bias is missing"]
    if case == "flow_wrong_shape":
        _rewrite_pt(flow_pt, lambda sd: sd.__setitem__("decoder.estimator.in_proj.weight", _torch().zeros(H, 300)))
        return None, {}, ["flow.pt: tensor decoder.estimator.in_proj.weight", "(64, 320)", "(64, 300)"]
    if case == "flow_extra_tensor":
        _rewrite_pt(flow_pt, lambda sd: sd.__setitem__("encoder.extra.weight", _torch().zeros(2)))
        return None, {}, ["flow.pt: tensor encoder.extra.weight is unexpected", "flow.yaml"]
    if case == "flow_int_tensor":
        _rewrite_pt(flow_pt, lambda sd: sd.__setitem__("encoder.after_norm.bias", _torch().zeros(D, dtype=_torch().int32)))
        return None, {}, ["encoder.after_norm.bias", "unsupported dtype I32"]
    if case == "hift_extra_tensor":
        _rewrite_pt(hift_pt, lambda sd: sd.__setitem__("generator.extra.alpha", _torch().zeros(2)))
        return None, {}, ["hift.pt: tensor generator.extra.alpha is unexpected"]
    if case == "hift_mixed_prefix":
        _rewrite_pt(hift_pt, lambda sd: sd.__setitem__("conv_post.bias", sd.pop("generator.conv_post.bias")))
        return None, {}, ["hift.pt", "conv_post.bias", "lacks the 'generator.' prefix"]
    if case == "hift_half_weight_norm":
        _rewrite_pt(hift_pt, lambda sd: sd.pop("generator.conv_pre.parametrizations.weight.original0"))
        return None, {}, ["hift.pt: tensor generator.conv_pre.parametrizations.weight.original1 has no weight-norm "
                          "partner", "generator.conv_pre.parametrizations.weight.original0 is missing"]
    if case == "hift_weight_norm_shape":
        _rewrite_pt(hift_pt, lambda sd: sd.__setitem__("generator.ups.1.parametrizations.weight.original0",
                                                        _torch().ones(3, 1, 1)))
        return None, {}, ["ups.1.weight", "gain of shape (3, 1, 1)", "(16, 8, 11)"]
    if case == "flow_yaml_missing":
        flow_yaml.unlink()
        return None, {}, ["missing flow.yaml"]
    if case == "flow_yaml_heads":
        _edit_yaml(flow_yaml, "attention_heads: 2", "attention_heads: 3")
        return None, {}, ["flow.yaml: flow.encoder", "output_size 64", "attention_heads 3"]
    if case == "flow_yaml_dit_in":
        _edit_yaml(flow_yaml, "in_channels: 320", "in_channels: 321")
        return None, {}, ["flow.decoder.estimator", "in_channels 321", "4 x"]
    if case == "flow_yaml_post_norm":
        _edit_yaml(flow_yaml, "normalize_before: True", "normalize_before: False")
        return None, {}, ["'normalize_before' false is not supported"]
    if case == "flow_yaml_bad_number":
        _edit_yaml(flow_yaml, "num_blocks: 2", "num_blocks: two")
        return None, {}, ["flow.yaml: flow.encoder", "'num_blocks'", "'two'"]
    if case == "flow_yaml_python_tag":
        flow_yaml.write_text("flow: !!python/object/apply:os.system ['echo hi']\n")
        return None, {}, ["flow.yaml", "invalid YAML"]
    if case == "flow_yaml_no_flow":
        flow_yaml.write_text("hift: {}\n")
        return None, {}, ["flow.yaml: missing 'flow'"]
    if case == "hift_yaml_rates":
        _edit_yaml(hift_yaml, "upsample_rates: [8, 5, 3]", "upsample_rates: [8, 5, 5]")
        _edit_yaml(hift_yaml, "upsample_kernel_sizes: [16, 11, 7]", "upsample_kernel_sizes: [16, 11, 11]")
        return None, {}, ["800 samples per mel frame", "50 mel frames per second"]
    if case == "hift_yaml_kernel":
        _edit_yaml(hift_yaml, "upsample_kernel_sizes: [16, 11, 7]", "upsample_kernel_sizes: [16, 12, 7]")
        return None, {}, ["hift.yaml", "kernel 12 with rate 5"]
    if case == "hift_yaml_22050":
        _edit_yaml(hift_yaml, "sampling_rate: 24000", "sampling_rate: 22050")
        return None, {}, ["22050 Hz HiFT variant"]
    if case == "tts_llm_dim":
        return _tts_cfg(cfg, llm_dim=32), {}, ["tts_config", "llm_dim 32", "hidden_size 64"]
    if case == "tts_num_vq":
        return _tts_cfg(cfg, num_vq=2), {}, ["tts_config", "num_vq 2"]
    if case == "tts_act":
        return _tts_cfg(cfg, hidden_act="gelu"), {}, ["tts_config", "'hidden_act' 'gelu'", "'silu'"]
    if case == "tts_condition":
        return _tts_cfg(cfg, condition_type="llm_hidden"), {}, ["'condition_type' 'llm_hidden'"]
    if case == "tts_bos_out_of_range":
        return _tts_cfg(cfg, audio_bos_token_id=152064), {}, ["audio_bos_token_id", "not a row of emb_text"]
    if case == "tts_prelook":
        return _tts_cfg(cfg, s3_stream_prelook_size=2), {}, ["s3_stream_prelook_size 2", "pre_lookahead_len 3"]
    if case == "tts_steps":
        return _tts_cfg(cfg, s3_stream_n_timesteps=0), {}, ["'s3_stream_n_timesteps'", "positive integer"]
    if case == "tts_init_not_bool":
        return {**cfg, "init_tts": "yes"}, {}, ["'init_tts'", "'yes'"]
    if case == "no_tts_config":
        return {k: v for k, v in cfg.items() if k != "tts_config"}, {}, ["'tts_config'"]
    if case == "tts_head_half":
        head = {k: v for k, v in state.items() if k.endswith("original1") and k.startswith("tts.head_code")}
        return None, {"replace": {"head": head}}, ["tts.head_code.0", "no weight-norm partner"]
    if case == "tts_emb_code_shape":
        tts = {k: v for k, v in state.items() if k.startswith("tts.") and not k.startswith("tts.head_code")}
        tts["tts.emb_code.0.weight"] = np.zeros((6561, E), np.float32)
        return None, {"replace": {"tts": tts}}, ["tts.emb_code.0.weight", "(6562, 64)", "(6561, 64)"]
    if case == "tts_unexpected":
        tts = {k: v for k, v in state.items() if k.startswith("tts.") and not k.startswith("tts.head_code")}
        tts["tts.model.layers.2.mlp.up_proj.weight"] = np.zeros((FF, E), np.float32)
        return None, {"replace": {"tts": tts}}, ["unexpected tensor tts.model.layers.2.mlp.up_proj.weight"]
    if case == "voice_tokens_range":
        p = _voice_npz(tmp / "v.npz", 10, 0, tokens=np.full(10, 6561))
        return None, {"voice_npz": p}, ["v.npz", "[0, 6561)", "6561..6561"]
    if case == "voice_tokens_wrap":  # 2^32 would wrap to 0 if narrowed before the range check
        p = _voice_npz(tmp / "v.npz", 10, 0, tokens=np.full(10, 2**32, np.int64))
        return None, {"voice_npz": p}, ["[0, 6561)", "4294967296"]
    if case == "tts_head_twice":
        head = {k: v for k, v in state.items() if k.startswith("tts.head_code")}
        head["tts.head_code.0.weight"] = np.zeros((NAUDIO, E), np.float32)
        return None, {"replace": {"head": head}}, ["tts.head_code.0.weight is stored both plain and weight-normed"]
    if case == "voice_mel_frames":
        p = _voice_npz(tmp / "v.npz", 10, 0, mel=np.zeros((19, M), np.float32))
        return None, {"voice_npz": p}, ["'mel' must be (20, 80)", "(19, 80)"]
    if case == "voice_too_long":
        return None, {"voice_npz": _voice_npz(tmp / "v.npz", 426, 0)}, ["426 prompt tokens", "852 mel frames", "850"]
    if case == "voice_missing_array":
        np.savez(tmp / "v.npz", tokens=np.arange(3), mel=np.zeros((6, M), np.float32))
        return None, {"voice_npz": tmp / "v.npz"}, ["missing array(s) spk"]
    if case == "voice_spk_size":
        return None, {"voice_npz": _voice_npz(tmp / "v.npz", 5, 0, spk=np.zeros(80, np.float32))}, \
            ["'spk' must be 192 finite values"]
    if case == "voice_float_tokens":
        return None, {"voice_npz": _voice_npz(tmp / "v.npz", 5, 0, tokens=np.zeros(5))}, ["'tokens' must be integers"]
    if case == "voice_not_npz":
        (tmp / "v.npz").write_bytes(b"junk")
        return None, {"voice_npz": tmp / "v.npz"}, ["not a readable .npz voice", "tokens, spk, mel"]
    if case == "default_voice_corrupt":
        (t2w / "default_voice.npz").write_bytes(b"junk")
        return None, {}, ["default_voice.npz", "not a readable .npz voice"]
    if case == "two_default_sources":
        p = _voice_npz(tmp / "v.npz", 5, 0)
        return None, {"voice_npz": p, "voice_wav": tmp / "x.wav"}, ["either --voice-wav or --voice-npz"]
    if case == "voice_wav_without_onnx":
        import soundfile

        soundfile.write(tmp / "ref.wav", np.zeros(16000, np.float32), 16000)
        return None, {"voice_wav": tmp / "ref.wav"}, ["missing speech_tokenizer_v2_25hz.onnx", str(t2w)]
    if case == "duplicate_voice":
        p = _voice_npz(tmp / "v.npz", 5, 0)
        return None, {"voices": [("default", p)]}, ["voice 'default' is given twice"]
    if case == "bad_voice_name":
        p = _voice_npz(tmp / "v.npz", 5, 0)
        return None, {"voices": [("my voice", p)]}, ["voice name 'my voice'"]
    if case == "voices_without_assets":
        shutil.rmtree(hf / "assets")
        return None, {"voice_npz": _voice_npz(tmp / "v.npz", 5, 0)}, ["voices need the Token2Wav assets"]
    if case == "speech_options_without_tts":
        return {**cfg, "init_tts": False}, {"voice_npz": _voice_npz(tmp / "v.npz", 5, 0)}, ["init_tts false"]
    if case == "token2wav_dir_missing":
        return None, {"token2wav_dir": tmp / "nowhere"}, ["Token2Wav asset folder not found", "nowhere"]
    raise AssertionError(case)


BAD_CASES = [
    "missing_flow_pt", "corrupt_flow_pt", "flow_missing_tensor", "flow_wrong_shape", "flow_extra_tensor",
    "flow_int_tensor", "hift_extra_tensor", "hift_mixed_prefix", "hift_half_weight_norm", "hift_weight_norm_shape",
    "flow_yaml_missing", "flow_yaml_heads", "flow_yaml_dit_in", "flow_yaml_post_norm", "flow_yaml_bad_number",
    "flow_yaml_python_tag", "flow_yaml_no_flow", "hift_yaml_rates", "hift_yaml_kernel", "hift_yaml_22050",
    "tts_llm_dim", "tts_num_vq", "tts_act", "tts_condition", "tts_bos_out_of_range", "tts_prelook", "tts_steps",
    "tts_init_not_bool", "no_tts_config", "tts_head_half", "tts_emb_code_shape", "tts_unexpected",
    "voice_tokens_range", "voice_tokens_wrap", "tts_head_twice", "voice_mel_frames", "voice_too_long", "voice_missing_array", "voice_spk_size",
    "voice_float_tokens", "voice_not_npz", "default_voice_corrupt", "two_default_sources", "voice_wav_without_onnx",
    "duplicate_voice", "bad_voice_name", "voices_without_assets", "speech_options_without_tts",
    "token2wav_dir_missing",
]


# cases that rewrite a .pt asset with torch.save
TORCH_CASES = {"flow_missing_tensor", "flow_wrong_shape", "flow_extra_tensor", "flow_int_tensor", "hift_extra_tensor",
               "hift_mixed_prefix", "hift_half_weight_norm", "hift_weight_norm_shape"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.torch) if c in TORCH_CASES else c
                                  for c in BAD_CASES])
def test_bad_speech_input(tmp_path, tiny_hf, split_shards, state, case):
    cfg = json.loads((tiny_hf / "config.json").read_text())
    hf = variant(tiny_hf, split_shards, tmp_path / "hf")
    new_cfg, kwargs, words = _case_setup(case, hf, tmp_path, cfg, state)
    replace = kwargs.pop("replace", None)
    if replace is not None or new_cfg is not None:
        shutil.rmtree(hf)  # these cases change only config.json / a weight shard
        hf = variant(tiny_hf, split_shards, hf, new_cfg, replace)
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as ei:
        convert_checkpoint(hf, out, outtype="f16", quiet=True, **kwargs)
    msg = str(ei.value)
    print(f"{case}: {msg}")
    for w in words:
        assert w in msg, f"{case}: message should mention {w!r}: {msg!r}"
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())  # nothing left behind


def test_cli_reports_speech_errors(tmp_path, tiny_hf, capsys):
    rc = cli_main([str(tiny_hf), "-o", str(tmp_path / "o"), "--voice-npz", str(tmp_path / "none.npz"), "-q"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("minicpmo-convert: error: voice file not found") and "Traceback" not in err
    assert cli_main([str(tiny_hf), "--add-voice", "novalue", "-q"]) == 1
    assert "--add-voice expects NAME=FILE" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# generator
# ------------------------------------------------------------------------------------------------

@pytest.mark.torch
def test_make_tiny_token2wav_options(tmp_path, qwen2_vocab_gguf):
    import torch

    main = _import_convert(".make_tiny").main
    v = str(qwen2_vocab_gguf)
    assert main([str(tmp_path / "a"), "--vocab-gguf", v, "--components", "tts",
                 "--token2wav-dims", "enc_dim=32,enc_heads=4,dit_dim=48,dit_heads=3,dit_head_dim=16,hift_base=64"]) == 0
    t2w = tmp_path / "a" / "assets" / "token2wav"
    assert sorted(p.name for p in t2w.iterdir()) == ["default_voice.npz", "flow.pt", "flow.yaml", "hift.pt", "hift.yaml"]
    sd = torch.load(t2w / "flow.pt", weights_only=True)  # written without torch, read by torch
    assert tuple(sd["encoder.encoders.0.self_attn.pos_bias_u"].shape) == (4, 8)
    assert tuple(sd["decoder.estimator.blocks.0.attn.to_q.weight"].shape) == (48, 48)
    hift = torch.load(t2w / "hift.pt", weights_only=True)
    assert all(k.startswith("generator.") for k in hift)
    assert tuple(hift["generator.conv_pre.parametrizations.weight.original1"].shape) == (64, 80, 7)
    with np.load(t2w / "default_voice.npz") as z:
        assert z["tokens"].dtype == np.int32 and 0 <= z["tokens"].min() and z["tokens"].max() < VOC
        assert abs(np.linalg.norm(z["spk"]) - 1) < 1e-6 and z["mel"].shape == (2 * z["tokens"].size, M)
    _, omni = convert_checkpoint(tmp_path / "a", tmp_path / "out", outtype="f32", quiet=True)
    r = GGUFReader(omni)
    assert r.fields["minicpmo.components"].contents() == ["tts", "token2wav", "voice"]
    assert int(r.fields["minicpmo.token2wav.dit.n_head"].contents()) == 3
    # without Token2Wav: no assets folder (a stale one is removed), TTS only
    assert main([str(tmp_path / "a"), "--vocab-gguf", v, "--components", "tts", "--no-token2wav"]) == 0
    assert not (tmp_path / "a" / "assets").exists()
    assert main([str(tmp_path / "b"), "--vocab-gguf", v, "--token2wav-dims", "enc_width=3"]) == 1


def test_unknown_tts_outtype_is_refused(tiny_hf, tmp_path):
    with pytest.raises(ConversionError, match="unknown outtype 'q4'"):
        convert_checkpoint(tiny_hf, tmp_path / "out", outtype="f16", quiet=True, tts_outtype="q4")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written
