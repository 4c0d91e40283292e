"""Every stage on the test backend (MINICPMO_TEST_BACKEND, tests/backend.py) against the same stage
on the CPU, on the tiny F32 model, and where each stage's graphs ran.

On the CPU backend both sessions compute on the CPU and must agree exactly (same kernels, same
seeds); on a device the floats agree within the backend's floor (backend.FLOAT_RTOL, reasons
there) and the discrete results -- greedy reply tokens, speech tokens -- are identical, provided the
CPU's choices are not near-ties (checked: the margins are asserted, so a near tie fails loudly
instead of flaking). The placement test is the "no silent CPU fallback" check: on a device every
encoder / TTS / flow / HiFT graph is one scheduler split with no node on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

import backend
from backend import SESSION

from minicpmo_cpp import OmniSession, _testing
from minicpmo_cpp.signals import speechlike

MSGS = [{"role": "user", "content": "Say something."}]


def rel(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def image(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([128 + 100 * np.sin(x / 17.0), 128 + 100 * np.cos(y / 23.0), 128 + 60 * np.sin((x + y) / 31.0)], -1)
    return rgb.astype(np.uint8)


@pytest.fixture(scope="module")
def sessions(tiny_f32):
    """(on the test backend, on the CPU): same model, seeds and F32 KV cache."""
    def make(**device):
        return OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=1024, seed=0, kv_cache_type="f32", **device)

    return make(**SESSION), make(device="cpu")


def test_device_names_and_choice(sessions):
    dev, cpu = sessions
    assert cpu.device == "CPU"
    assert dev.device.lower() == backend.DEVICE.lower()
    from minicpmo_cpp import device_names, MinicpmoError

    assert device_names()[0] == "cpu"
    with pytest.raises(MinicpmoError, match="unknown device 'NoSuchGPU7'.*cpu"):
        OmniSession(str(sessions[1]._model.path), device="NoSuchGPU7")


def test_vision_stage(sessions):
    dev, cpu = sessions
    img = image(224, 160)
    got = dev._session.encode_image(img)
    want = cpu._session.encode_image(img)
    err = rel(got, want)
    print(f"vision embeddings rel {err:.2e}")
    # CPU vs CPU: the same kernels on the same input, bit for bit
    assert err <= backend.tol(0.0), err


def test_audio_stage(sessions):
    dev, cpu = sessions
    pcm = speechlike(2.0, seed=3)
    err = rel(dev._session.encode_audio(pcm), cpu._session.encode_audio(pcm))
    print(f"audio embeddings rel {err:.2e}")
    assert err <= backend.tol(0.0), err


def test_llm_stage(sessions):
    dev, cpu = sessions
    ids = cpu.tokenize(cpu.apply_chat_template(MSGS))
    logits_d, hidden_d = dev._session.forward(ids)
    logits_c, hidden_c = cpu._session.forward(ids)
    err_l, err_h = rel(logits_d, logits_c), rel(hidden_d, hidden_c)
    print(f"LLM logits rel {err_l:.2e}, hidden rel {err_h:.2e}")
    assert err_l <= backend.tol(0.0) and err_h <= backend.tol(0.0), (err_l, err_h)


def test_spoken_reply_tokens_identical_audio_close(sessions):
    """Greedy reply text, its speech tokens and the 24 kHz audio, through the whole pipeline (LLM,
    TTS, flow, HiFT) on each backend, from the same seeds."""
    dev, cpu = sessions
    replies = {}
    for name, s in (("dev", dev), ("cpu", cpu)):
        r = s.chat(MSGS, do_sample=False, repetition_penalty=1.0, max_new_tokens=6, generate_audio=True,
                   max_speech_tokens=30)
        replies[name] = (list(s.last_generated_ids), r.audio)
    ids_d, audio_d = replies["dev"]
    ids_c, audio_c = replies["cpu"]
    # each device choice is a greedy choice of the CPU up to the float floor: teacher-forced on the
    # device's reply, the CPU's logit of the chosen token is within 2 x floor x the logits' scale of
    # its best (on the CPU backend: exactly its argmax). Where no step is that close to a tie, the
    # replies are the same tokens.
    prompt = cpu.tokenize(cpu.apply_chat_template(MSGS, use_tts_template=True))
    logits, _ = cpu._session.forward(prompt + ids_d)
    steps = logits[len(prompt) - 1:len(prompt) - 1 + len(ids_d)].astype(np.float64)
    slack = 2 * backend.FLOAT_RTOL * float(np.max(np.abs(steps)))
    chosen = steps[np.arange(len(ids_d)), ids_d]
    assert np.all(chosen >= steps.max(axis=1) - slack), (chosen, steps.max(axis=1), slack)
    top2 = np.sort(steps, axis=1)[:, -2:]
    if np.all(top2[:, 1] - top2[:, 0] > slack):
        assert ids_d == ids_c
    assert audio_d.shape == audio_c.shape and audio_d.size > 0
    err = rel(audio_d, audio_c)
    spectrum_err = spectrum_rel(audio_d, audio_c)
    print(f"speech audio rel {err:.2e}, STFT magnitude rel {spectrum_err:.2e} over {audio_c.size} samples")
    if backend.WAVEFORM_SAMPLES_COMPARABLE:
        assert err <= backend.WAVEFORM_RTOL, err
    else:
        assert spectrum_err <= backend.SPECTRUM_RTOL, spectrum_err


def spectrum_rel(a, b) -> float:
    """Relative (Frobenius) difference of the magnitude spectrograms (40 ms Hann windows, 10 ms hop)."""
    def mag(x):
        n, hop = 960, 240
        frames = np.stack([x[i:i + n] * np.hanning(n) for i in range(0, len(x) - n + 1, hop)])
        return np.abs(np.fft.rfft(frames, axis=1))

    ma, mb = mag(np.asarray(a, np.float64)), mag(np.asarray(b, np.float64))
    return float(np.linalg.norm(ma - mb) / max(np.linalg.norm(mb), 1e-30))


def test_hift_given_the_same_f0(tiny_f32):
    """HiFT alone on one mel: its F0 within the float floor, and with the CPU's F0 given to both, the
    harmonic source agrees to the floor and the waveform as the backend's precision allows."""
    omni = str(tiny_f32[1])
    mel = np.random.default_rng(5).standard_normal((80, 40)).astype(np.float32) * 0.5
    f0, audio = {}, {}
    for name, device in (("dev", backend.DEVICE), ("cpu", "cpu")):
        f0[name] = _testing.HiftVocoder(omni, n_threads=2, seed=0, device=device).f0(mel)
    err_f0 = rel(f0["dev"], f0["cpu"])
    for name, device in (("dev", backend.DEVICE), ("cpu", "cpu")):
        audio[name] = _testing.HiftVocoder(omni, n_threads=2, seed=0, device=device).forward(mel, f0=f0["cpu"])
    err_src = rel(audio["dev"][1], audio["cpu"][1])
    err_wave = rel(audio["dev"][0], audio["cpu"][0])
    err_spec = spectrum_rel(audio["dev"][0], audio["cpu"][0])
    print(f"HiFT f0 rel {err_f0:.2e}, source rel {err_src:.2e}, audio rel {err_wave:.2e}, STFT rel {err_spec:.2e}")
    assert err_f0 <= backend.tol(0.0) and err_src <= backend.tol(0.0), (err_f0, err_src)
    if backend.WAVEFORM_SAMPLES_COMPARABLE:
        assert err_wave <= backend.tol(0.0), err_wave
    else:
        assert err_spec <= backend.SPECTRUM_RTOL, err_spec


