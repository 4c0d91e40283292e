"""Voices cloned at run time (csrc/voice/voice_clone, session/cloned_voice; Python OmniSession.clone_voice
and voice=<recording>; C minicpmo_voice_from_pcm; CLI --voice-wav; converter --add-voice without
onnxruntime) against the independent reference: the converter's onnxruntime path (numpy front ends and
the ONNX models) on ONNX exports of independent PyTorch implementations with random weights (PyPI
s3tokenizer's S3TokenizerV2, FunASR's CAMPPlus), converted into the companion through the same path as
the release's files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
from gguf import GGUFReader

from backend import FLOAT_RTOL, ON_DEVICE
from c_demos import build_c_demo
from campplus_reference import export_onnx as export_campplus, random_campplus, speech_like
from conftest import _import_convert, run_isolated
from s3tokenizer_export import export_onnx as export_tokenizer, make_model as make_tokenizer

from minicpmo_cpp import MinicpmoError, OmniSession
from minicpmo_cpp.defaults import SESSION

voice_gguf = _import_convert(".voice_gguf")

pytestmark = pytest.mark.torch  # the reference models are exported with torch

DUPLEX_PREFIX = "<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>"
DUPLEX_SUFFIX = "<|audio_end|><|im_end|>"
SPEAK, CHUNK_EOS = 151706, 151718  # the duplex speak and chunk-end token ids (spec §4.2)
REF_RATE = 22050  # a rate the runtime and the reference both resample (to 16 and 24 kHz)
REF_SECONDS = 3.3


@pytest.fixture(scope="module")
def clone_files(tmp_path_factory, tiny_hf):
    """(llm, omni, ref.wav): the tiny checkpoint with the two ONNX voice models in assets/token2wav,
    converted to f32 with --voice-wav ref.wav (the default voice made by onnxruntime)."""
    root = tmp_path_factory.mktemp("voice_clone")
    hf = root / "hf"
    shutil.copytree(tiny_hf, hf)
    t2w = hf / "assets" / "token2wav"
    export_tokenizer(make_tokenizer(width=256, n_layer=6, seed=0), t2w / "speech_tokenizer_v2_25hz.onnx")
    export_campplus(random_campplus(seed=0), t2w / "campplus.onnx")
    ref = root / "ref.wav"
    soundfile.write(ref, speech_like(REF_SECONDS, seed=3, sample_rate=REF_RATE), REF_RATE, subtype="FLOAT")
    convert_checkpoint = _import_convert("").convert_checkpoint
    llm, omni = convert_checkpoint(hf, root / "out", outtype="f32", name="MiniCPM-o-4_5", tts_outtype="f32",
                                   voice_wav=ref, quiet=True)
    return Path(llm), Path(omni), ref


@pytest.fixture(scope="module")
def session(clone_files):
    llm, omni, _ = clone_files
    s = OmniSession(llm, omni_path=omni, n_ctx=1024, n_threads=2, kv_cache_type="f32")
    yield s
    s.close()


def _file_voice(omni: Path, name: str):
    r = GGUFReader(omni)
    t = {x.name: np.array(x.data) for x in r.tensors if x.name.startswith(f"voice.{name}.")}
    return t[f"voice.{name}.tokens"], t[f"voice.{name}.spk"], t[f"voice.{name}.mel"]


# sampled with a fixed seed: the seed then also fixes the flow's and the vocoder's noise, so two replies
# differ only by their voice (the C demo and the CLI use the same settings)
SPEAK_SETTINGS = dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=100, repetition_penalty=1.0, seed=7,
             max_new_tokens=8, max_speech_tokens=30)


def _assert_same_clone(stored, v) -> None:
    """A voice the converter cloned on the CPU (runtime cloner, F32 file) against the session's clone:
    on the CPU the same computation, so equal; a session on a GPU computes the encoders there, so its
    x-vector and, at FSQ near-ties, a token may differ by the backend's float error."""
    tokens, spk, mel = stored
    if ON_DEVICE:
        assert np.mean(tokens == v.tokens) >= 0.995
    else:
        assert np.array_equal(tokens, v.tokens)
    np.testing.assert_allclose(spk, v.spk, rtol=FLOAT_RTOL, atol=FLOAT_RTOL * float(np.abs(spk).max()))
    np.testing.assert_array_equal(mel, v.mel)  # the prompt mel is computed on the host in float64


def _speak(s: OmniSession, voice) -> np.ndarray:
    s.reset()
    msgs = [{"role": "user", "content": "Say something."}]
    return s.chat(msgs, generate_audio=True, voice=voice, **SPEAK_SETTINGS).audio


