"""Voice prompts in the companion GGUF (spec §5.2.1; the speech contract §3): for each named voice,
its prompt speech tokens, 192-d CAM++ speaker embedding and 24 kHz prompt mel.

A voice comes from a ready-made .npz (arrays `tokens`, `spk`, `mel`) or from a reference wav through
the release's ONNX models (speech_tokenizer_v2_25hz.onnx, campplus.onnx) run by onnxruntime, the
optional `voice` extra (`pip install minicpmo-cpp[voice]`), with the numpy front ends of
voice_frontend.py. add_voices() adds voices to an existing companion file.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

from .errors import ConversionError
from .gguf_write import PlannedTensor, Writer
from .voice_frontend import fit_frames, kaldi_fbank, prompt_mel, resample_sinc_hann, whisper_log_mel

KEY = "minicpmo.voice."
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}$")
# the reference's streaming buffers bound the prompt: estimator cache 1000 frames - 100 kept - 50 per chunk
MAX_PROMPT_FRAMES = 850
TOKENIZER_ONNX = "speech_tokenizer_v2_25hz.onnx"
SPEAKER_ONNX = "campplus.onnx"
DEFAULT_VOICE_FILE = "default_voice.npz"  # a ready-made default voice in the token2wav folder
MIN_WAV_SECONDS = 0.5


@dataclass(frozen=True)
class VoiceDims:
    """What a voice must fit: the flow's token vocabulary, speaker and mel widths, mel frames per token."""

    vocab: int = 6561
    spk_dim: int = 192
    n_mel: int = 80
    mel_per_token: int = 2


@dataclass(frozen=True)
class Voice:
    name: str
    tokens: np.ndarray  # int32 (n,) once checked (any integer type before)
    spk: np.ndarray  # float32 (spk_dim,)
    mel: np.ndarray  # float32 (mel_per_token * n, n_mel)

    def check(self, dims: VoiceDims, where: str) -> "Voice":
        if not NAME_RE.match(self.name):
            raise ConversionError(f"voice name {self.name!r}: use 1-32 letters, digits, '_' or '-'")
        n = self.tokens.size
        if self.tokens.ndim != 1 or n == 0:
            raise ConversionError(f"{where}: 'tokens' must be a non-empty list of speech token ids")
        if self.tokens.min() < 0 or self.tokens.max() >= dims.vocab:
            raise ConversionError(f"{where}: speech tokens must lie in [0, {dims.vocab}), got "
                                  f"{int(self.tokens.min())}..{int(self.tokens.max())}")
        if self.spk.shape != (dims.spk_dim,) or not np.all(np.isfinite(self.spk)):
            raise ConversionError(f"{where}: 'spk' must be {dims.spk_dim} finite values, got shape {self.spk.shape}")
        frames = dims.mel_per_token * n
        if frames > MAX_PROMPT_FRAMES:
            raise ConversionError(
                f"{where}: {n} prompt tokens give {frames} mel frames, more than the {MAX_PROMPT_FRAMES} the "
                f"streaming caches allow (about {MAX_PROMPT_FRAMES // 50} s of reference audio): use a shorter reference")
        if self.mel.shape != (frames, dims.n_mel) or not np.all(np.isfinite(self.mel)):
            raise ConversionError(f"{where}: 'mel' must be ({frames}, {dims.n_mel}) finite values "
                                  f"({dims.mel_per_token} frames per token), got shape {self.mel.shape}")
        # narrowed only now: the range check above saw the ids as given
        return Voice(self.name, self.tokens.astype(np.int32), self.spk, self.mel)


def parse_voice_arg(text: str) -> tuple[str, Path]:
    """'NAME=FILE' -> (name, path)."""
    name, eq, path = text.partition("=")
    if not eq or not path:
        raise ConversionError(f"--add-voice expects NAME=FILE, got {text!r}")
    if not NAME_RE.match(name):
        raise ConversionError(f"voice name {name!r}: use 1-32 letters, digits, '_' or '-'")
    return name, Path(path)