def test_flow_stage(tiny_f32):
    """Token2Wav's flow (encoder + DiT flow matching, 10 steps) from the same tokens and noise seed."""
    omni = str(tiny_f32[1])
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, 6561, 20)]
    mels = {name: _testing.Flow(omni, n_threads=2, seed=0, device=device).inference(tokens)
            for name, device in (("dev", backend.DEVICE), ("cpu", "cpu"))}
    err = rel(mels["dev"], mels["cpu"])
    print(f"flow mel rel {err:.2e}")
    assert err <= backend.tol(0.0), err


def test_speech_tokens_identical(sessions):
    dev, cpu = sessions
    got = {}
    for name, s in (("dev", dev), ("cpu", cpu)):
        s.chat(MSGS, do_sample=False, repetition_penalty=1.0, max_new_tokens=6, generate_audio=True, max_speech_tokens=30)
        got[name] = _testing.hooks(s).reply_speech_tokens(max_new_tokens=30)[0]
    assert got["dev"] == got["cpu"] and len(got["cpu"]) > 0


def test_every_stage_ran_where_asked(sessions):
    """After the tests above ran every stage: on a device, each stage's graphs are one scheduler split
    each with no CPU node (no silent CPU fallback), and the LLM's weights sit on the device but for
    the token embedding; on the CPU nothing ran anywhere else."""
    dev, cpu = sessions
    for s in (dev, cpu):  # the stages run here too when this test runs alone
        s.chat(MSGS, do_sample=False, max_new_tokens=2, generate_audio=True, max_speech_tokens=10)
        s._session.encode_image(image(64, 64))
        s._session.encode_audio(speechlike(1.0, seed=1))
    placed = dev.graph_placements()
    print(placed)
    stages = ("vision", "audio", "tts", "flow", "hift")
    assert set(stages) <= set(placed)
    for stage in stages:
        p = placed[stage]
        assert p["graphs"] > 0, stage
        if backend.ON_DEVICE:
            assert p["cpu_nodes"] == 0 and p["device_nodes"] > 0 and p["splits"] == p["graphs"], (stage, p)
        else:
            assert p["device_nodes"] == 0 and p["cpu_nodes"] > 0, (stage, p)
    for stage in stages:
        p = cpu.graph_placements()[stage]
        assert p["device_nodes"] == 0 and p["cpu_nodes"] > 0, (stage, p)
    llm = placed["llm"]
    buffers = llm["weight_buffers"]
    cpu_bytes = sum(b for name, b in buffers.items() if name.upper().startswith("CPU"))
    device_bytes = sum(buffers.values()) - cpu_bytes
    if backend.ON_DEVICE:
        # the input layer (token embedding) stays on the CPU by libllama's design; every block goes
        # to the device, and the output head too unless the device cannot hold the head's product
        # for a 512-token batch (libllama's support probe: 151,669 x 512 F32 = 311 MB, more than
        # lavapipe's maxStorageBufferRange of 128 MiB; GPUs allow 2-4 GiB)
        from gguf import GGUFReader

        sizes = {t.name: int(t.n_bytes) for t in GGUFReader(str(dev._model.path)).tensors}
        blocks = sum(n for name, n in sizes.items() if name.startswith("blk."))
        # (the CPU buffer is the mapped file range of its tensors, so it is not summed here)
        assert device_bytes >= blocks, (buffers, blocks)
        head_on_device = device_bytes >= blocks + sizes.get("output.weight", 0)
        print(f"LLM blocks on {backend.DEVICE}; output head on {'it' if head_on_device else 'the CPU'}")
        assert 1 <= llm["splits_token"] <= (2 if head_on_device else 3), llm  # embedding lookup, blocks, (head)
    else:
        assert device_bytes == 0 and cpu_bytes > 0 and llm["splits_token"] == 1, llm


def test_cli_device_option(tiny_f32):
    """minicpmo-cli --device: the C API's device field; an unknown name is refused naming the choices,
    and the greedy reply on the test backend is the CPU's (compared where the backend's arithmetic is
    F32: under F16 shaders a near tie of the random model may go either way, see the spoken-reply test)."""
    import shutil
    import subprocess

    cli = shutil.which("minicpmo-cli")
    base = [cli, "-m", str(tiny_f32[0]), "-p", "Hello", "-n", "4", "--temp", "0", "-c", "256", "-t", "2"]
    bad = subprocess.run(base + ["--device", "NoSuchGPU7"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "unknown device 'NoSuchGPU7'" in bad.stderr and "cpu" in bad.stderr, bad.stderr
    replies = [subprocess.run(base + ["--device", device], capture_output=True, text=True, timeout=300)
               for device in (backend.DEVICE, "cpu")]
    for r in replies:
        assert r.returncode == 0, r.stderr
    assert replies[0].stdout.strip() and replies[1].stdout.strip()
    if backend.FLOAT_RTOL <= 1e-3:
        assert replies[0].stdout == replies[1].stdout
