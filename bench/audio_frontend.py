"""Speed of the C++ audio front end (csrc/audio): the batch log-mel of 30 s of audio and the
streaming mel per 1-s chunk (simplex and duplex feeding, 45 s so the 30-s buffer slide is included).
Single-threaded code. Prints one JSON document; wall time and the calling thread's CPU time are both
given because shared machines make wall time noisy.

    python bench/audio_frontend.py [--reps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from transformers.audio_utils import mel_filter_bank

from bench_common import cpu_name
from minicpmo_cpp import _testing

SR = 16000


def timed(fn):
    w0, c0 = time.perf_counter(), time.thread_time()
    out = fn()
    return out, (time.perf_counter() - w0) * 1e3, (time.thread_time() - c0) * 1e3


def summary(values):
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    filters = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                              sampling_rate=SR, norm="slaney", mel_scale="slaney").T.astype(np.float32)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(45 * SR)).astype(np.float32)

    clip = np.ascontiguousarray(audio[:30 * SR])
    batch_wall, batch_cpu = [], []
    for _ in range(args.reps):
        _, w, c = timed(lambda: _testing.log_mel(clip, filters))
        batch_wall.append(w)
        batch_cpu.append(c)

    streaming = {}
    for feed, redundancy in (("simplex", 0), ("duplex", 2)):
        wall, cpu = [], []
        for _ in range(max(1, args.reps // 5)):
            s = _testing.StreamingMel(filters, feed=feed, redundancy_frames=redundancy)
            for k in range(45):
                piece = np.ascontiguousarray(audio[k * SR:(k + 1) * SR])
                _, w, c = timed(lambda: (s.push(piece), s.next_chunk()))
                wall.append(w)
                cpu.append(c)
        streaming[feed] = {"push_plus_chunk_ms_wall": summary(wall), "push_plus_chunk_ms_cpu": summary(cpu)}

    print(json.dumps({
        "machine": cpu_name(),
        "batch_30s_ms_wall": summary(batch_wall),
        "batch_30s_ms_cpu": summary(batch_cpu),
        "streaming_per_1s_chunk": streaming,
    }, indent=2))


if __name__ == "__main__":
    main()
