"""The browser page of minicpmo-server in a real headless Chromium (Debian's ``chromium``, installed by
scripts/test.sh) driven by Playwright: the microphone is Chromium's fake capture device fed from a
WAV file, the camera its fake video device.

Checked: the page's AudioWorklet resamples to 16 kHz like the float64 formula (an offline render of
a known tone); a live Talk session sends units (audio, and frames with the camera on) and gets
results and 24 kHz audio back, which the page plays; Chat streams the same reply as the in-process
API (greedy, with an uploaded image). Screenshots go to the test's temp folder.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import wave

import numpy as np
import pytest
import uvicorn
from playwright.sync_api import sync_playwright

from backend import SESSION
from minicpmo_cpp import OmniSession
from minicpmo_cpp.serve import ServerConfig, create_app

KEY = "page-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server_url(tiny_f32):
    session = OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=2048, seed=0, kv_cache_type="f32")
    app = create_app(ServerConfig(model_path=str(tiny_f32[0]), max_sessions=2, api_key=KEY), session)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=60)


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory):
    """8 s of a voice-like test signal (a gliding tone with an envelope) for the fake microphone."""
    t = np.arange(16000 * 8) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.round(x * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def browser(mic_wav):
    assert CHROMIUM, "Debian's chromium is needed (scripts/test.sh installs it: apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic_wav}", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


def _open(browser, server_url):
    page = browser.new_page()
    page.goto(f"{server_url}/?api_key={KEY}")
    page.wait_for_function("document.getElementById('voice').options.length > 0", timeout=60000)
    return page


def test_worklet_resamples_to_16khz(browser, server_url):
    page = _open(browser, server_url)
    rates = [48000, 44100]
    units = page.evaluate("""async (rates) => {
        const out = {};
        for (const rate of rates) {
            const ctx = new OfflineAudioContext(1, Math.round(rate * 2.2), rate);
            await ctx.audioWorklet.addModule("ui/mic-worklet.js");
            const node = new AudioWorkletNode(ctx, "mic-units");
            const got = out[rate] = [];
            node.port.onmessage = (e) => got.push(Array.from(e.data));
            const osc = ctx.createOscillator();
            osc.frequency.value = 440;
            osc.connect(node);
            node.connect(ctx.destination);
            osc.start();
            await ctx.startRendering();
            await new Promise((r) => setTimeout(r, 300));  // the port's last messages
        }
        return out;
    }""", rates)
    for rate in rates:
        got = np.array(units[str(rate)], np.float64)
        assert got.shape == (2, 16000), (rate, got.shape)
        n = np.arange(32000)
        want = np.sin(2 * np.pi * 440 * n / 16000)
        # linear interpolation of a 440 Hz sine sampled at 44.1-48 kHz: error <= (2*pi*440/rate)^2 / 8
        # = 4.9e-4 at 44.1 kHz, plus the oscillator's own float32 phase (1e-4 over 2 s)
        assert np.abs(got.reshape(-1) - want).max() < 1e-3, rate


def test_talk_sends_units_and_plays_the_reply(browser, server_url, tmp_path):
    page = _open(browser, server_url)
    page.check("#camera")
    page.click("#start")
    page.wait_for_function("window.stats.results >= 3 && window.stats.audioPlayed >= 1", timeout=120000)
    page.screenshot(path=str(tmp_path / "talk.png"))
    stats = page.evaluate("window.stats")
    assert stats["unitsSent"] >= stats["results"] >= 3 and stats["framesSent"] >= 1
    assert stats["audioChunks"] >= stats["audioPlayed"] >= 1 and stats["errors"] == 0
    state = page.text_content("#state")
    assert state in ("listening", "speaking")
    if stats["speaking"]:
        assert page.text_content("#transcript").strip()
    page.click("#interrupt")
    page.click("#stop")
    page.wait_for_function("document.getElementById('state').textContent === 'idle'")
    assert (tmp_path / "talk.png").stat().st_size > 1000


def test_chat_streams_the_in_process_reply(browser, server_url, tiny_f32, tmp_path):
    from PIL import Image

    png = tmp_path / "pic.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(png)
    ref = OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=2048, seed=0, kv_cache_type="f32")
    want = str(ref.chat([{"role": "user", "content": [Image.open(png), "Hello"]}], do_sample=False,
                        max_new_tokens=512))
    page = _open(browser, server_url)
    page.click("#tab-chat")
    page.set_input_files("#image", str(png))
    page.fill("#prompt", "Hello")
    page.fill("#temperature", "0")
    page.click("#send")
    page.wait_for_function("window.stats.chatDone", timeout=120000)
    page.screenshot(path=str(tmp_path / "chat.png"))
    assert page.evaluate("window.stats.errors") == 0
    assert page.evaluate("window.lastReply") == want
