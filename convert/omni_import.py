"""`minicpmo-convert --from-omni-gguf DIR`: the official llama.cpp-omni GGUF set -> our two files.

LLM: the official qwen3 file re-keyed, not re-quantized: every key kept, `minicpmo.omni_file` and
`minicpmo.llm_fingerprint` added, every tensor copied byte for byte whatever its type (Q4_K_M, Q8_0,
F16, ...).

Companion: the official component files read through OfficialSource (omni_names.py) under the
checkpoint's names, checked and laid out by the same component plans as a conversion of the
checkpoint (vision_gguf, audio_gguf, tts_gguf, token2wav_gguf), so keys and tensor names are ours.
Each tensor keeps the official file's stored type where that type is F16 and our F16 layout has F16
there; otherwise it is F32 (an official F32 tensor stays F32; an F16 one our layout keeps in F32,
a norm or a bias, is widened exactly). Values are therefore the official ones, bit for bit.

What the official files do not record comes from the release's configuration (constants here and in
omni_components.py / omni_token2wav.py: MiniCPM-o 4.5's config.json, preprocessor_config.json and
flow.yaml values): the slicing limit, the TTS's
sampling settings and special ids, the Whisper front end's hop and chunk length. The official set
has no voice (prompt_cache.gguf holds the reference's precomputed flow caches, not its tokens,
x-vector and mel): add one with `minicpmo-convert --omni OUT --add-voice NAME=ref.wav`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from .audio_gguf import audio_component, check_audio
from .errors import ConversionError
from .gguf_write import PlannedTensor, Writer, write_gguf
from .llm_fingerprint import FINGERPRINT_KEY
from .omni_gguf import ARCH as OMNI_ARCH, FORMAT_VERSION
from .omni_components import add_audio, add_tts, add_vision
from .omni_names import OfficialSource
from .omni_set import GGUFTensors, find_omni_set, kv
from .omni_token2wav import check_official_token2wav
from .outtypes import OUTTYPES
from .speech import voice_component
from .token2wav_gguf import token2wav_component
from .tokens import NAMED_TOKENS
from .tts_gguf import check_tts, tts_component
from .vision_gguf import check_vision, vision_component

# MiniCPM-o 4.5's tts_config where the official files hold no value (the llama.cpp-omni runtime
# hard-codes the same numbers)
RELEASE_TTS = dict(audio_bos_token_id=151687, text_eos_token_id=151692, normalize_projected_hidden=True,
                   condition_type="hidden_text_merge", attention_type="full_attention", s3_stream_chunk_size=25,
                   s3_stream_n_timesteps=10, s3_stream_prelook_size=3)
RELEASE_ROPE_THETA = 1_000_000.0  # config.json rope_theta of the release (spec G2)
_FINGERPRINT_VERSION = b"minicpmo-llm-fingerprint-gguf-1\0"


@dataclass
class ImportReport:
    llm: Path
    omni: Path
    components: list[str]
    notes: list[str] = field(default_factory=list)
    kept_types: dict[str, int] = field(default_factory=dict)  # "F16"/"F32" -> tensors in the companion


def output_names(name: str, llm_file: Path) -> tuple[str, str]:
    """The LLM keeps its quantization label: {name}-{LABEL}.gguf and {name}-omni-{LABEL}.gguf, the
    label taken from the official file name's last dash-separated part (e.g. Q4_K_M)."""
    label = llm_file.stem.rsplit("-", 1)[-1] if "-" in llm_file.stem else llm_file.stem
    return f"{name}-{label}.gguf", f"{name}-omni-{label}.gguf"


# ------------------------------------------------------------------------------------------------
# the LLM
# ------------------------------------------------------------------------------------------------

