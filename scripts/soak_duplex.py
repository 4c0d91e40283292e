#!/usr/bin/env python3
"""Duplex soak: one long conversation on the tiny model (default 3600 one-second units = 1 hour of
conversation), fed as fast as the machine allows, with speech on, a camera frame every 5 units and
the chosen sliding window. Not part of the test suite (tests/test_duplex_long_session.py is the
10-minute version that runs there).

Reports the process RSS once a minute (wall clock) and at the end, and counts what went in and what
came out: every prefilled unit must be decided once, with its result numbered in order, and its
audio handed out exactly once, in unit order (both wait_audio modes are used, in blocks of 50
units). Exits non-zero when a unit is lost, duplicated or out of order, or when the RSS grows by
more than --rss-limit-mib between the end of the first 10 % of units and the end.

    python scripts/soak_duplex.py --window basic            # 1 hour of units, basic window
    python scripts/soak_duplex.py --window context --units 600
    python scripts/soak_duplex.py --model llm.gguf          # an existing conversion (its companion next to it)

Without --model the tiny checkpoint is generated and converted (f32) into a temporary folder, as the
suite's fixtures do.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from audio_inputs import speechlike  # noqa: E402

from minicpmo_cpp import OmniSession  # noqa: E402

SR = 16000
UNIT_OUT = 24000
LISTEN, SPEAK, TURN_EOS, CHUNK_EOS = 151705, 151706, 151717, 151718  # spec §4.2
PREFIX = "<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>"
SUFFIX = "<|audio_end|><|im_end|>"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def tiny_model(workdir: Path) -> Path:
    from minicpmo_cpp.build_info import LLAMA_CPP_DIR
    from minicpmo_cpp.convert import convert_checkpoint
    from minicpmo_cpp.convert.make_tiny import make_tiny_checkpoint

    vocab = Path(LLAMA_CPP_DIR) / "models" / "ggml-vocab-qwen2.gguf"
    hf = Path(make_tiny_checkpoint(workdir / "hf", seed=0, vocab_gguf=vocab))
    llm, _omni = convert_checkpoint(hf, workdir / "gguf", outtype="f32", name="MiniCPM-o-4_5", quiet=True)
    return Path(llm)


def frame(k: int) -> np.ndarray:
    """A 320x240 RGB frame that changes from frame to frame (a moving gradient plus noise)."""
    rng = np.random.default_rng(k)
    y, x = np.mgrid[0:240, 0:320]
    base = ((x + 7 * k) % 256)[..., None] * np.array([1.0, 0.5, 0.25]) + (y % 64)[..., None]
    return np.clip(base + rng.integers(0, 32, base.shape), 0, 255).astype(np.uint8)


def plan(words: list[int]) -> list[list[int] | None]:
    """A 20-unit stretch of conversation, scripted decisions (None: a free sampled one) so that the
    tiny random model listens, speaks, ends turns and runs into the token limit like a real one."""
    listen, close = [LISTEN, CHUNK_EOS], [SPEAK, TURN_EOS, CHUNK_EOS]
    return [listen, listen, listen, [SPEAK, *words[:3], CHUNK_EOS], [SPEAK, CHUNK_EOS],
            [SPEAK, *words[3:9], CHUNK_EOS], [SPEAK, words[9], TURN_EOS, CHUNK_EOS], listen, listen,
            None, close, listen, [SPEAK, *words[:18]], listen, [SPEAK, words[4], TURN_EOS, CHUNK_EOS],
            listen, None, close, listen, listen]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=3600, help="one-second units (3600 = 1 hour)")
    ap.add_argument("--window", choices=("basic", "context"), default="basic")
    ap.add_argument("--frame-every", type=int, default=5, help="a camera frame every N units (0: none)")
    ap.add_argument("--model", help="LLM GGUF (default: the generated tiny model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-every", type=float, default=60.0, help="seconds between RSS lines")
    ap.add_argument("--rss-limit-mib", type=float, default=16.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        llm = Path(args.model) if args.model else tiny_model(Path(tmp))
        omni = OmniSession(str(llm), n_threads=args.threads, n_ctx=2048, seed=0)
        if args.window == "basic":
            dx = omni.as_duplex(sliding_window="basic", window_high=1024, window_low=768, seed=5)
        else:
            dx = omni.as_duplex(sliding_window="context", context_max_units=24, seed=5)
        assert dx.generate_audio, "the model has no speech components: the soak needs speech on"
        dx.prepare(PREFIX, SUFFIX)
        pcm = speechlike(61.0, 3)
        steps = plan(omni.tokenize("so I was thinking we could walk down to the river and maybe get some tea after that"))

        n_in = n_decided = n_audio_out = n_speaking = n_frames = n_turns = 0
        samples_out = 0
        next_audio = 1          # the unit whose audio must come out next
        pending = 0             # units decided with wait_audio=False, audio not taken yet
        t0 = time.perf_counter()
        next_report = args.rss_every
        rss_first = None
        print(f"soak: {args.units} units, window {args.window}, frame every {args.frame_every} units, "
              f"model {llm.name}; RSS at start {rss_mib():.1f} MiB", flush=True)

        def take(got):
            nonlocal next_audio, n_audio_out, samples_out
            unit, audio, _tokens = got
            if unit != next_audio:
                raise SystemExit(f"FAIL: audio of unit {unit} came out where unit {next_audio} was due")
            if audio is None or audio.dtype != np.float32 or not np.all(np.isfinite(audio)):
                raise SystemExit(f"FAIL: unit {unit}: audio missing or not finite float32")
            next_audio += 1
            n_audio_out += 1
            samples_out += audio.size

        for k in range(args.units):
            wait_audio = (k // 50) % 2 == 0
            start = 16560 * (k > 0) + SR * (k - 1) * (k > 0)
            off = start % (pcm.size - 16560)
            frames = [frame(k)] if args.frame_every and k % args.frame_every == 0 else None
            dx.streaming_prefill(audio_waveform=pcm[off:off + (16560 if k == 0 else SR)], frame_list=frames)
            n_in += 1
            n_frames += frames is not None
            while pending:  # the previous unit's audio, made on the speech thread meanwhile
                take(dx.take_audio())
                pending -= 1
            step = steps[k % len(steps)]
            r = dx.streaming_generate(decode_mode="sampling" if step is None else "greedy",
                                      max_new_speak_tokens_per_chunk=20, wait_audio=wait_audio, _scripted=step)
            n_decided += 1
            if r["unit"] != k + 1 or r["current_time"] != k + 1:
                raise SystemExit(f"FAIL: unit {k + 1} came back as unit {r['unit']} (time {r['current_time']})")
            n_speaking += not r["is_listen"]
            n_turns += r["end_of_turn"]
            if wait_audio:
                take((r["unit"], r["audio_waveform"], r["speech_token_ids"]))
            else:
                pending += 1
            if k + 1 == max(1, args.units // 10):
                rss_first = rss_mib()
            el = time.perf_counter() - t0
            if el >= next_report:
                print(f"[{el / 60:5.1f} min] unit {k + 1}: RSS {rss_mib():.1f} MiB, {n_speaking} speaking, "
                      f"{n_frames} frames, kv {len(dx.kv_tokens)}", flush=True)
                next_report += args.rss_every
        while pending:
            take(dx.take_audio())
            pending -= 1
        wall = time.perf_counter() - t0
        rss_end = rss_mib()
        if dx.take_audio(wait=False) is not None:
            raise SystemExit("FAIL: audio left over after every unit's audio was taken")

    print(f"end: {args.units} units in {wall / 60:.1f} min ({wall / args.units * 1e3:.0f} ms a unit); "
          f"units in {n_in}, decided {n_decided}, audio out {n_audio_out} "
          f"({samples_out / UNIT_OUT / 60:.1f} min of 24 kHz audio); {n_speaking} speaking units, "
          f"{n_turns} turn ends, {n_frames} frames; RSS {rss_first:.1f} MiB after {max(1, args.units // 10)} units "
          f"-> {rss_end:.1f} MiB at the end ({rss_end - rss_first:+.1f} MiB)", flush=True)
    ok = n_in == n_decided == n_audio_out == args.units and rss_end - rss_first < args.rss_limit_mib
    print("PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
