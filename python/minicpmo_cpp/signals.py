"""Deterministic synthetic signals for tests, benchmarks and demos (no recordings needed)."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000  # the audio front end's rate


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Harmonics with a wandering pitch under a syllable-rate envelope, plus a little noise: a
    signal whose mel frames differ from frame to frame. float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * env * x + 0.01 * rng.standard_normal(n)).astype(np.float32)
