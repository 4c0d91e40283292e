"""The omni companion's CPU weights are the file's own pages, mapped read-only (GgufWeights): shared
with the page cache, never copied; `use_mmap=False` reads them into memory instead, as it does for the
LLM. Both give the same numbers, bit for bit (the same kernels on the same bytes)."""

from __future__ import annotations

import os

import numpy as np

from minicpmo_cpp import OmniSession

from test_vision_encoder import smooth_noise_image


def _mappings_of(path: str) -> int:
    """How many of this process's memory mappings are of the file `path`."""
    want = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.split()[-1] == want)


def test_companion_weights_are_mapped_unless_use_mmap_is_false(tiny_f32):
    llm, omni = (str(p) for p in tiny_f32)
    img = smooth_noise_image(448, 448)
    outs = {}
    for use_mmap in (True, False):
        with OmniSession(llm, omni_path=omni, n_threads=1, device="cpu", n_ctx=64, use_mmap=use_mmap,
                         compute_type="f32") as s:
            before = _mappings_of(omni)
            outs[use_mmap] = s.encode_image(img, max_slice_nums=1)  # loads the vision weights now
            assert (_mappings_of(omni) > before) == use_mmap, f"use_mmap={use_mmap}"
    assert np.array_equal(outs[True], outs[False])
