"""Speech-token choices of the float32 runtime against the float64 numpy reference (reference/tts.py)
with a stated rule for near ties, so that the comparison holds on every CPU.

The runtime's logits agree with the reference's to a relative tolerance `rel_tol` of the logit scale
(each test states and asserts it), i.e. every logit may move by delta = rel_tol * max|finite logit|.
A discrete choice made from logits that moved by delta is then one of:

- greedy: a token whose reference logit is within 2 * delta of the reference maximum;
- an inverse-CDF draw u: a token whose reference CDF interval [c[s-1], c[s]) contains u * c[-1]
  once widened by expm1(2 * delta) * c[-1] (each probability moves by at most a factor e^(+-2 delta)
  after normalisation, so each CDF value moves by at most that much).

The reference is driven with the runtime's samples (its `choose` is replaced), each checked against
that rule; after the given samples run out it chooses for itself. The count of choices that differ
from the reference's own is kept: the tests allow at most one per test (measured: none on AMD Zen 4),
so a wrong sampler cannot hide behind the rule.
"""

from __future__ import annotations

import numpy as np

import reference.tts as tts_ref


class FollowRuntime:
    def __init__(self, samples, rel_tol: float):
        self.samples = [int(s) for s in samples]
        self.rel_tol = rel_tol
        self.steps = 0
        self.not_own = 0  # runtime choices that differ from the reference's own choice

    def __call__(self, processed_logits, draw):
        x = np.asarray(processed_logits, np.float64)
        finite = np.isfinite(x)
        delta = self.rel_tol * float(np.max(np.abs(x[finite])))
        u = None if draw is None else float(draw())  # consumed in step order, as the reference does
        own = int(np.argmax(x)) if u is None else tts_ref.sample_from_probs(tts_ref.softmax(x), u)
        if self.steps >= len(self.samples):
            self.steps += 1
            return own
        s = self.samples[self.steps]
        self.steps += 1
        assert 0 <= s < x.size and finite[s], f"step {self.steps - 1}: the runtime picked {s}, a token the reference cut"
        if s != own:
            self.not_own += 1
            if u is None:
                assert x[s] >= x[own] - 2 * delta, (
                    f"step {self.steps - 1}: runtime {s} (logit {x[s]:.6g}) vs reference argmax {own} "
                    f"({x[own]:.6g}): further apart than 2 * {delta:.3g}")
            else:
                c = np.cumsum(tts_ref.softmax(x))
                widen = np.expm1(2 * delta) * c[-1]
                lo, hi = (c[s - 1] if s > 0 else 0.0), c[s]
                assert lo - widen <= u * c[-1] <= hi + widen, (
                    f"step {self.steps - 1}: draw {u} falls in the reference interval of {own}, not near that of "
                    f"the runtime's {s} ([{lo:.6g}, {hi:.6g}) widened by {widen:.3g})")
        return s


def follow_runtime(monkeypatch, samples, rel_tol: float) -> FollowRuntime:
    """Drive reference.tts with the runtime's `samples` (see the module docstring); returns the
    checker, whose `not_own` counts the near-tie choices."""
    follower = FollowRuntime(samples, rel_tol)
    monkeypatch.setattr(tts_ref, "choose", follower)
    return follower
