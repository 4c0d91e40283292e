"""A 10-minute duplex conversation on the tiny model: 600 one-second units, fed as fast as the
machine allows (no sleeping to real time), with the sliding window on, speech on, and a mix of
scripted listen / speak / turn-end / empty / token-limit units and free sampled decisions.

Checked after every unit, against models written here from the spec (not from the C++):
- it never stops or errors; units and heard seconds count up one by one;
- the KV cache is the system prompt + the newest whole units, as the §6.5 basic window predicts
  (a unit is <unit>, 10 audio embeddings, the fed decisions, </unit> (§6.3); after a unit, when
  the cache passes window_high, oldest units go until at most window_low remain), so it never
  holds more than window_high positions between units;
- the Whisper streaming cache grows by 50 positions a unit and restarts when the next chunk's
  conv-stem output (51 frames for the first chunk, 52 later, §3.4) would reach 1500;
- every unit's audio comes back once, in unit order (units in == units out): 1 s of silence when listening, at least 1 s of
  finite samples when speaking (§6.3); both wait_audio modes are used, in alternating blocks;
- the mean unit time stays below 1 s (it keeps real-time pace);
- the process RSS grows by less than RSS_GROWTH_LIMIT between unit 100 and unit 600.
All 600 units fit: about 150 s for the loop (165 s with the fixtures) on the shared 2-core machine
at load average 5-6; the first speaking unit took 5.5 s (first use of the speech components
at that point); on average a unit took 0.25 s (listening 0.15 s, speaking 0.33 s).
"""

from __future__ import annotations

import os
import time

import numpy as np

from minicpmo_cpp import OmniSession, _testing
from audio_inputs import speechlike

SR = 16000
UNIT_OUT = 24000  # 24 kHz samples per unit
UNIT, UNIT_END = 151683, 151684
LISTEN, SPEAK = 151705, 151706
TURN_EOS, CHUNK_EOS = 151717, 151718
PREFIX = "<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>"
SUFFIX = "<|audio_end|><|im_end|>"

N_UNITS = 600          # 10 minutes of conversation
RSS_FROM = 100         # RSS measured after this unit (all buffers, caches and pools have their size) ...
WINDOW_HIGH, WINDOW_LOW = 256, 192  # a unit is 13-32 positions: the window slides every few units
MAX_TOKENS = 20        # max_new_speak_tokens_per_chunk (the reference default)
WHISPER_POSITIONS = 1500
# ... and after the last. In steady state nothing should grow: the cache, the Whisper cache and the
# 30-s mel buffer are bounded and were full size long before unit 100, the speech queue is emptied
# every unit; only the decode history grows (4 bytes per decided token, < 50 KB here). 8 MiB leaves
# room for allocator fragmentation yet catches a per-unit leak of any of the unit's big buffers:
# its 24 kHz audio (96 KB x 500 units = 47 MB), its mel chunk (80 x 104 floats, 33 KB -> 16 MB),
# its 10 audio embeddings + speech hidden rows at the tiny width (~10 KB -> 5 MB would pass, which
# the per-unit cache/layout checks cover instead).
RSS_GROWTH_LIMIT = 8 * 1024 * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cycle(words: list[int]) -> list[dict]:
    """One 20-unit stretch of conversation; ``script`` None = a free sampled decision."""
    a = words
    speak = lambda *toks: {"script": [SPEAK, *toks, CHUNK_EOS]}  # noqa: E731
    # a scripted <|listen|> mid-turn becomes <|tts_bos|> and the unit goes on: <|chunk_eos|> ends it
    listen = {"script": [LISTEN, CHUNK_EOS]}
    close = {"script": [SPEAK, TURN_EOS, CHUNK_EOS]}  # ends whatever turn a free decision began
    return [
        listen, listen, listen,
        speak(a[0], a[1], a[2]),                      # a turn starts
        speak(),                                      # a speaking unit without text
        speak(*a[3:9]),
        {"script": [SPEAK, a[9], a[10], TURN_EOS, CHUNK_EOS]},  # the turn ends
        listen, listen,
        {"script": None},                             # a free sampled decision
        close, listen,
        {"script": [SPEAK] + a[:MAX_TOKENS - 2]},     # runs into the forced <|chunk_eos|>
        listen,                                       # mid-turn: becomes <|tts_bos|> (cannot go silent)
        {"script": [SPEAK, a[4], TURN_EOS, CHUNK_EOS]},
        listen,
        {"script": None, "greedy": True},             # a free greedy decision
        close, listen, listen,
    ]


def _whisper_cache_model(n_units: int) -> list[int]:
    """Whisper K/V positions after each unit (§3.4): the first chunk's stem gives 51 frames
    (102 mel frames), later ones 52 (104); 50 are kept; reset first when cache + stem >= 1500."""
    out, cache = [], 0
    for k in range(n_units):
        stem = 51 if k == 0 else 52
        if cache + stem >= WHISPER_POSITIONS:
            cache = 0
        cache += 50
        out.append(cache)
    return out


