"""numpy reference of the MiniCPM-o 4.5 vision path, written from MODEL_SPEC.md §1.1, §1.2, §1.3, §2.

Precision: the towers run in **float64** (weights up-cast once), so the reference is an oracle for
both float32 PyTorch and the ggml runtime. Resampling is delegated to Pillow 10.4.0 (``Image.resize``
with BICUBIC; the version the official stack pins, run by tests/pillow_official.py), which *is* the
reference implementation of the official preprocessor.

Pipeline for one image (prompt order = source image first, then the slices row by row):
    slicing     grid = get_sliced_grid(size); source = resize(find_best_resize(...));
                slices = crop(resize(get_refine_size(...))) into cols x rows cells
    pixels      x = (uint8 / 255 - mean) / std; patches[r*w + c] = x[:, 14r:14r+14, 14c:14c+14]
                flattened in (channel, ky, kx) order -> (L, 3*14*14)
    SigLIP      x = patches @ Wpatch^T + b + pos_embd[navit_id]; N pre-LN layers
                (x += Attn(LN1 x); x += FC2(gelu_tanh(FC1(LN2 x)))); post LayerNorm -> (L, D)
    resampler   kv = ln_kv(X Wkv^T); q = ln_q(query); keys get the 2-D sin-cos table; MHA;
                out_proj; ln_post; @ proj -> (64, E) per source image / slice

NaViT position ids: bucket(r) = floor(70 r / n), except the exact ties that torch's float32
arithmetic puts in the lower bucket; those are read from ``navit_bucket_exceptions.json`` (spec G6),
an independent table, so this file does not emulate torch floats.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# spec §1.2 / §2 constants that the official code hard-codes (not config keys)
RESAMPLER_LN_EPS = 1e-6
SINCOS_BASE = 10000.0
EXCEPTIONS_FILE = "navit_bucket_exceptions.json"
# where the spec's exception table may live: env override, a copy beside this file, the spec folder


def _exception_table_candidates() -> list[Path]:
    out = []
    env = os.environ.get("MINICPMO_NAVIT_EXCEPTIONS")
    if env:
        out.append(Path(env))
    out.append(Path(__file__).resolve().parent / EXCEPTIONS_FILE)
    return out


def load_bucket_exceptions(path: str | os.PathLike | None = None) -> dict[int, dict[int, int]]:
    """{n: {r: bucket}} from the spec's table (grid sides 1..1024, 70 buckets per side)."""
    paths = [Path(path)] if path is not None else _exception_table_candidates()
    for p in paths:
        if p.is_file():
            with open(p, encoding="utf-8") as f:
                raw = json.load(f)["exceptions"]
            return {int(n): {int(r): int(b) for r, b in pairs} for n, pairs in raw.items()}
    raise FileNotFoundError(f"{EXCEPTIONS_FILE} not found; looked in: " + ", ".join(map(str, paths)))


# ------------------------------------------------------------------------------------------------
# preprocessing (spec §1.2)
# ------------------------------------------------------------------------------------------------

def ensure_divide(length: float, patch_size: int) -> int:
    # Python round() rounds halves to even, like the official processor
    return max(round(length / patch_size) * patch_size, patch_size)


def find_best_resize(size, scale_resolution: int, patch_size: int, allow_upscale: bool) -> tuple[int, int]:
    w, h = size
    if w * h > scale_resolution * scale_resolution or allow_upscale:
        r = w / h
        h = int(scale_resolution / math.sqrt(r))  # int() truncates
        w = int(h * r)
    return ensure_divide(w, patch_size), ensure_divide(h, patch_size)


def get_refine_size(size, grid, scale_resolution: int, patch_size: int) -> tuple[int, int]:
    w, h = size
    gx, gy = grid
    rw, rh = ensure_divide(w, gx), ensure_divide(h, gy)  # divided by the grid count, not the patch
    bw, bh = find_best_resize((rw / gx, rh / gy), scale_resolution, patch_size, allow_upscale=True)
    return bw * gx, bh * gy


