"""Make the official llama.cpp-omni GGUF set from a (tiny) MiniCPM-o checkpoint, the way the real
files were made: llama.cpp-omni's own conversion scripts (the oracle folder
../shared/oracles/llama.cpp-omni-0788f99, run as programs, never imported or copied), plus our own
writer of the Token2Wav files (official_token2wav.py: no published script makes those).

Layout written (the release's, README of llama.cpp-omni):
    OUT/MiniCPM-o-4_5-F16.gguf                 convert_hf_to_gguf.py on the LLM part, --outtype f16
    OUT/vision/MiniCPM-o-4_5-vision-F16.gguf   convert_vpm.py --minicpmv_version 100045
    OUT/audio/MiniCPM-o-4_5-audio-F16.gguf     convert_apm.py
    OUT/tts/MiniCPM-o-4_5-tts-F16.gguf         convert_hf_to_gguf.py on the TTS part, --outtype f16
    OUT/tts/MiniCPM-o-4_5-projector-F16.gguf   convert_projector.py
    OUT/token2wav-gguf/{encoder,flow_matching,flow_extra,hifigan2,prompt_cache}.gguf   ours

Step 1 of their pipeline, surgery.py, loads the checkpoint through the release's remote modeling code
(AutoModel with trust_remote_code), which a tiny checkpoint does not ship. What it writes is a plain
split of model.safetensors, so split_checkpoint() below writes the same folders from the tensors:
vpm/minicpmv.clip + minicpmv.projector, apm/minicpmo.whisper (torch.save'd float32 dicts with
surgery's key names), llm/ (a Qwen3 HF folder) and tts/ (the TTS module as a `llama` HF folder, the
config edits surgery makes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ORACLE = Path(os.environ.get("MINICPMO_OMNI_ORACLE",
                             Path(__file__).resolve().parents[2] / "shared" / "oracles" / "llama.cpp-omni-0788f99"))
_FALLBACK_ORACLE = Path("/work/shared/oracles/llama.cpp-omni-0788f99")

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "added_tokens.json", "generation_config.json")


def oracle_dir() -> Path | None:
    for d in (ORACLE, _FALLBACK_ORACLE):
        if (d / "convert_hf_to_gguf.py").is_file() and (d / "tools" / "omni" / "convert").is_dir():
            return d
    return None


def _save_torch(tensors: dict, path: Path) -> None:
    import torch

    torch.save({k: torch.from_numpy(v.copy()).float() for k, v in tensors.items()}, path)


def _save_safetensors(tensors: dict, path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: v.copy() for k, v in tensors.items()}, str(path))


def _copy_tokenizer(hf: Path, dst: Path) -> None:
    for name in _TOKENIZER_FILES:
        if (hf / name).is_file():
            shutil.copy2(hf / name, dst / name)
    tc = dst / "tokenizer_config.json"
    if tc.is_file():  # surgery's clean-up: no remote tokenizer class
        cfg = json.loads(tc.read_text())
        cfg.pop("auto_map", None)
        if "tokenizer_class" in cfg:
            cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        tc.write_text(json.dumps(cfg, indent=2))


def split_checkpoint(hf: Path, out: Path) -> None:
    """What surgery.py writes (see the module docstring), from model.safetensors directly."""
    from safetensors import safe_open

    with safe_open(str(hf / "model.safetensors"), "np") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads((hf / "config.json").read_text())
    for sub in ("vpm", "apm", "llm", "tts"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    _save_torch({k: v for k, v in sd.items() if k.startswith("resampler")}, out / "vpm" / "minicpmv.projector")
    _save_torch({k[len("vpm."):]: v for k, v in sd.items() if k.startswith("vpm.")}, out / "vpm" / "minicpmv.clip")
    # convert_vpm.py builds a SigLIP of vision_config.num_hidden_layers and loads it strictly: the
    # checkpoint stores the layers that run (drop_vision_last_layer already applied, spec G1), so the
    # config it reads must count those, as the released vision GGUF does
    stored = len({k.split(".")[3] for k in sd if k.startswith("vpm.encoder.layers.")})
    vpm_cfg = json.loads(json.dumps(cfg))
    vpm_cfg["vision_config"]["num_hidden_layers"] = stored
    (out / "vpm" / "config.json").write_text(json.dumps(vpm_cfg, indent=2))
    _save_torch({k: v for k, v in sd.items() if k.startswith(("apm.", "audio_projection_layer."))},
                out / "apm" / "minicpmo.whisper")
    shutil.copy2(hf / "config.json", out / "apm" / "config.json")

    # LLM: Qwen3ForCausalLM.save_pretrained -> names without the "llm." prefix, a qwen3 config
    _save_safetensors({k[len("llm."):]: v for k, v in sd.items() if k.startswith("llm.")},
                      out / "llm" / "model.safetensors")
    llm_cfg = {k: v for k, v in cfg.items() if not k.endswith("_config") and k not in ("auto_map", "architectures")}
    llm_cfg.update(model_type="qwen3", architectures=["Qwen3ForCausalLM"], auto_map={})
    (out / "llm" / "config.json").write_text(json.dumps(llm_cfg, indent=2))
    _copy_tokenizer(hf, out / "llm")

    # TTS: MiniCPMTTS.save_pretrained, config rewritten to llama the way surgery does
    _save_safetensors({k[len("tts."):]: v for k, v in sd.items() if k.startswith("tts.")},
                      out / "tts" / "model.safetensors")
    tts_cfg = dict(cfg["tts_config"])
    tts_cfg.setdefault("vocab_size", tts_cfg["num_audio_tokens"] + tts_cfg["num_text_tokens"])
    tts_cfg.setdefault("rms_norm_eps", 1e-6)
    tts_cfg.setdefault("rope_theta", 10000.0)
    tts_cfg.setdefault("tie_word_embeddings", False)
    tts_cfg.update(model_type="llama", architectures=["LlamaForCausalLM"], auto_map={})
    (out / "tts" / "config.json").write_text(json.dumps(tts_cfg, indent=2))
    _copy_tokenizer(hf, out / "tts")


# convert_hf_to_gguf.py imports mistral_common at the top for its Mistral model classes only, and
# sentencepiece first thing in its SentencePiece vocabulary path, which for a folder without
# tokenizer.model then raises FileNotFoundError and falls back to the GPT-2 BPE vocabulary (the Qwen
# and llama paths used here). Where a package is not installed, these placeholders let the import
# succeed; any real use of them fails (no such attribute / no arguments accepted).
_PLACEHOLDERS = {
    "mistral_common/tokens/tokenizers/base.py": "class TokenizerVersion:\n    pass\n",
    "mistral_common/tokens/tokenizers/multimodal.py": "DATASET_MEAN = None\nDATASET_STD = None\n",
    "mistral_common/tokens/tokenizers/tekken.py": "class Tekkenizer:\n    pass\n",
    "mistral_common/tokens/tokenizers/sentencepiece.py": "class SentencePieceTokenizer:\n    pass\n",
    "sentencepiece/__init__.py": "class SentencePieceProcessor:\n    pass\n",
    # transformers checks whether mistral_common is usable by its installed version (and fails on a
    # package without one once PIL is installed): version 0.0.0 reads as "too old, not used"
    "mistral_common-0.0.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: mistral_common\nVersion: 0.0.0\n",
}


def _placeholder_packages(work: Path) -> Path:
    import importlib.util

    root = work / "placeholders"
    for rel, text in _PLACEHOLDERS.items():
        top = rel.split("/")[0]
        package = top.split("-")[0]  # a dist-info folder belongs to its package
        if importlib.util.find_spec(package) is not None:
            continue  # the real package is installed: it is used
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        if not top.endswith(".dist-info"):
            for d in [f.parent, *f.parent.parents]:
                if d == root or root not in d.parents:
                    break
                (d / "__init__.py").touch()
        f.write_text(text)
    return root


def _env(oracle: Path, work: Path) -> dict[str, str]:
    path = os.pathsep.join([str(oracle / "gguf-py"), str(_placeholder_packages(work))])
    return {**os.environ, "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


def _run_all(oracle: Path, steps: list[tuple[list, str | None]], cwd: Path, log: list[str]) -> None:
    """The independent steps at once (each is mostly interpreter start and imports)."""
    env = _env(oracle, cwd)
    procs = []
    for args, stdin in steps:
        p = subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append((args, p, stdin))
    failed = []
    for args, p, stdin in procs:
        out, err = p.communicate(stdin, timeout=600)
        log.append(f"$ {' '.join(map(str, args))}\n{out[-2000:]}\n{err[-4000:]}")
        if p.returncode != 0:
            failed.append(f"oracle step failed ({p.returncode}): {' '.join(map(str, args))}\n{err[-4000:]}")
    if failed:
        raise RuntimeError("\n".join(failed))


def make_official_set(hf: Path, work: Path, name: str = "MiniCPM-o-4_5") -> Path:
    """Run the oracle scripts on checkpoint `hf`; return the set's folder (work/set)."""
    from official_token2wav import write_official_token2wav

    oracle = oracle_dir()
    if oracle is None:
        raise FileNotFoundError(f"llama.cpp-omni oracle scripts not found ({ORACLE})")
    conv = oracle / "tools" / "omni" / "convert"
    parts, out = work / "model", work / "set"
    gguf_tmp = work / "gguf"
    for d in (parts, out / "vision", out / "audio", out / "tts", gguf_tmp):
        d.mkdir(parents=True, exist_ok=True)
    split_checkpoint(hf, parts)
    log: list[str] = []
    _run_all(oracle, [
        ([conv / "convert_vpm.py", "-m", parts / "vpm", "--output-dir", gguf_tmp, "--minicpmv_version", "100045"], None),
        ([conv / "convert_apm.py", parts / "apm", parts / "apm" / "minicpmo.whisper", gguf_tmp], None),
        ([oracle / "convert_hf_to_gguf.py", parts / "llm", "--outtype", "f16", "--outfile", out / f"{name}-F16.gguf"],
         None),
        # the TTS step asks for a confirmation on stdin (run_convert.sh pipes "y")
        ([oracle / "convert_hf_to_gguf.py", parts / "tts", "--outtype", "f16",
          "--outfile", out / "tts" / f"{name}-tts-F16.gguf"], "y\n"),
        ([conv / "convert_projector.py", "--model", hf, "--output", out / "tts" / f"{name}-projector-F16.gguf"], None),
    ], work, log)
    (work / "oracle.log").write_text("\n".join(log))
    vision = list(gguf_tmp.glob("mmproj-*.gguf"))
    audio = gguf_tmp / "minicpmo-apm.gguf"
    if len(vision) != 1 or not audio.is_file():
        raise RuntimeError(f"oracle outputs missing in {gguf_tmp}: {sorted(p.name for p in gguf_tmp.iterdir())}")
    shutil.move(vision[0], out / "vision" / f"{name}-vision-F16.gguf")
    shutil.move(audio, out / "audio" / f"{name}-audio-F16.gguf")
    _add_head_code(hf, out / "tts" / f"{name}-tts-F16.gguf")
    n_steps = json.loads((hf / "config.json").read_text())["tts_config"].get("s3_stream_n_timesteps", 10)
    write_official_token2wav(hf / "assets" / "token2wav", out / "token2wav-gguf", n_steps)
    return out