def load_voice_npz(path: Path, name: str, dims: VoiceDims) -> Voice:
    """A ready-made voice: arrays tokens (n,), spk (192,), mel (2n, 80); leading 1-sized axes allowed."""
    if not path.is_file():
        raise ConversionError(f"voice file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in ("tokens", "spk", "mel") if k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        # (numpy's own message for pickled members suggests loading unsafely: not repeated here)
        raise ConversionError(f"{path}: not a readable .npz voice (expected a zip of plain .npy arrays: "
                              "tokens, spk, mel)") from None
    missing = [k for k in ("tokens", "spk", "mel") if k not in arrays]
    if missing:
        raise ConversionError(f"{path}: missing array(s) {', '.join(missing)} (expected tokens, spk, mel)")

    def squeeze(a: np.ndarray, ndim: int) -> np.ndarray:
        while a.ndim > ndim and a.shape[0] == 1:
            a = a[0]
        return a

    tokens = squeeze(arrays["tokens"], 1)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ConversionError(f"{path}: 'tokens' must be integers, got {tokens.dtype}")
    for k in ("spk", "mel"):
        if not np.issubdtype(arrays[k].dtype, np.floating):
            raise ConversionError(f"{path}: '{k}' must be floating point, got {arrays[k].dtype}")
    return Voice(name, tokens, squeeze(arrays["spk"], 1).astype(np.float32),
                 squeeze(arrays["mel"], 2).astype(np.float32)).check(dims, str(path))


def _onnxruntime() -> Any:
    try:
        import onnxruntime  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ConversionError(
            "a voice from a wav file needs onnxruntime: pip install 'minicpmo-cpp[voice]' (or give a "
            "ready-made voice with --voice-npz)") from None
    return onnxruntime


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _session(ort: Any, path: Path) -> Any:
    if not path.is_file():
        raise ConversionError(f"missing {path.name} in {path.parent} (needed to make a voice from a wav)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise ConversionError(f"{path}: onnxruntime cannot load it ({e})") from None


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile  # noqa: PLC0415 - a project dependency, only needed here

    if not path.is_file():
        raise ConversionError(f"reference audio not found: {path}")
    try:
        pcm, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises RuntimeError / LibsndfileError / TypeError
        raise ConversionError(f"{path}: cannot decode the audio ({e})") from None
    if pcm.shape[0] < MIN_WAV_SECONDS * rate:
        raise ConversionError(f"{path}: {pcm.shape[0] / rate:.2f} s of audio; a voice needs at least {MIN_WAV_SECONDS} s")
    if not np.all(np.isfinite(pcm)):
        raise ConversionError(f"{path}: the audio holds NaN or Inf samples")
    return pcm, int(rate)


def check_voice_wav(path: Path) -> None:
    """The checks a recording passes before it is cloned later: readable audio, finite, 0.5 s to the
    ~17 s the streaming caches allow (25 tokens per second, 2 mel frames each)."""
    pcm, rate = _read_wav(path)
    seconds = pcm.shape[0] / rate
    if seconds > MAX_PROMPT_FRAMES / 50 + 0.04:
        raise ConversionError(f"{path}: {seconds:.1f} s of audio is longer than the {MAX_PROMPT_FRAMES // 50} s the "
                              "streaming caches allow for a voice prompt: use a shorter reference")


def voice_from_wav(path: Path, name: str, onnx_dir: Path, dims: VoiceDims) -> Voice:
    """Tokens, speaker embedding and prompt mel of a reference recording (spec §5.2.1)."""
    ort = _onnxruntime()
    tokenizer = _session(ort, onnx_dir / TOKENIZER_ONNX)
    speaker = _session(ort, onnx_dir / SPEAKER_ONNX)
    pcm, rate = _read_wav(path)
    # the reference tokenizes the first channel and builds the prompt mel from the channel mean
    first = pcm[:, 0]
    mono = pcm.mean(axis=1)
    a16 = first if rate == 16000 else resample_sinc_hann(first, rate, 16000)
    a24 = mono if rate == 24000 else resample_sinc_hann(mono, rate, 24000)
    feats = whisper_log_mel(a16)[None]  # (1, 128, T)
    ins = tokenizer.get_inputs()
    try:
        out = tokenizer.run(None, {ins[0].name: feats, ins[1].name: np.array([feats.shape[2]], np.int32)})[0]
        fbank = kaldi_fbank(a16)
        fbank = fbank - fbank.mean(axis=0, keepdims=True)
        spk = speaker.run(None, {speaker.get_inputs()[0].name: fbank[None]})[0]
    except Exception as e:  # onnxruntime's own errors (wrong model, bad shapes)
        raise ConversionError(f"{path}: the ONNX voice models failed ({e})") from None
    tokens = np.asarray(out).reshape(-1)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ConversionError(f"{onnx_dir / TOKENIZER_ONNX}: produced {tokens.dtype} values, expected token ids")
    mel = fit_frames(prompt_mel(a24), dims.mel_per_token * tokens.size)
    return Voice(name, tokens, np.asarray(spk, np.float32).reshape(-1), mel).check(dims, str(path))


def load_voice(path: Path, name: str, onnx_dir: Path | None, dims: VoiceDims) -> Voice:
    """.npz -> ready-made; anything else is decoded as audio and run through the ONNX models."""
    if path.suffix.lower() == ".npz":
        return load_voice_npz(path, name, dims)
    if onnx_dir is None:
        raise ConversionError(f"voice {name!r} from {path}: the Token2Wav folder with the ONNX models is "
                              "needed (give --token2wav-dir)")
    return voice_from_wav(path, name, onnx_dir, dims)


def add_voice_keys(w: Writer, voices: list[Voice]) -> None:
    w.add_typed_array(KEY + "names", [v.name for v in voices], GGUFValueType.STRING)
    w.add_string(KEY + "default", voices[0].name)


def voice_tensors(voices: list[Voice]) -> list[PlannedTensor]:
    Q = GGMLQuantizationType
    out: list[PlannedTensor] = []
    for v in voices:
        out.append(PlannedTensor(f"voice.{v.name}.tokens", "(voice tokens)", Q.I32, v.tokens.shape, values=v.tokens))
        out.append(PlannedTensor(f"voice.{v.name}.spk", "(voice x-vector)", Q.F32, v.spk.shape, values=v.spk))
        out.append(PlannedTensor(f"voice.{v.name}.mel", "(voice prompt mel)", Q.F32, v.mel.shape, values=v.mel))
    return out


def check_unique(voices: list[Voice]) -> None:
    seen: set[str] = set()
    for v in voices:
        if v.name in seen:
            raise ConversionError(f"voice {v.name!r} is given twice")
        seen.add(v.name)


# ------------------------------------------------------------------------------------------------
# adding voices to an existing companion
# ------------------------------------------------------------------------------------------------

_SKIP_KEYS = ("minicpmo.components", KEY + "names", KEY + "default")


def _field_value(field: Any) -> tuple[Any, GGUFValueType, GGUFValueType | None]:
    vtype = GGUFValueType(field.types[0])
    sub = GGUFValueType(field.types[-1]) if vtype == GGUFValueType.ARRAY else None
    if vtype == GGUFValueType.ARRAY and len(field.types) > 2:
        raise ConversionError(f"key {field.name}: nested arrays are not supported")
    return field.contents(), vtype, sub


def dims_from_gguf(reader: GGUFReader, path: Path) -> VoiceDims:
    def u32(key: str) -> int:
        f = reader.fields.get(key)
        if f is None:
            raise ConversionError(f"{path}: lacks key {key} (not a companion with Token2Wav)")
        return int(f.contents())

    t = "minicpmo.token2wav."
    return VoiceDims(u32(t + "vocab_size"), u32(t + "flow.spk_embed_dim"), u32(t + "n_mel"), u32(t + "token_mel_ratio"))


def voice_from_arrays(name: str, tokens: Any, spk: Any, mel: Any, where: str) -> Voice:
    """A voice from its three arrays (e.g. a voice cloned at run time); checked when it is added."""
    tokens = np.asarray(tokens)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ConversionError(f"{where}: voice {name!r}: 'tokens' must be integers, got {tokens.dtype}")
    return Voice(name, tokens.reshape(-1), np.asarray(spk, np.float32).reshape(-1), np.asarray(mel, np.float32))


def _open_companion(path: Path) -> GGUFReader:
    if not path.is_file():
        raise ConversionError(f"companion file not found: {path}")
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ConversionError(f"{path}: not a readable GGUF file ({e})") from None
    arch = reader.fields.get("general.architecture")
    if arch is None or arch.contents() != "minicpmo-omni":
        raise ConversionError(f"{path}: not a MiniCPM-o companion (general.architecture is not 'minicpmo-omni')")
    return reader


def _components(reader: GGUFReader) -> list[str]:
    field = reader.fields.get("minicpmo.components")
    return list(field.contents()) if field is not None else []


def voice_from_wav_native(path: Path, name: str, omni_path: Path, dims: VoiceDims) -> Voice:
    """A voice from a recording, made by the runtime with the companion's own voice encoders (no
    onnxruntime): the channels are averaged and the source rate kept (the runtime resamples as the
    reference does)."""
    from minicpmo_cpp import _core  # noqa: PLC0415 - the native runtime of this package

    pcm, rate = _read_wav(path)
    try:
        tokens, spk, mel = _core.clone_voice_prompt(str(omni_path), np.ascontiguousarray(pcm.mean(axis=1)), rate)
    except _core.MinicpmoError as e:
        raise ConversionError(f"{path}: cannot clone a voice from it ({e})") from None
    return Voice(name, tokens, spk, mel).check(dims, str(path))


def add_voices(omni_path: str | os.PathLike, voice_args: list[tuple[str, Path]], onnx_dir: Path | None,
               quiet: bool = False, default: str | None = None) -> Path:
    """Add named voices (.npz or recordings) to an existing companion. A recording is cloned with the
    companion's own voice encoders when it has them (speech_tokenizer, speaker_encoder), else with the
    release's ONNX models in `onnx_dir` through onnxruntime."""
    path = Path(omni_path)
    reader = _open_companion(path)
    dims = dims_from_gguf(reader, path) if "token2wav" in _components(reader) else None
    if dims is None:
        raise ConversionError(f"{path}: the companion has no Token2Wav component, which voices are for")
    native = {"speech_tokenizer", "speaker_encoder"} <= set(_components(reader))
    del reader  # the native cloner opens the file itself
    voices = []
    for name, p in voice_args:
        if p.suffix.lower() != ".npz" and native:
            voices.append(voice_from_wav_native(p, name, path, dims))
        else:
            voices.append(load_voice(p, name, onnx_dir, dims))
    return add_voice_prompts(path, voices, quiet, default)


def add_voice_prompts(omni_path: str | os.PathLike, voices: list[Voice], quiet: bool = False,
                      default: str | None = None) -> Path:
    """Add named voices to an existing companion: every other key and tensor is copied unchanged;
    the file is rewritten to NAME.part and renamed over the original only when complete. `default`
    names the new default voice (None: the file's default stays, or the first voice added)."""
    path = Path(omni_path)
    reader = _open_companion(path)
    comps = _components(reader)
    if "token2wav" not in comps:
        raise ConversionError(f"{path}: the companion has no Token2Wav component, which voices are for")
    dims = dims_from_gguf(reader, path)
    names_field = reader.fields.get(KEY + "names")
    old_names = list(names_field.contents()) if names_field is not None else []
    new = [v.check(dims, f"voice {v.name!r}") for v in voices]
    check_unique(new)
    for v in new:
        if v.name in old_names:
            raise ConversionError(f"{path}: already has a voice named {v.name!r}")
    if not new:
        raise ConversionError("no voice to add")
    default_field = reader.fields.get(KEY + "default")
    if default is None:
        default = default_field.contents() if default_field is not None else new[0].name

    w = Writer(None, "minicpmo-omni")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in _SKIP_KEYS:
            continue
        val, vtype, sub = _field_value(field)
        w.add_key_value(key, val, vtype, sub_type=sub)
    w.add_typed_array("minicpmo.components", comps + ([] if "voice" in comps else ["voice"]), GGUFValueType.STRING)
    w.add_typed_array(KEY + "names", old_names + [v.name for v in new], GGUFValueType.STRING)
    w.add_string(KEY + "default", default)

    copied = []
    for t in reader.tensors:
        data = t.data
        raw = None if data.dtype in (np.float32, np.float16, np.int32) else t.tensor_type
        w.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, raw_dtype=raw)
        copied.append(data)
    planned = voice_tensors(new)
    for p in planned:
        arr = p.encoded(None)
        w.add_tensor_info(p.gguf_name, arr.shape, arr.dtype, arr.nbytes)
        copied.append(arr)
    tmp = path.with_name(path.name + ".part")
    try:
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for data in copied:
            w.write_tensor_data(np.ascontiguousarray(data))
        w.close()
        os.replace(tmp, path)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    if not quiet:
        print(f"added voice(s) {', '.join(v.name for v in new)} to {path}", file=sys.stderr)
    return path
