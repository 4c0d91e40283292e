"""Small pieces every benchmark script uses: where built benchmark models are cached, this
process's memory figures, and a speech-like test signal."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """Benchmark models and tools are built once and kept here (MINICPMO_CACHE_DIR overrides)."""
    d = os.environ.get("MINICPMO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "minicpmo-cpp")
    return Path(d)


def proc_status_kib(key: str) -> int:
    """VmHWM (peak RSS), VmRSS, RssAnon or RssFile of this process in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def speechlike(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    """A voiced signal with a gliding pitch, 5 harmonics and 4-Hz syllables, plus a little noise."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * env * x + 0.01 * rng.standard_normal(n)).astype(np.float32)