def gguf_llm_fingerprint(llm: GGUFTensors) -> str:
    """Ties the two outputs together: hyper-parameters, vocabulary, and each tensor's name, shape,
    type and first/last 64 KiB of stored bytes (a whole-file hash would read GBs twice)."""
    h = hashlib.sha256(_FINGERPRINT_VERSION)

    def add(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    for key in sorted(llm.info.kv):
        if key.startswith(("qwen3.", "tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template")):
            add(f"{key}={llm.info.kv[key]!r}".encode("utf-8", "surrogatepass"))
    for t in llm.info.tensors:
        add(f"{t.name}:{t.shape}:{t.ggml_type}".encode())
        raw = llm.raw(t.name)
        add(bytes(raw[:65536]))
        add(bytes(raw[-65536:]))
    return h.hexdigest()


def _raw_kv_types(path: Path) -> dict[str, tuple[int, int | None]]:
    """key -> (GGUF value type, array element type): the official file's own, kept on copy."""
    import struct

    out: dict[str, tuple[int, int | None]] = {}
    with open(path, "rb") as f:
        head = f.read(24)
        n_kv = struct.unpack_from("<Q", head, 16)[0]
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

        def string() -> str:
            n = struct.unpack("<Q", f.read(8))[0]
            return f.read(n).decode("utf-8", errors="replace")

        def skip(vt: int) -> None:
            if vt == 8:
                f.seek(struct.unpack("<Q", f.read(8))[0], 1)
            elif vt == 9:
                sub, n = struct.unpack("<IQ", f.read(12))
                if sub in sizes:
                    f.seek(sizes[sub] * n, 1)
                else:
                    for _ in range(n):
                        skip(sub)
            else:
                f.seek(sizes[vt], 1)

        for _ in range(n_kv):
            key = string()
            vt = struct.unpack("<I", f.read(4))[0]
            sub = None
            if vt == 9:
                pos = f.tell()
                sub = struct.unpack("<I", f.read(4))[0]
                f.seek(pos)
            out[key] = (vt, sub)
            skip(vt)
    return out


def missing_llm_keys(llm: GGUFTensors) -> dict[str, float]:
    """Keys a correct MiniCPM-o 4.5 LLM file has and this one lacks. convert_hf_to_gguf.py reads the
    rope base from AutoConfig's `rope_theta`, which transformers >= 5 moves into `rope_parameters`:
    run there, it writes no qwen3.rope.freq_base and libllama would fall back to 10000."""
    if "qwen3.rope.freq_base" in llm.info.kv:
        return {}
    return {"qwen3.rope.freq_base": RELEASE_ROPE_THETA}


def write_llm(llm: GGUFTensors, path: Path, omni_basename: str, fingerprint: str, quiet: bool) -> Path:
    """Every key and tensor of the official LLM file, plus our two keys (and missing_llm_keys());
    tensor bytes copied."""
    arch = str(kv(llm, "general.architecture"))
    w = Writer(None, arch)
    for key, value in missing_llm_keys(llm).items():
        w.add_float32(key, value)
    types = _raw_kv_types(llm.path)
    for key, value in llm.info.kv.items():
        if key in ("general.architecture", "general.alignment", FINGERPRINT_KEY, "minicpmo.omni_file"):
            continue
        vt, sub = types[key]
        w.add_key_value(key, value, GGUFValueType(vt), sub_type=GGUFValueType(sub) if sub is not None else None)
    w.add_string("minicpmo.omni_file", omni_basename)
    w.add_string(FINGERPRINT_KEY, fingerprint)
    total = 0
    for t in llm.info.tensors:
        q = GGMLQuantizationType(t.ggml_type)
        nbytes = llm.nbytes(t.name)
        shape = tuple(int(n) for n in reversed(t.shape))
        block, size = gguf.GGML_QUANT_SIZES[q]
        # byte shape for the writer: the last (innermost) dim counted in bytes of whole blocks
        byte_shape = (*shape[:-1], shape[-1] // block * size)
        w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=q)
        total += nbytes
    tmp = path.with_name(path.name + ".part")
    done, last_pct = 0, -1
    try:
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t in llm.info.tensors:
            raw = llm.raw(t.name)  # memory-mapped: written through without a copy in memory
            w.write_tensor_data(raw)
            done += raw.shape[0]
            pct = done * 100 // max(total, 1)
            if not quiet and pct != last_pct:
                print(f"\rcopying LLM tensors: {pct:3d}% ({done >> 20} / {total >> 20} MiB)", end="",
                      file=sys.stderr, flush=True)
                last_pct = pct
        if not quiet:
            print(file=sys.stderr, flush=True)
        w.close()
        os.replace(tmp, path)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------------------------------
# the companion
# ------------------------------------------------------------------------------------------------

def _token_ids(llm: GGUFTensors) -> dict[str, int]:
    tokens = kv(llm, "tokenizer.ggml.tokens")
    index = {t: i for i, t in enumerate(tokens)}
    out = {}
    for key, text in NAMED_TOKENS.items():
        if text not in index:
            raise ConversionError(f"{llm.path}: the vocabulary lacks the MiniCPM-o token {text!r}")
        out[key] = index[text]
    return out


def _bad_token_ids(tokenizer_config: Path | None, n_vocab: int) -> list[int]:
    if tokenizer_config is None:
        return []
    try:
        tc = json.loads(Path(tokenizer_config).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConversionError(f"{tokenizer_config}: cannot read ({e})") from e
    ids = [int(x) for x in (tc.get("bad_token_ids") or [])]
    bad = [i for i in ids if not 0 <= i < n_vocab]
    if bad:
        raise ConversionError(f"{tokenizer_config}: bad_token_ids contains out-of-range id {bad[0]}")
    return ids


def _keep_stored_types(plan: list[PlannedTensor], src: OfficialSource) -> list[PlannedTensor]:
    """The official stored type where our layout takes it (see the module docstring)."""
    out = []
    for t in plan:
        name = t.hf_name
        if t.values is not None or name not in src:
            out.append(t)  # computed by the converter (mel filters, position tables): as planned
            continue
        stored = src.stored_type(name)
        keep_f16 = stored == GGMLQuantizationType.F16 and t.qtype == GGMLQuantizationType.F16
        q = GGMLQuantizationType.F16 if keep_f16 else GGMLQuantizationType.F32
        out.append(PlannedTensor(t.gguf_name, t.hf_name, q, t.shape, t.rows, t.transpose, t.values, t.source))
    return out


def import_omni_set(
    set_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str = "MiniCPM-o-4_5",
    quiet: bool = False,
    *,
    llm_file: str | os.PathLike | None = None,
    tokenizer_config: str | os.PathLike | None = None,
    resampler_heads: int | None = None,
    companion_only: bool = False,
) -> ImportReport:
    """Write {name}-{LABEL}.gguf and {name}-omni-{LABEL}.gguf in out_dir from the official set in
    set_dir. tokenizer_config: a checkpoint's tokenizer_config.json for its bad_token_ids (the
    official files carry none). resampler_heads: only for models narrower than the release.
    companion_only: write no LLM file; the companion names the official one (by its path relative to
    out_dir) and is loaded with it as OmniSession(official_llm, omni_path=companion); the official
    file has no fingerprint, so the pair is not checked (a warning says so at load)."""
    s = find_omni_set(set_dir, llm_file)
    llm = s.open(s.llm)
    hidden = int(kv(llm, "qwen3.embedding_length"))
    if "token_embd.weight" not in llm:
        raise ConversionError(f"{llm.path}: missing tensor token_embd.weight")
    vocab = llm.shape("token_embd.weight")[0]
    notes: list[str] = []
    src = OfficialSource()
    cfg: dict[str, Any] = {"hidden_size": hidden, "version": 4.5}
    pre: dict[str, Any] = {}
    for part, path in (("vision", s.vision), ("audio", s.audio), ("TTS", s.tts)):
        if path is None:
            notes.append(f"note: the set has no {part} file: the companion has no {part} component")
    if s.vision is not None:
        add_vision(src, s.open(s.vision), hidden, resampler_heads, cfg, pre)
    if s.audio is not None:
        add_audio(src, s.open(s.audio), hidden, cfg, pre)
    if s.tts is not None:
        add_tts(src, s.open(s.tts), s.open(s.projector) if s.projector else None, hidden, dict(RELEASE_TTS), cfg)

    if companion_only and missing_llm_keys(llm):
        raise ConversionError(f"{llm.path} lacks {', '.join(missing_llm_keys(llm))}: it cannot be used as it is; "
                              "import without --companion-only to get a re-keyed copy")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConversionError(f"cannot create output directory {out}: {e}") from e
    llm_name, omni_name = output_names(name, s.llm)
    if companion_only:
        llm_name = os.path.relpath(s.llm.resolve(), out.resolve())
    with tempfile.TemporaryDirectory(prefix="minicpmo-omni-import-") as tmp:
        if pre:
            (Path(tmp) / "preprocessor_config.json").write_text(json.dumps(pre))
        vision = check_vision(cfg, src, Path(tmp)) if s.vision is not None else None
        audio = check_audio(cfg, src, Path(tmp)) if s.audio is not None else None
    tts = check_tts(cfg, src, hidden) if s.tts is not None else None
    token2wav = None
    if tts is not None:
        token2wav, t2w_notes = check_official_token2wav(s, src, cfg["tts_config"])
        notes += t2w_notes
    if tts is not None and token2wav is not None:
        notes.append("note: the official set has no voice (token2wav-gguf/prompt_cache.gguf holds precomputed "
                     "flow caches, not the reference's tokens, x-vector and mel): add one with "
                     f"`minicpmo-convert --omni {out / omni_name} --add-voice NAME=ref.wav`")

    for key, value in missing_llm_keys(llm).items():
        notes.append(f"note: {llm.path.name} lacks {key} (written by convert_hf_to_gguf.py under transformers >= 5); "
                     f"the release's value {value:g} is added")
    fingerprint = gguf_llm_fingerprint(llm)
    w = Writer(None, OMNI_ARCH)
    w.add_name(name)
    w.add_type("model")
    w.add_file_type(int(OUTTYPES["f16"][1]))
    w.add_string("minicpmo.version", FORMAT_VERSION)
    w.add_string("minicpmo.llm_file", llm_name)
    if not companion_only:  # the official file has none to compare with
        w.add_string(FINGERPRINT_KEY, fingerprint)
    w.add_uint32("minicpmo.llm.embedding_length", hidden)
    w.add_uint32("minicpmo.llm.vocab_size", vocab)
    for key, token_id in _token_ids(llm).items():
        w.add_uint32(f"minicpmo.token.{key}", token_id)
    bad = _bad_token_ids(Path(tokenizer_config) if tokenizer_config else None, vocab)
    if tokenizer_config is None:
        notes.append("note: no bad_token_ids (the official files carry none; give --tokenizer-config "
                     "tokenizer_config.json of the checkpoint to add them)")
    w.add_typed_array("minicpmo.bad_token_ids", bad, GGUFValueType.INT32)
    plan: list[PlannedTensor] = []
    present: list[str] = []
    for comp, part, hook in (("vision", vision, vision_component), ("audio", audio, audio_component),
                             ("tts", tts, tts_component), ("token2wav", token2wav, token2wav_component),
                             ("voice", [], voice_component)):
        tensors = hook(part, w, "f16")
        if tensors:
            present.append(comp)
            plan.extend(_keep_stored_types(tensors, src))
    w.add_typed_array("minicpmo.components", present, GGUFValueType.STRING)

    if not quiet:
        for note in notes:
            print(note, file=sys.stderr, flush=True)
        if not companion_only:
            print(f"writing {out / llm_name} (tensors copied from {s.llm})", file=sys.stderr, flush=True)
    llm_path = s.llm if companion_only else write_llm(llm, out / llm_name, omni_name, fingerprint, quiet)
    if not quiet:
        print(f"writing companion {out / omni_name}", file=sys.stderr, flush=True)
    try:
        omni_path = write_gguf(w, out / omni_name, plan, src, quiet)
    except BaseException:
        if not companion_only:
            llm_path.unlink(missing_ok=True)
        raise
    kept: dict[str, int] = {}
    for t in plan:
        kept[t.qtype.name] = kept.get(t.qtype.name, 0) + 1
    return ImportReport(llm_path, omni_path, present, notes, kept)