def get_sliced_grid(size, max_slice_nums: int, scale_resolution: int) -> tuple[int, int] | None:
    """(cols, rows) of the slice grid, or None when the image is not sliced."""
    w, h = size
    log_ratio = math.log(w / h)
    multiple = min(math.ceil(w * h / (scale_resolution * scale_resolution)), max_slice_nums)
    if multiple <= 1:
        return None
    best, best_err = None, float("inf")
    for n in (multiple - 1, multiple, multiple + 1):
        if n == 1 or n > max_slice_nums:
            continue
        for m in range(1, n + 1):
            if n % m:
                continue
            err = abs(log_ratio - math.log(m / (n // m)))
            if err < best_err:  # first strict minimum wins
                best, best_err = (m, n // m), err
    return best


def to_pil_rgb(image):
    """PIL.Image (any mode), uint8 (H, W, 3) array or file path -> RGB PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            return im.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image array must be uint8 (H, W, 3), got {a.dtype} {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"empty image {a.shape}")
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def slice_image(image, max_slice_nums: int = 9, scale_resolution: int = 448, patch_size: int = 14):
    """-> (grid or None, [uint8 (h, w, 3) arrays]): the source image, then the slices row by row."""
    from pillow_official import official_resize

    if int(max_slice_nums) != max_slice_nums or max_slice_nums < 1:
        raise ValueError(f"max_slice_nums must be a positive integer, got {max_slice_nums!r}")
    img = to_pil_rgb(image)
    size = img.size  # (w, h)
    grid = get_sliced_grid(size, int(max_slice_nums), scale_resolution)
    rgb = np.asarray(img)
    if grid is None:
        src, = official_resize([(rgb, find_best_resize(size, scale_resolution, patch_size, True))])
        return None, [src]
    src, refine = official_resize([(rgb, find_best_resize(size, scale_resolution, patch_size, False)),
                                   (rgb, get_refine_size(size, grid, scale_resolution, patch_size))])
    gx, gy = grid
    ch, cw = refine.shape[0] // gy, refine.shape[1] // gx
    cells = [refine[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] for r in range(gy) for c in range(gx)]
    return grid, [src] + [np.ascontiguousarray(c) for c in cells]


def extract_patches(rgb: np.ndarray, patch_size: int = 14, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """uint8 (H, W, 3) -> (patches (h*w, 3*P*P) float64 in (c, ky, kx) order, row-major, h, w)."""
    H, W, C = rgb.shape
    P = patch_size
    if H % P or W % P:
        raise ValueError(f"image {W}x{H} is not a multiple of the patch size {P}")
    x = (rgb.astype(np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)  # (H, W, C)
    h, w = H // P, W // P
    x = x.reshape(h, P, w, P, C).transpose(0, 2, 4, 1, 3)  # (h, w, C, ky, kx)
    return x.reshape(h * w, C * P * P), h, w


@dataclass
class VisionSlice:
    rgb: np.ndarray  # uint8 (H, W, 3), resized pixels before normalisation
    h: int  # patch rows (tgt_size[0])
    w: int  # patch cols (tgt_size[1])
    patches: np.ndarray  # (h*w, 3*P*P) float64


def preprocess(image, max_slice_nums: int = 9, scale_resolution: int = 448, patch_size: int = 14,
               mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """-> (grid or None, [VisionSlice]) in prompt order (source, then slices row by row)."""
    grid, images = slice_image(image, max_slice_nums, scale_resolution, patch_size)
    slices = []
    for rgb in images:
        p, h, w = extract_patches(rgb, patch_size, mean, std)
        slices.append(VisionSlice(rgb, h, w, p))
    return grid, slices


# ------------------------------------------------------------------------------------------------
# position ids and tables
# ------------------------------------------------------------------------------------------------

def navit_buckets(n: int, side: int = 70, exceptions: dict | None = None) -> np.ndarray:
    """bucket(r) for r in 0..n-1: floor(side*r/n) corrected by the spec's exception table."""
    if side != 70:
        raise ValueError(f"the exception table is for 70 buckets per side, got {side}")
    if exceptions is None:
        exceptions = load_bucket_exceptions()
    if not 1 <= n <= 1024:
        raise ValueError(f"grid side {n} outside the exception table's range 1..1024")
    b = (side * np.arange(n)) // n
    for r, bucket in exceptions.get(n, {}).items():
        b[r] = bucket
    return b


def navit_position_ids(h: int, w: int, side: int = 70, exceptions: dict | None = None) -> np.ndarray:
    """Position-embedding row of each patch of an (h, w) grid, row-major: bh[r]*side + bw[c]."""
    if exceptions is None:
        exceptions = load_bucket_exceptions()
    bh = navit_buckets(h, side, exceptions)
    bw = navit_buckets(w, side, exceptions)
    return (bh[:, None] * side + bw[None, :]).reshape(-1)


def sincos_2d(h: int, w: int, dim: int) -> np.ndarray:
    """(h*w, dim) row-major: [sin(c w_i), cos(c w_i), sin(r w_i), cos(r w_i)], w_i = 1e4^(-i/(dim/4)).

    Computed directly for any (h, w), which equals slicing the official 70x70 table grown as needed."""
    if dim % 4:
        raise ValueError(f"sin-cos table width {dim} is not a multiple of 4")
    q = dim // 4
    omega = 1.0 / SINCOS_BASE ** (np.arange(q, dtype=np.float64) / q)

    def one_axis(n):
        a = np.arange(n, dtype=np.float64)[:, None] * omega[None, :]
        return np.concatenate([np.sin(a), np.cos(a)], axis=1)  # (n, dim/2)

    col, row = one_axis(w), one_axis(h)
    pe = np.concatenate([np.broadcast_to(col[None, :, :], (h, w, dim // 2)),
                         np.broadcast_to(row[:, None, :], (h, w, dim // 2))], axis=2)
    return pe.reshape(h * w, dim)


# ------------------------------------------------------------------------------------------------
# towers
# ------------------------------------------------------------------------------------------------

def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    e /= e.sum(-1, keepdims=True)
    return e


def multi_head_attention(q, k, v, n_heads):
    """q (Lq, D), k/v (Lk, D) already projected -> (Lq, D); bidirectional, scale head_dim^-0.5."""
    lq, d = q.shape
    hd = d // n_heads
    qh = np.ascontiguousarray(q.reshape(lq, n_heads, hd).transpose(1, 0, 2))  # (H, Lq, hd)
    kh = np.ascontiguousarray(k.reshape(-1, n_heads, hd).transpose(1, 2, 0))  # (H, hd, Lk)
    vh = np.ascontiguousarray(v.reshape(-1, n_heads, hd).transpose(1, 0, 2))  # (H, Lk, hd)
    a = softmax((qh / math.sqrt(hd)) @ kh)
    return (a @ vh).transpose(1, 0, 2).reshape(lq, d)


def vision_layers_to_run(state_dict, config) -> int:
    """Spec G1: the configured depth minus the dropped last layer; the layers must be present."""
    vc = config["vision_config"]
    n = int(vc["num_hidden_layers"]) - (1 if config.get("drop_vision_last_layer", True) else 0)
    present = 0
    while f"vpm.encoder.layers.{present}.self_attn.q_proj.weight" in state_dict:
        present += 1
    if present < n:
        raise ValueError(f"checkpoint holds {present} vision layers, config asks to run {n}")
    return n


class VisionReference:
    """SigLIP NaViT tower + resampler of one checkpoint (weights up-cast to ``dtype`` once)."""

    def __init__(self, state_dict, config, dtype=np.float64):
        self.dtype = dtype
        vc = config["vision_config"]
        sc = config.get("slice_config") or {}
        self.eps = float(vc.get("layer_norm_eps", 1e-6))
        self.n_heads = int(vc["num_attention_heads"])
        self.patch_size = int(vc.get("patch_size", 14))
        self.side = int(vc.get("image_size", 980)) // self.patch_size
        self.scale_resolution = int(sc.get("scale_resolution", 448))
        self.use_image_id = bool(config.get("use_image_id", True))
        hidden = int(config["hidden_size"])
        self.r_heads = int(config.get("resampler_num_heads") or hidden // 128)
        if vc.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
            raise ValueError(f"unsupported vision hidden_act {vc.get('hidden_act')!r}")
        self.n_layers = vision_layers_to_run(state_dict, config)
        self.exceptions = load_bucket_exceptions()

        def W(name):
            return np.asarray(state_dict[name]).astype(dtype)

        pw = W("vpm.embeddings.patch_embedding.weight")
        self.patch_w = pw.reshape(pw.shape[0], -1)  # (D, C*P*P), columns in (c, ky, kx) order
        self.patch_b = W("vpm.embeddings.patch_embedding.bias")
        self.pos = W("vpm.embeddings.position_embedding.weight")
        self.layers = []
        for i in range(self.n_layers):
            p = f"vpm.encoder.layers.{i}."
            self.layers.append({k: W(p + n) for k, n in [
                ("ln1_w", "layer_norm1.weight"), ("ln1_b", "layer_norm1.bias"),
                ("ln2_w", "layer_norm2.weight"), ("ln2_b", "layer_norm2.bias"),
                ("wq", "self_attn.q_proj.weight"), ("bq", "self_attn.q_proj.bias"),
                ("wk", "self_attn.k_proj.weight"), ("bk", "self_attn.k_proj.bias"),
                ("wv", "self_attn.v_proj.weight"), ("bv", "self_attn.v_proj.bias"),
                ("wo", "self_attn.out_proj.weight"), ("bo", "self_attn.out_proj.bias"),
                ("w1", "mlp.fc1.weight"), ("b1", "mlp.fc1.bias"),
                ("w2", "mlp.fc2.weight"), ("b2", "mlp.fc2.bias")]})
        self.post_w, self.post_b = W("vpm.post_layernorm.weight"), W("vpm.post_layernorm.bias")

        r = "resampler."
        self.query = W(r + "query")
        self.kv_proj = W(r + "kv_proj.weight")
        e = self.query.shape[1]
        in_w, in_b = W(r + "attn.in_proj_weight"), W(r + "attn.in_proj_bias")
        self.r_wq, self.r_wk, self.r_wv = in_w[:e], in_w[e:2 * e], in_w[2 * e:]
        self.r_bq, self.r_bk, self.r_bv = in_b[:e], in_b[e:2 * e], in_b[2 * e:]
        self.r_wo, self.r_bo = W(r + "attn.out_proj.weight"), W(r + "attn.out_proj.bias")
        self.ln = {n: (W(f"{r}{n}.weight"), W(f"{r}{n}.bias")) for n in ("ln_q", "ln_kv", "ln_post")}
        self.proj = W(r + "proj")  # used as x @ proj
        self.embed_dim = e

    # -- towers ---------------------------------------------------------------------------------

    def vit(self, patches, h, w):
        """(h*w, C*P*P) patches -> (h*w, D) post-LayerNorm features."""
        ids = navit_position_ids(h, w, self.side, self.exceptions)
        x = np.asarray(patches, self.dtype) @ self.patch_w.T + self.patch_b + self.pos[ids]
        for L in self.layers:
            a = layer_norm(x, L["ln1_w"], L["ln1_b"], self.eps)
            att = multi_head_attention(a @ L["wq"].T + L["bq"], a @ L["wk"].T + L["bk"],
                                       a @ L["wv"].T + L["bv"], self.n_heads)
            x = x + att @ L["wo"].T + L["bo"]
            m = layer_norm(x, L["ln2_w"], L["ln2_b"], self.eps)
            x = x + gelu_tanh(m @ L["w1"].T + L["b1"]) @ L["w2"].T + L["b2"]
        return layer_norm(x, self.post_w, self.post_b, self.eps)

    def resample(self, feats, h, w):
        """(h*w, D) ViT features -> (n_query, E) LLM embeddings."""
        kv = layer_norm(np.asarray(feats, self.dtype) @ self.kv_proj.T, *self.ln["ln_kv"], RESAMPLER_LN_EPS)
        q = layer_norm(self.query, *self.ln["ln_q"], RESAMPLER_LN_EPS)
        pe = sincos_2d(h, w, self.embed_dim).astype(self.dtype)  # positions on the keys only
        o = multi_head_attention(q @ self.r_wq.T + self.r_bq, (kv + pe) @ self.r_wk.T + self.r_bk,
                                 kv @ self.r_wv.T + self.r_bv, self.r_heads)
        o = o @ self.r_wo.T + self.r_bo
        return layer_norm(o, *self.ln["ln_post"], RESAMPLER_LN_EPS) @ self.proj

    # -- whole images ---------------------------------------------------------------------------

    def preprocess(self, image, max_slice_nums: int = 9):
        return preprocess(image, max_slice_nums, self.scale_resolution, self.patch_size)

    def vision_features(self, image, max_slice_nums: int = 9):
        """[(L, D)] post-LN ViT output per slice, source first."""
        _, slices = self.preprocess(image, max_slice_nums)
        return [self.vit(s.patches, s.h, s.w) for s in slices]

    def encode_image(self, image, max_slice_nums: int = 9):
        """(n_query * n_slices, E) resampler output in prompt order."""
        _, slices = self.preprocess(image, max_slice_nums)
        return np.concatenate([self.resample(self.vit(s.patches, s.h, s.w), s.h, s.w) for s in slices])


def vision_features(state_dict, config, image, max_slice_nums: int = 9):
    return VisionReference(state_dict, config).vision_features(image, max_slice_nums)


def encode_image(state_dict, config, image, max_slice_nums: int = 9):
    return VisionReference(state_dict, config).encode_image(image, max_slice_nums)


# ------------------------------------------------------------------------------------------------
# prompt layout (spec §1.3)
# ------------------------------------------------------------------------------------------------

def image_placeholder_text(grid, image_index: int = 0, use_image_id: bool = True, n_query: int = 64) -> str:
    """``[<image_id>k</image_id>]<image><unk>*n</image>`` then the slice rows joined by "\\n"."""
    unk = "<unk>" * n_query
    text = f"<image_id>{image_index}</image_id>" if use_image_id else ""
    text += f"<image>{unk}</image>"
    if grid is not None:
        cols, rows = grid
        text += "\n".join("".join(f"<slice>{unk}</slice>" for _ in range(cols)) for _ in range(rows))
    return text