def test_ten_minute_duplex_session_stays_bounded(tiny_f32):
    omni = OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=1024, seed=0)
    dx = omni.as_duplex(sliding_window=True, window_high=WINDOW_HIGH, window_low=WINDOW_LOW, seed=5)
    assert dx.generate_audio  # the tiny model has the speech components
    dx.prepare(PREFIX, SUFFIX)
    system = dx.kv_tokens
    assert len(system) == dx.system_length

    words = omni.tokenize("so I was thinking we could walk down to the river and maybe get some tea after that, if the rain stops")
    assert len(words) >= MAX_TOKENS
    plan = _cycle(words)
    pcm = speechlike(61.0, 3)  # a minute of speech-like audio, heard over and over
    want_whisper = _whisper_cache_model(N_UNITS)

    kept: list[list[int]] = []  # the units the window model keeps, each as its cache positions
    pending = None              # (unit, listening, end_of_turn) of audio not handed out yet
    unit_times, whisper, drops, speaking = [], [], 0, 0
    rss_at = {}
    kinds = []

    audio_out = []  # units whose audio came out, in the order it came

    def check_audio(got, unit, listening, end_of_turn):
        n, audio, _ = got
        assert n == unit  # in unit order
        audio_out.append(n)
        assert audio.dtype == np.float32 and np.all(np.isfinite(audio))
        if listening:
            np.testing.assert_array_equal(audio, np.zeros(UNIT_OUT, np.float32))
        elif not end_of_turn:
            assert audio.size >= UNIT_OUT  # left-padded to a whole unit (a turn's end flushes any length)

    t_all = time.perf_counter()
    for k in range(N_UNITS):
        step = plan[k % len(plan)]
        wait_audio = (k // 50) % 2 == 0  # blocks of 50 units in each speech mode
        start = 16560 * (k > 0) + SR * (k - 1) * (k > 0)
        off = start % (pcm.size - 16560)
        piece = pcm[off:off + (16560 if k == 0 else SR)]

        t0 = time.perf_counter()
        dx.streaming_prefill(audio_waveform=piece)
        whisper.append(_testing.hooks(omni).audio_stream_cache_len)
        if pending is not None:
            check_audio(dx.take_audio(), *pending)
            pending = None
        kw = {"decode_mode": "greedy" if step.get("greedy") or step["script"] is not None else "sampling",
              "max_new_speak_tokens_per_chunk": MAX_TOKENS, "wait_audio": wait_audio}
        if step["script"] is not None:
            kw["_scripted"] = step["script"]
        r = dx.streaming_generate(**kw)
        unit_times.append(time.perf_counter() - t0)

        assert r["unit"] == k + 1 and r["current_time"] == k + 1, k
        listening = r["is_listen"]
        speaking += not listening
        kinds.append(not listening)
        if wait_audio:
            check_audio((r["unit"], r["audio_waveform"], r["speech_token_ids"]), k + 1, listening, r["end_of_turn"])
        else:
            assert r["audio_waveform"] is None
            pending = (k + 1, listening, r["end_of_turn"])

        # §6.3 layout of the unit and §6.5 basic window, predicted here
        kept.append([UNIT] + [-1] * 10 + r["decided_token_ids"] + [UNIT_END])
        total = len(system) + sum(map(len, kept))
        n_drop = 0
        if total > WINDOW_HIGH:
            while total > WINDOW_LOW and kept:
                gone = kept.pop(0)
                total -= len(gone)
                n_drop += len(gone)
        assert r["n_dropped"] == n_drop, k
        drops += n_drop > 0
        kv = dx.kv_tokens
        assert kv == system + [t for u in kept for t in u], k
        assert len(kv) <= WINDOW_HIGH, k
        assert whisper[-1] == want_whisper[k], (k, whisper[-1], want_whisper[k])

        if k + 1 in (RSS_FROM, N_UNITS):
            rss_at[k + 1] = _rss_bytes()
    if pending is not None:
        check_audio(dx.take_audio(), *pending)
    wall = time.perf_counter() - t_all
    # nothing lost: every unit fed was decided once and its audio handed out exactly once, in order
    assert audio_out == list(range(1, N_UNITS + 1))
    assert dx.take_audio(wait=False) is None

    growth = rss_at[N_UNITS] - rss_at[RSS_FROM]
    mean_unit = float(np.mean(unit_times))
    worst = int(np.argmax(unit_times))
    print(f"{N_UNITS} units in {wall:.1f} s: mean unit {mean_unit * 1e3:.1f} ms (listening "
          f"{np.mean([t for t, s in zip(unit_times, kinds) if not s]) * 1e3:.1f}, speaking "
          f"{np.mean([t for t, s in zip(unit_times, kinds) if s]) * 1e3:.1f}), max {unit_times[worst] * 1e3:.1f} ms "
          f"(unit {worst + 1}); {speaking} speaking units; window slid {drops} times; Whisper cache restarted "
          f"{sum(1 for a, b in zip(whisper, whisper[1:]) if b < a)} times; RSS {rss_at[RSS_FROM] / 2**20:.1f} -> "
          f"{rss_at[N_UNITS] / 2**20:.1f} MiB ({growth / 2**20:+.2f} MiB)")
    assert drops >= 100  # the window slid all along the conversation
    assert sum(1 for a, b in zip(want_whisper, want_whisper[1:]) if b < a) >= 20  # restarted all along
    assert speaking >= N_UNITS // 4
    assert mean_unit < 1.0, mean_unit  # real-time pace: one unit per second of conversation
    assert growth < RSS_GROWTH_LIMIT, growth
