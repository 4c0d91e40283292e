"""Runtime vision path (C++ preprocessing, SigLIP NaViT and resampler on the converted tiny GGUF)
against the float64 numpy reference (tests/reference/vision.py), which test_vision_reference_vs_torch.py
validates against PyTorch.

Metric for float outputs: rel = max|runtime - reference| / max|reference| over the compared array.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from minicpmo_cpp import OmniSession, _testing
from reference import round_weights
from reference.vision import (VisionReference, image_placeholder_text, load_bucket_exceptions, navit_position_ids,
                              preprocess)
from backend import SESSION, tol

# F32 GGUF: the runtime computes in float32 -> ~1e-6 relative on this 2-layer tower (the torch
# float32 tower is 1e-6 from the reference). 1e-4 still catches any formula error (>= 1e-3).
# Note: ggml's CPU GELU looks values up in an F16 table; emulated in numpy that alone costs 5e-4 on
# the ViT features, so the runtime needs an exact tanh GELU to meet this bound.
# tol(): the test backend's float floor where larger (tests/backend.py; the CPU keeps these)
F32_REL_TOL = tol(1e-4)
# F16 GGUF vs a reference on F16-rounded weights: ggml also rounds matmul activations to F16
# (~5e-4 per element), amplified a little through 2 ViT layers + the resampler -> 1e-2 relative.
F16_REL_TOL = tol(1e-2)

UNK_ID = 128244  # <unk>, the image placeholder token (spec §1.3)

# (W, H) -> (grid (cols, rows) or None, source size (W, H), slice size (W, H) or None).
# Spec §1.2 worked examples; 420x500 (25-row slices: a float-tie side) and 2000x60 (extreme ratio,
# 183 x 6 patches) derived by hand with the §1.2 formulas.
CASES = {
    (448, 448): (None, (448, 448), None),
    (100, 100): (None, (448, 448), None),  # upscaled
    (640, 480): ((2, 1), (518, 392), (364, 546)),
    (1024, 768): ((2, 2), (518, 392), (518, 392)),
    (1920, 1080): ((4, 2), (602, 336), (420, 476)),
    (300, 2000): ((1, 4), (168, 1162), (350, 574)),  # source 83 patches high (> 70), slices 25 wide
    (420, 500): ((1, 2), (406, 490), (574, 350)),  # slices 25 patches high
    (2000, 60): (None, (2562, 84), None),
}
F16_CASES = [(448, 448), (1024, 768), (300, 2000)]  # subset: keeps the file well under a minute


def rel(a, ref):
    a = np.asarray(a, np.float64)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def smooth_noise_image(w, h):
    """Deterministic RGB uint8 image (seeded by its size): smooth gradients + a little noise."""
    rng = np.random.default_rng(w * 10007 + h)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([np.sin(x / (9 + 4 * c) + c) * np.cos(y / (13 + 3 * c)) for c in range(3)], -1)
    img = 127.5 + 100 * base + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def case_id(size):
    return f"{size[0]}x{size[1]}"


@pytest.fixture(scope="module")
def vref32(tiny_state):
    sd, cfg = tiny_state
    return VisionReference(sd, cfg)


@pytest.fixture(scope="module")
def vref16(tiny_state):
    sd, cfg = tiny_state
    return VisionReference(round_weights(sd, "f16"), cfg)  # what an F16 GGUF stores


@pytest.fixture(scope="module")
def vsession_f32(tiny_f32):
    return OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION)


@pytest.fixture(scope="module")
def vsession_f16(tiny_f16):
    return OmniSession(str(tiny_f16[0]), n_threads=2, **SESSION)


def reference_outputs(vref, img, max_slice_nums=9):
    """(grid, slices, [ViT features per slice], embeddings (64 * n_slices, E))."""
    grid, slices = preprocess(img, max_slice_nums, vref.scale_resolution, vref.patch_size)
    feats = [vref.vit(s.patches, s.h, s.w) for s in slices]
    emb = np.concatenate([vref.resample(f, s.h, s.w) for f, s in zip(feats, slices)])
    return grid, slices, feats, emb


# ------------------------------------------------------------------------------------------------
# preprocessing
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", list(CASES), ids=case_id)
def test_preprocess_matches_pillow_reference(size):
    w, h = size
    img = smooth_noise_image(w, h)
    grid, slices = preprocess(img, 9)
    want_grid, want_src, want_slice = CASES[size]
    # the reference itself reproduces the spec's numbers
    assert grid == want_grid
    assert (slices[0].rgb.shape[1], slices[0].rgb.shape[0]) == want_src
    n_slices = 0 if grid is None else grid[0] * grid[1]
    assert len(slices) == 1 + n_slices
    assert all((s.rgb.shape[1], s.rgb.shape[0]) == want_slice for s in slices[1:])

    out = _testing.preprocess_image(img, 9)
    got_grid = out["grid"]
    assert (None if got_grid is None else tuple(got_grid)) == grid
    assert len(out["images"]) == len(slices)
    for k, (a, s) in enumerate(zip(out["images"], slices)):
        a = np.asarray(a)
        assert a.dtype == np.uint8 and a.shape == s.rgb.shape, (k, a.dtype, a.shape, s.rgb.shape)
        # the runtime implements Pillow's bicubic (same fixed-point filter, same rounding): exact
        n_diff = int(np.count_nonzero(a != s.rgb))
        assert n_diff == 0, (f"image {k}: {n_diff} of {a.size} values differ from Pillow, "
                             f"max |diff| {int(np.max(np.abs(a.astype(int) - s.rgb)))}")


def test_preprocess_max_slice_nums_one_never_slices():
    img = smooth_noise_image(1920, 1080)
    grid, slices = preprocess(img, 1)
    assert grid is None and len(slices) == 1
    out = _testing.preprocess_image(img, 1)
    assert out["grid"] is None and len(out["images"]) == 1
    assert np.array_equal(np.asarray(out["images"][0]), slices[0].rgb)


def test_navit_position_ids_match_exception_table():
    """Every grid side 1..1024 (as rows and as columns) and a few 2-D grids, against the reference
    built from the spec's exception table (the runtime emulates torch's float arithmetic; exact)."""
    exc = load_bucket_exceptions()
    for n in range(1, 1025):
        for h, w in ((n, 1), (1, n)):
            got = np.asarray(_testing.navit_position_ids(h, w))
            want = navit_position_ids(h, w, 70, exc)
            assert got.shape == (h * w,) and np.array_equal(got, want), (h, w, np.nonzero(got != want))
    for h, w in ((25, 41), (83, 12), (49, 58), (32, 32), (6, 183)):
        got = np.asarray(_testing.navit_position_ids(h, w, 70))
        assert np.array_equal(got, navit_position_ids(h, w, 70, exc)), (h, w)


# ------------------------------------------------------------------------------------------------
# encoder outputs
# ------------------------------------------------------------------------------------------------

def check_encoder(session, vref, size, tol, label):
    w, h = size
    img = smooth_noise_image(w, h)
    grid, slices, r_feats, r_emb = reference_outputs(vref, img)
    emb = session.encode_image(img, max_slice_nums=9)
    assert emb.dtype == np.float32
    assert emb.shape == (64 * len(slices), vref.embed_dim)  # 64 rows per source image and per slice
    feats = session.vision_features(img, max_slice_nums=9)
    assert len(feats) == len(slices)
    errs = []
    for k, (f, rf, s) in enumerate(zip(feats, r_feats, slices)):
        assert f.dtype == np.float32 and f.shape == (s.h * s.w, vref.patch_w.shape[0]), (k, f.shape)
        errs.append(rel(f, rf))
    e_emb = rel(emb, r_emb)
    print(f"{label} {w}x{h} grid {grid}: embeddings rel {e_emb:.2e}, "
          f"ViT features worst slice rel {max(errs):.2e}")
    assert max(errs) < tol  # per-slice post-LN ViT output
    assert e_emb < tol  # all slices' 64-row blocks, in prompt order


@pytest.mark.parametrize("size", list(CASES), ids=case_id)
def test_f32_encode_image_matches_reference(vsession_f32, vref32, size):
    check_encoder(vsession_f32, vref32, size, F32_REL_TOL, "F32")  # see F32_REL_TOL


@pytest.mark.parametrize("size", F16_CASES, ids=case_id)
def test_f16_encode_image_matches_reference_on_f16_weights(vsession_f16, vref16, size):
    check_encoder(vsession_f16, vref16, size, F16_REL_TOL, "F16")  # see F16_REL_TOL


def test_f32_single_slice_mode(vsession_f32, vref32):
    """max_slice_nums=1 (streaming / duplex): one 64-row block for a large image."""
    img = smooth_noise_image(1920, 1080)
    *_, r_emb = reference_outputs(vref32, img, max_slice_nums=1)
    emb = vsession_f32.encode_image(img, max_slice_nums=1)
    assert emb.shape == (64, vref32.embed_dim)
    assert rel(emb, r_emb) < F32_REL_TOL


def test_image_forms_give_identical_embeddings(vsession_f32, tmp_path):
    """PIL image, uint8 array and PNG file path of the same pixels: the same encoder input."""
    img = smooth_noise_image(640, 480)
    path = tmp_path / "img.png"
    Image.fromarray(img).save(path)  # PNG is lossless
    a = vsession_f32.encode_image(img)
    assert np.array_equal(vsession_f32.encode_image(Image.fromarray(img)), a)
    assert np.array_equal(vsession_f32.encode_image(str(path)), a)
    assert a.shape == (3 * 64, a.shape[1])  # default max_slice_nums = 9: 640x480 -> 2x1 grid


# ------------------------------------------------------------------------------------------------
# prompt layout
# ------------------------------------------------------------------------------------------------

def test_placeholder_layout_tokenizes_to_one_unk_run_per_block(vsession_f32):
    """The reference layout (spec §1.3) for a 2x2 grid: 5 runs of 64 <unk> in the literal
    `<image_id>0</image_id><image>..</image><slice>..</slice><slice>..</slice>\\n<slice>..` form."""
    text = image_placeholder_text((2, 2), 0, True)
    unk = "<unk>" * 64
    row = f"<slice>{unk}</slice>" * 2
    assert text == f"<image_id>0</image_id><image>{unk}</image>{row}\n{row}"
    assert image_placeholder_text(None, 3, False) == f"<image>{unk}</image>"
    ids = vsession_f32.tokenize(text, parse_special=True)
    runs, cur = [], 0
    for t in ids + [-1]:
        if t == UNK_ID:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    assert runs == [64] * 5