def test_the_cloned_voice_matches_the_onnxruntime_voice(session, clone_files):
    _, omni, _ = clone_files
    v = session.clone_voice(clone_files[2])
    tokens, spk, mel = _file_voice(omni, "default")
    assert v.name.startswith("@voice-") and session.can_clone_voices
    assert v.tokens.shape == tokens.shape and v.mel.shape == mel.shape
    # tokens: the same ids except where an FSQ value of one path lies within float rounding of a
    # rounding boundary (the tokenizer's own tests count those); this reference has none: all equal
    same = np.mean(v.tokens == tokens)
    assert same >= 0.995, f"{same:.4f} of the prompt tokens agree"
    cos = float(v.spk @ spk / np.linalg.norm(v.spk) / np.linalg.norm(spk))
    assert cos >= 0.9999, cos  # CAM++ in ggml (F32) vs onnxruntime on the same random weights
    # the 24 kHz prompt mel: C++ sinc resampler + STFT vs numpy, both float64 rounded once: 1e-4
    np.testing.assert_allclose(v.mel, mel, rtol=0, atol=1e-4)


def test_a_reply_in_the_cloned_voice_sounds_like_one_in_the_converter_voice(session, clone_files):
    v = session.clone_voice(clone_files[2])
    assert np.array_equal(v.tokens, _file_voice(clone_files[1], "default")[0])  # (the case the next line needs)
    cloned, stored = _speak(session, v), _speak(session, "default")
    assert cloned.shape == stored.shape and cloned.size > 0
    # the same speech tokens and prompt tokens; the x-vector (cos >= 0.9999) and mel (1e-4) differ at
    # float level, which the flow and vocoder carry to the samples
    err = np.max(np.abs(cloned - stored)) / max(1e-6, float(np.max(np.abs(stored))))
    assert err <= 1e-2, err


def test_every_form_of_voice_speaks_the_same(session, clone_files):
    ref = clone_files[2]
    pcm, rate = soundfile.read(ref, dtype="float32")
    v = session.clone_voice(ref)
    want = _speak(session, v)
    for form in (str(ref), Path(ref), (pcm, rate), ref.read_bytes()):
        got = _speak(session, form)  # cloned for that reply, the same computation: bit-identical
        assert np.array_equal(got, want), type(form)


def test_a_cloned_voice_lives_as_long_as_its_object(session, clone_files):
    v = session.clone_voice(clone_files[2])
    name = v.name
    other = session.new_session()  # another session of the same model speaks with it too
    try:
        assert _speak(other, v).size > 0
    finally:
        other.close()
    del v
    with pytest.raises(MinicpmoError, match="released"):
        _speak(session, name)
    again = session.clone_voice(clone_files[2])
    assert again.name != name  # names are never reused


@pytest.mark.parametrize("seconds,message", [(0.3, "at least 0.5 s"), (18.0, "longer than the 17 s")])
def test_a_bad_reference_is_refused(session, seconds, message):
    with pytest.raises(MinicpmoError, match=message):
        session.clone_voice((np.full(int(seconds * 16000), 0.1, np.float32), 16000))


def test_a_companion_without_voice_encoders_says_so(session_f32):
    with pytest.raises(MinicpmoError, match="lacks: speech_tokenizer, speaker_encoder"):
        session_f32.clone_voice((np.zeros(16000, np.float32), 16000))
    assert not session_f32.can_clone_voices


def test_save_voice_and_add_voice_need_no_onnxruntime(session, clone_files, tmp_path):
    llm, omni, ref = clone_files
    copy = tmp_path / omni.name
    shutil.copy(omni, copy)
    v = session.clone_voice(ref)
    session.save_voice(v, "alice", copy)
    # --add-voice on a companion with the voice encoders: onnxruntime made unimportable
    code = (f"import sys; sys.modules['onnxruntime'] = None\n"
            f"from minicpmo_cpp.convert.cli import main\n"
            f"sys.exit(main(['--omni', {str(copy)!r}, '--add-voice', 'carol={ref}', '-q']))\n")
    res = run_isolated(code)
    assert res.returncode == 0, res.stderr
    tokens, spk, mel = _file_voice(copy, "alice")  # save_voice stores the session's clone as it is
    assert np.array_equal(tokens, v.tokens) and np.array_equal(spk, v.spk) and np.array_equal(mel, v.mel)
    _assert_same_clone(_file_voice(copy, "carol"), v)
    reloaded = OmniSession(llm, omni_path=copy, n_ctx=256, n_threads=2)
    try:
        assert {"alice", "carol"} <= set(reloaded.voices)
    finally:
        reloaded.close()


def _duplex_speech(s: OmniSession, ref: Path, **voice) -> np.ndarray:
    """One listening unit, then a scripted speaking unit; its 24 kHz audio."""
    ids = s.tokenize("hello there friend")[:3]
    d = s.as_duplex(seed=11)
    try:
        d.prepare(DUPLEX_PREFIX, DUPLEX_SUFFIX, ref_audio=ref, **voice)
        d.streaming_prefill(audio_waveform=np.zeros(16560, np.float32))
        d.streaming_generate(decode_mode="greedy", force_listen=True)
        d.streaming_prefill(audio_waveform=(0.1 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32))
        r = d.streaming_generate(decode_mode="greedy", _scripted=[SPEAK, *ids, CHUNK_EOS])
        assert not r["is_listen"]
        return r["audio_waveform"]
    finally:
        d.close()


