"""minicpmo-cli --duplex replays a recording second by second through the C API's duplex
conversation; greedy decisions and speech give the same timeline and the same spoken track as the
Python DuplexSession fed the same units (first 16480 samples, then 16000 each, the last one
zero-padded), with one video frame per second when --video-frames is given."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from minicpmo_cpp import OmniSession

SR = 16000
PREFIX = "<|im_start|>system\nStreaming Duplex Conversation! You are a helpful assistant.\n<|audio_start|>"
SUFFIX = "<|audio_end|><|im_end|>"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _units(pcm: np.ndarray):
    pos, k = 0, 0
    while pos < pcm.size:
        n = 16480 if k == 0 else SR
        c = np.zeros(n, np.float32)
        seg = pcm[pos:pos + n]
        c[:seg.size] = seg
        yield c
        pos += n
        k += 1


def _python_replay(model, pcm, frames):
    s = OmniSession(model, n_threads=2, n_ctx=8192, seed=0)
    d = s.as_duplex(seed=0)
    d.prepare(PREFIX, SUFFIX)
    lines, track = [], []
    for k, unit in enumerate(_units(pcm)):
        d.streaming_prefill(audio_waveform=unit, frame_list=[frames[k]] if k < len(frames) else None)
        r = d.streaming_generate(decode_mode="greedy")
        lines.append(f"{r['current_time']}\t{'listen' if r['is_listen'] else 'speak'}\t{_escape(r['text'])}"
                     + ("\t<end of turn>" if r["end_of_turn"] else ""))
        track.append(r["audio_waveform"])
    return lines, np.concatenate(track)


@pytest.mark.parametrize("with_frames", [False, True])
def test_cli_duplex_replay_matches_python(tiny_f32, tmp_path, with_frames):
    import soundfile as sf

    model = str(tiny_f32[0])
    pcm = (0.1 * np.random.default_rng(3).standard_normal(int(4.3 * SR))).astype(np.float32)
    rec = tmp_path / "conversation.wav"
    sf.write(rec, pcm, SR, subtype="FLOAT")
    frames = []
    cmd_frames = []
    if with_frames:
        fdir = tmp_path / "frames"
        fdir.mkdir()
        rng = np.random.default_rng(4)
        for k in range(2):
            arr = rng.integers(0, 256, size=(40 + 8 * k, 56, 3), dtype=np.uint8)
            Image.fromarray(arr).save(fdir / f"frame_{k:03d}.png")
            frames.append(arr)
        cmd_frames = ["--video-frames", str(fdir)]
    out = tmp_path / "reply.wav"
    cli = shutil.which("minicpmo-cli")
    res = subprocess.run([cli, "-m", model, "--duplex", "--audio", str(rec), "--speak", str(out), "--temp", "0",
                          "-c", "8192", "-t", "2", *cmd_frames], capture_output=True, timeout=600)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    got_lines = res.stdout.decode("utf-8", errors="replace").splitlines()
    want_lines, want_track = _python_replay(model, pcm, frames)
    assert len(got_lines) == 5  # 4.3 s: 1.03 + 3 x 1 s + a padded last second
    assert got_lines == want_lines
    track, rate = sf.read(out, dtype="float32")
    assert rate == 24000
    # the same C++ code through the C API and through pybind11, same threads: equal to float32 noise
    np.testing.assert_allclose(track, want_track, rtol=0, atol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--video-frames", "x"], "--video-frames needs --duplex"),
    (["--duplex", "-p", "hi"], "not -p"),
])
def test_cli_duplex_bad_arguments(tiny_f32, argv, message):
    res = subprocess.run([shutil.which("minicpmo-cli"), "-m", str(tiny_f32[0]), *argv], capture_output=True,
                         timeout=60)
    assert res.returncode == 2 and message in res.stderr.decode()


def test_cli_duplex_needs_one_recording(tiny_f32, tmp_path):
    res = subprocess.run([shutil.which("minicpmo-cli"), "-m", str(tiny_f32[0]), "--duplex"], capture_output=True,
                         timeout=120)
    assert res.returncode == 2 and "exactly one --audio" in res.stderr.decode()
    res = subprocess.run([shutil.which("minicpmo-cli"), "-m", str(tiny_f32[0]), "--duplex", "--audio",
                          str(tmp_path / "missing.wav")], capture_output=True, timeout=120)
    assert res.returncode == 1 and "missing.wav" in res.stderr.decode()
