"""The relative error the runtime tests compare with: the largest absolute difference over the largest
magnitude of the reference, in float64, after checking the shapes agree. Shared by the companion tests."""

from __future__ import annotations

import numpy as np


def rel(a, b) -> float:
    """max |a - b| / max |b| (b is the reference; a zero reference divides by 1e-30)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