def test_duplex_prepare_speaks_in_the_reference_voice(session, clone_files):
    """Like the official duplex demo, prepare(ref_audio=...) makes the reference the spoken voice."""
    ref = clone_files[2]
    by_prepare = _duplex_speech(session, ref)
    explicit = _duplex_speech(session, ref, voice=session.clone_voice(ref))
    stored = _duplex_speech(session, ref, voice="default")  # the converter's (onnxruntime) voice
    assert by_prepare.size > 0
    np.testing.assert_array_equal(by_prepare, explicit)  # the same clone, seed and units: bit-identical
    assert not np.array_equal(by_prepare, stored)  # (so the line above tells a clone from the file voice)
    # the file voice differs from the clone at float level only (see the chat test's bound)
    err = np.max(np.abs(by_prepare - stored)) / max(1e-6, float(np.max(np.abs(stored))))
    assert err <= 1e-2, err


def test_c_api_and_cli_clone_the_same_voice(session, clone_files, tmp_path):
    llm, omni, ref = clone_files
    pcm, rate = soundfile.read(ref, dtype="float32")
    raw = tmp_path / "ref.f32"
    pcm.astype(np.float32).tofile(raw)
    exe = build_c_demo("voice_clone_demo", tmp_path)
    out = tmp_path / "out.f32"
    res = subprocess.run([str(exe), str(llm), str(raw), str(rate), "Say something.", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines() if line.startswith(("NAME", "SIZES", "TOKENS")))
    v = session.clone_voice(ref)
    assert [int(x) for x in lines["TOKENS"].split()] == v.tokens.tolist()
    assert lines["SIZES"].split() == [str(v.tokens.size), str(v.spk.size), str(v.mel.shape[0]), str(v.mel.shape[1])]
    # the C reply (greedy, the same settings) and the Python one with the same voice: one C++ path
    np.testing.assert_array_equal(np.fromfile(out, np.float32), _speak(session, v))
    assert "FREED:invalid argument:" in res.stdout and "released" in res.stdout
    assert "SHORT:invalid argument:reference audio" in res.stdout
    assert "NAN:invalid argument:reference audio: sample" in res.stdout
    assert "RATE:invalid argument:" in res.stdout and "NULL:invalid argument:" in res.stdout

    wav = tmp_path / "cli.wav"
    cli = shutil.which("minicpmo-cli")
    res = subprocess.run([cli, "-m", str(llm), "--omni", str(omni), "-p", "Say something.", "--speak", str(wav),
                          "--voice-wav", str(ref), "-n", "8", "--temp", "0.7", "--top-p", "0.8", "--top-k", "100",
                          "--repeat-penalty", "1.0", "--max-speech-tokens", "30", "-t", "2", "--seed", "7"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got, sr = soundfile.read(wav, dtype="float32")
    assert sr == 24000
    like_cli = session.new_session(kv_cache_type=SESSION.kv_cache_type)  # the CLI's session settings
    try:
        np.testing.assert_array_equal(got, _speak(like_cli, v))
    finally:
        like_cli.close()


def test_conversion_clones_its_voices_natively_without_onnxruntime(session, clone_files, tiny_hf, tmp_path):
    """With onnxruntime unimportable, --voice-wav and --add-voice recordings are checked before anything
    is written and cloned by the runtime from the new companion's voice encoders."""
    llm, omni, ref = clone_files
    hf = omni.parent.parent / "hf"  # the clone_files checkpoint, ONNX voice models included
    out = tmp_path / "out"
    code = (f"import sys; sys.modules['onnxruntime'] = None\n"
            f"from minicpmo_cpp.convert.cli import main\n"
            f"sys.exit(main([{str(hf)!r}, '-o', {str(out)!r}, '--outtype', 'f32', '--tts-outtype', 'f32', "
            f"'--voice-wav', {str(ref)!r}, '--add-voice', 'carol={ref}', '-q']))\n")
    res = run_isolated(code, timeout=300)
    assert res.returncode == 0, res.stderr
    new_omni = next(out.glob("*omni*.gguf"))
    v = session.clone_voice(ref)
    r = GGUFReader(new_omni)
    assert r.fields["minicpmo.voice.default"].contents() == "default"
    for name in ("default", "carol"):  # the same native computation as the session's clone
        _assert_same_clone(_file_voice(new_omni, name), v)
    # a recording that cannot be a voice fails before anything is written
    short = tmp_path / "short.wav"
    soundfile.write(short, np.zeros(4000, np.float32), 16000)
    bad = tmp_path / "bad"
    code = code.replace(str(out), str(bad)).replace(f"'--voice-wav', {str(ref)!r}", f"'--voice-wav', {str(short)!r}")
    res = run_isolated(code, timeout=300)
    assert res.returncode != 0 and "a voice needs at least 0.5 s" in res.stderr
    assert not list(bad.glob("*.gguf"))
