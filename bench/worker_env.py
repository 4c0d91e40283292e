"""The environment of a benchmark's worker processes, shared by the bench scripts: both sides (ours,
PyTorch) get the same thread count in every pool and the same OpenMP wait policy."""

from __future__ import annotations

import os


def thread_env(threads: int, wait_policy: str) -> dict:
    """Every BLAS / OpenMP pool the workers may touch gets the same thread count, both sides' OpenMP
    runtimes the same wait policy ("default" leaves it unset). ggml (built with OpenMP) meets at an
    OpenMP barrier after every graph node; libgomp's default spins there for a while, which on a CPU
    shared with other processes keeps the sibling thread off the core it waits for (measured under
    load: 0.3-1.0 s per TTS step with 2 threads, 0.1-0.17 s passive, 0.12 s with 1 thread)."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy != "default":
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    return env