def _add_head_code(hf: Path, tts_gguf: Path) -> None:
    """convert_hf_to_gguf.py folds the TTS's weight-normed head_code only when it has the release's
    shape (6562 x 768, hard-coded there) and otherwise leaves it out with an error in its log. For a
    narrower model the tensor is appended here exactly as that code writes it for the release:
    head_code.0.weight = g * v / max(||v||, 1e-8), stored transposed (hidden x codes), F32.
    The file is otherwise unchanged: keys and tensor infos are copied as raw bytes."""
    import struct

    import gguf
    from safetensors import safe_open

    r = gguf.GGUFReader(str(tts_gguf))
    if "head_code.0.weight" in {t.name for t in r.tensors}:
        return
    with safe_open(str(hf / "model.safetensors"), "np") as f:
        g = f.get_tensor("tts.head_code.0.parametrizations.weight.original0").astype(np.float32)
        v = f.get_tensor("tts.head_code.0.parametrizations.weight.original1").astype(np.float32)
    w = g * v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-8)
    data = np.ascontiguousarray(w.T, dtype=np.float32)  # PyTorch (hidden, codes) -> ggml (codes, hidden)
    align = 32
    kv = b"".join(bytes(p) for f in r.fields.values() if not f.name.startswith("GGUF.") for p in f.parts)
    infos = b"".join(bytes(p) for t in r.tensors for p in t.field.parts)
    end = max(int(t.data_offset) - r.data_offset + int(t.n_bytes) for t in r.tensors)
    offset = -(-end // align) * align
    name = b"head_code.0.weight"
    info = struct.pack("<Q", len(name)) + name + struct.pack("<I", 2) + struct.pack("<QQ", *data.shape[::-1]) \
        + struct.pack("<IQ", int(gguf.GGMLQuantizationType.F32), offset)
    raw = tts_gguf.read_bytes()
    head = b"GGUF" + struct.pack("<IQQ", 3, len(r.tensors) + 1, len([f for f in r.fields if not f.startswith("GGUF.")]))
    meta = head + kv + infos + info
    meta += b"\0" * (-len(meta) % align)
    body = raw[r.data_offset:r.data_offset + end]
    body += b"\0" * (offset - end)
    tts_gguf.write_bytes(meta + body + data.tobytes())
