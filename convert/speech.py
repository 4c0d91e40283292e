"""Planning the speech-output components of a conversion: TTS, Token2Wav and the voices.

plan_speech() runs while the checkpoint is opened (before any file is written), so a bad asset or
voice fails early, and the ONNX voice models run once. The omni_gguf hooks then read the plan.

Default voice, first source found (the speech contract §3): --voice-npz, --voice-wav, a ready-made
`default_voice.npz` in the token2wav folder, the release's `assets/system_ref_audio.wav`, else none
(with a note). A voice from a recording is made with onnxruntime on the release's ONNX models when it
is installed; without it, when the companion gets both voice encoders, the recording is checked now
and cloned by the runtime from the written companion (deferred_voices, convert/pipeline.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import ConversionError
from .gguf_write import PlannedTensor, Writer
from .speech_tokenizer_gguf import SpeechTokenizerPlan, check_speech_tokenizer
from .speaker_encoder_gguf import SPEAKER_ONNX, SpeakerEncoderPlan, plan_speaker_encoder
from .token2wav_gguf import Token2WavPlan, check_token2wav
from .tts_gguf import TtsPlan, check_tts
from .voice_gguf import DEFAULT_VOICE_FILE, TOKENIZER_ONNX, Voice, VoiceDims, add_voice_keys, \
    check_voice_wav, load_voice_npz, onnx_available, voice_from_wav, voice_tensors

if TYPE_CHECKING:
    from .safetensors_io import SafetensorsSource

T2W_SUBDIR = Path("assets") / "token2wav"
RELEASE_REF_WAV = Path("assets") / "system_ref_audio.wav"


@dataclass(frozen=True)
class SpeechOptions:
    token2wav_dir: Path | None = None  # default: HF_DIR/assets/token2wav when it exists
    voice_wav: Path | None = None  # default voice from a reference recording (onnxruntime)
    voice_npz: Path | None = None  # default voice ready-made
    extra_voices: tuple[tuple[str, Path], ...] = ()  # (name, .wav or .npz)

    @property
    def wants_voice(self) -> bool:
        return bool(self.voice_wav or self.voice_npz or self.extra_voices)


@dataclass
class SpeechPlan:
    tts: TtsPlan | None = None
    token2wav: Token2WavPlan | None = None
    speech_tokenizer: SpeechTokenizerPlan | None = None  # run-time voice cloning (the token2wav folder's ONNX)
    voices: list[Voice] = field(default_factory=list)
    # recordings cloned natively once the companion (with its voice encoders) is written: (name, path)
    deferred_voices: list[tuple[str, Path]] = field(default_factory=list)
    speaker_encoder: SpeakerEncoderPlan | None = None  # CAM++ from the token2wav folder's campplus.onnx
    notes: list[str] = field(default_factory=list)  # said on stderr unless quiet


def plan_speech(config: Mapping[str, Any], weights: "SafetensorsSource", hf_dir: Path, llm_hidden: int,
                opts: SpeechOptions) -> SpeechPlan:
    plan = SpeechPlan(tts=check_tts(config, weights, llm_hidden))
    if opts.voice_wav and opts.voice_npz:
        raise ConversionError("give either --voice-wav or --voice-npz for the default voice, not both")
    if plan.tts is None:
        if opts.token2wav_dir is not None or opts.wants_voice:
            raise ConversionError("config.json has init_tts false: there is no speech output for Token2Wav or voices")
        return plan
    t2w_dir = opts.token2wav_dir
    if t2w_dir is None:
        t2w_dir = hf_dir / T2W_SUBDIR
        if not t2w_dir.is_dir():
            if opts.wants_voice:
                raise ConversionError(f"voices need the Token2Wav assets, not found at {t2w_dir} (give --token2wav-dir)")
            plan.notes.append(f"note: no Token2Wav assets at {t2w_dir}: the companion gets the speech-token "
                              "decoder (TTS) but no vocoder or voice")
            return plan
    plan.token2wav = check_token2wav(Path(t2w_dir), config.get("tts_config") or {})
    t = plan.token2wav
    plan.speech_tokenizer = _plan_voice_encoder(t.dir, TOKENIZER_ONNX, "speech tokenizer",
                                                lambda p: check_speech_tokenizer(p.parent), plan.notes)
    plan.speaker_encoder = _plan_voice_encoder(t.dir, SPEAKER_ONNX, "speaker encoder", plan_speaker_encoder,
                                               plan.notes)
    dims = VoiceDims(t.flow.vocab, t.flow.spk_dim, t.flow.n_mel, t.flow.up_stride)
    native = plan.speech_tokenizer is not None and plan.speaker_encoder is not None and not onnx_available()

    def from_wav(path: Path, name: str) -> Voice | None:
        """The voice now (onnxruntime), or None when it is deferred to the runtime's cloner."""
        if native:
            check_voice_wav(path)
            plan.deferred_voices.append((name, path))
            return None
        return voice_from_wav(path, name, t.dir, dims)

    default: Voice | None = None
    ready = t.dir / DEFAULT_VOICE_FILE
    release_wav = hf_dir / RELEASE_REF_WAV
    if opts.voice_npz is not None:
        default = load_voice_npz(Path(opts.voice_npz), "default", dims)
    elif opts.voice_wav is not None:
        default = from_wav(Path(opts.voice_wav), "default")
    elif ready.is_file():
        default = load_voice_npz(ready, "default", dims)
    elif release_wav.is_file() and (native or (onnx_available() and (t.dir / TOKENIZER_ONNX).is_file())):
        default = from_wav(release_wav, "default")
    else:
        plan.notes.append(
            "note: no default voice written (none of --voice-npz, --voice-wav, "
            f"{ready}, or {release_wav} with the ONNX voice models); add one later with "
            "`minicpmo-convert --omni FILE --add-voice NAME=ref.wav`")
    plan.voices = [default] if default is not None else []
    for name, p in opts.extra_voices:
        voice = load_voice_npz(Path(p), name, dims) if Path(p).suffix.lower() == ".npz" else from_wav(Path(p), name)
        if voice is not None:
            plan.voices.append(voice)
    seen: set[str] = set()
    for name in [v.name for v in plan.voices] + [n for n, _ in plan.deferred_voices]:
        if name in seen:
            raise ConversionError(f"voice {name!r} is given twice")
        seen.add(name)
    return plan


def _plan_voice_encoder(t2w_dir: Path, onnx_name: str, what: str, plan: Callable[[Path], Any],
                        notes: list[str]) -> Any:
    """plan(path of the token2wav folder's ONNX file), or None with a note when the file or the `onnx`
    package (read at conversion only, not a converter dependency) is missing."""
    onnx_path = t2w_dir / onnx_name
    if not onnx_path.is_file():
        notes.append(f"note: no {onnx_name} in {t2w_dir}: the companion gets no {what} "
                     "(voices cannot be cloned at run time)")
        return None
    if importlib.util.find_spec("onnx") is None:
        notes.append(f"note: {onnx_path} not converted: reading it needs the `onnx` package "
                     f"(pip install 'minicpmo-cpp[voice]'); the companion gets no {what}")
        return None
    return plan(onnx_path)


def voice_component(voices: list[Voice], w: Writer, outtype: str) -> list[PlannedTensor]:
    """omni_gguf hook: the voices' keys and tensors (always F32/I32: they are data, not weights)."""
    if not voices:
        return []
    add_voice_keys(w, voices)
    return voice_tensors(voices)
