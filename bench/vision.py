"""Image-encoding speed of minicpmo-cpp (compute_type f32, bf16, int8) versus upstream llama.cpp's libmtmd
(MiniCPM-o 4.5) and PyTorch (F32, and BF16 under torch.autocast), same weights, same threads.

Builds libmtmd from the llama.cpp tree this package was built against (ccache-cached, the same build
tree and flags as bench/llm.py) plus bench/mtmd_vision_bench.cpp; makes a random-weight checkpoint
with the real vision shape (SigLIP 1152 wide, FFN 4304, 16 heads, 27 layers with the last dropped,
resampler into 4096 with 32 heads and 64 queries) and a 1-layer 4096-wide LLM, converts it with our
converter and writes the same weights as upstream's mmproj (minicpmo_cpp.convert.mtmd_mmproj). Then encodes a
448x448 image (1 slice, 64 tokens) and a 1344x1344 image (source + 3x3 slices, 640 tokens) with
every side, each in its own process, fresh per (type, image), the sides' order rotating from round
to round (bench_common.round_order). Sides:
  * minicpmo_cpp_f32 / _bf16 / _int8: OmniSession(compute_type="f32" / "bf16" / "int8").encode_image
    (always passed explicitly: "auto" follows the CPU); bf16 = the towers' matrix products through
    oneDNN in BF16, int8 = as 8-bit integer products through oneDNN (ours only: no torch or upstream
    side runs int8; its ratios are against torch_f32 and minicpmo_cpp_f32);
  * upstream: mtmd_tokenize, its preprocessing, + mtmd_encode_chunk per image chunk (F32 compute);
  * torch_f32 / torch_bf16: the official architecture in PyTorch on the checkpoint's weights read as
    float32 -- transformers' Idefics2VisionTransformer (the same NaViT SigLIP tower) and the
    nn.MultiheadAttention resampler of tests/test_vision_reference_vs_torch.py (the test suite's
    torch references), all slices of an image in one batch as the official code runs them;
    torch_bf16 runs the same forward under torch.autocast("cpu", dtype=torch.bfloat16). Slicing and
    normalisation come from our C++ preprocessing (_testing.preprocess_image), inside the timed
    region like the other sides'; forward_ms is the towers alone.
Timed: uint8 RGB in memory -> embeddings. Also reports peak RSS, each side's per-token cosine
similarity to a reference side (torch_f32 where it ran, else upstream, else minicpmo_cpp_f32), and
each side's sustained GFLOP/s (FLOPs from the slices' patch grids, vision_flops) as a fraction of
the machine's F32 FMA peak measured in the same run (bench_common.f32_fma_peak).
Prints one JSON document on stdout; progress goes to stderr.

    python bench/vision.py [--threads N] [--reps 5] [--reps-large 3] [--types F16,Q8_0] [--compute f32,bf16,int8]
                           [--images 448x448,1344x1344] [--no-upstream] [--no-torch]
                           [--torch-attn sdpa|eager] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import (TORCH_COMPUTE_TYPES, LineWorker, cache_dir, cpu_kernels, cpu_name, f32_fma_peak,
                          paired_ratio, parse_compute, proc_status_kib, ratio_pairs, require_onednn_build,
                          round_order, throughput, torch_precision, upstream_build_dir)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

# the real MiniCPM-o 4.5 vision tower: 27 layers configured, drop_vision_last_layer -> 26 stored and run
VISION_REAL = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27,
                   resampler_num_heads=32)
# the LLM only has to exist: 4096 wide (the resampler's output width) with 1 layer and a small FFN
LLM_4096 = dict(hidden_size=4096, num_hidden_layers=1, num_attention_heads=32, num_key_value_heads=8,
                head_dim=128, intermediate_size=256)
IMAGES = {"448x448": (448, 448, 64), "1344x1344": (1344, 1344, 640)}  # name -> (w, h, tokens)
MAX_SLICE_NUMS = 9  # what mtmd hard-codes for MiniCPM-V slicing
PATCH = 14
SEED = 0


def log(msg: str) -> None:
    print(f"[bench/vision] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# upstream build
# ---------------------------------------------------------------------------------------------
def build_upstream(build_info) -> list[str]:
    """libmtmd from the same llama.cpp tree and ggml CPU settings as our build, then the driver.
    -> the driver's command line up to its model arguments (with where it loads ggml's CPU modules
    from, in a GGML_BACKEND_DL build: the build's library folder)."""
    src = Path(build_info.LLAMA_CPP_DIR)
    # same directory and flags as bench/llm.py's llama-bench build: the two share one build tree
    build = upstream_build_dir(build_info)
    cmd = ["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
           *[f"-D{opt}" for opt in build_info.GGML_CPU_OPTIONS], "-DBUILD_SHARED_LIBS=ON",
           "-DLLAMA_BUILD_COMMON=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
           "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
           "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_UI=OFF"]
    if shutil.which("ccache"):
        cmd += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    log(f"building libmtmd from {src} into {build} (first time: several minutes on 2 cores)")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    # ninja's [k/n] lines go to stderr as progress
    subprocess.run(["cmake", "--build", str(build), "--target", "mtmd", "-j", str(os.cpu_count() or 2)],
                   check=True, stdout=sys.stderr)
    lib_dir = build / "bin"
    exe = cache_dir() / "bench-vision" / "bin" / "mtmd_vision_bench"
    driver = BENCH_DIR / "mtmd_vision_bench.cpp"
    libs = sorted(lib_dir.glob("lib*.so"))
    newest_input = max(p.stat().st_mtime for p in [driver, *libs])
    if not exe.exists() or exe.stat().st_mtime < newest_input:
        exe.parent.mkdir(parents=True, exist_ok=True)
        log(f"compiling {driver.name}")
        cxx = os.environ.get("CXX", "g++")
        subprocess.run([cxx, "-O2", "-std=c++17", str(driver), "-o", str(exe), "-DLLAMA_SHARED",
                        f"-I{src / 'include'}", f"-I{src / 'ggml' / 'include'}", f"-I{src / 'tools' / 'mtmd'}",
                        f"-L{lib_dir}", "-lmtmd", "-lllama", "-lggml", "-lggml-base",
                        f"-Wl,-rpath,{lib_dir}"], check=True)
    return [str(exe), "--backend-dir", str(lib_dir)]


# ---------------------------------------------------------------------------------------------
# models and images (cached in the work directory, keyed by their parameters)
# ---------------------------------------------------------------------------------------------
def model_key() -> str:
    params = json.dumps({"vision": VISION_REAL, "llm": LLM_4096, "seed": SEED, "dtype": "float16"}, sort_keys=True)
    return hashlib.sha1(params.encode()).hexdigest()[:10]


def make_models(work: Path, types: list[str]) -> dict[str, tuple[Path, Path, Path]]:
    """outtype label -> (our LLM GGUF, its omni companion, upstream's mmproj), generated once."""
    from minicpmo_cpp.convert import convert_checkpoint
    from minicpmo_cpp.convert.make_tiny import make_tiny_checkpoint

    from minicpmo_cpp.convert.mtmd_mmproj import write_mmproj

    hf = work / "hf"
    done = hf / ".complete"  # written last: an interrupted generation is redone
    if not done.exists():
        log("writing a random-weight checkpoint with the real vision shape (about 3.5 GB, a few minutes)")
        make_tiny_checkpoint(hf, seed=SEED, dtype="float16", llm_dims=LLM_4096, vision_dims=VISION_REAL,
                             components=("vision",))
        done.write_text(model_key())
    models = {}
    for label in types:
        outtype = label.lower()
        gguf_dir = work / f"gguf-{label}"
        llm = gguf_dir / f"MiniCPM-o-4_5-{label}.gguf"
        omni = gguf_dir / f"MiniCPM-o-4_5-omni-{label}.gguf"
        if not (llm.exists() and omni.exists() and "vision" in companion_components(omni)):
            log(f"converting to GGUF {label} (ours: LLM + omni companion)")
            convert_checkpoint(hf, gguf_dir, outtype=outtype, quiet=True)
        mmproj = work / f"mmproj-{label}.gguf"
        if not mmproj.exists():
            log(f"writing upstream's mmproj {label}")
            write_mmproj(hf, mmproj, outtype)
        models[label] = (llm, omni, mmproj)
    return models


def companion_components(omni: Path) -> list[str]:
    """minicpmo.components of a companion file; one converted before the converter wrote the vision
    tower lacks "vision" and is converted again."""
    from gguf import GGUFReader

    field = GGUFReader(omni).get_field("minicpmo.components")
    return [] if field is None else [str(v) for v in field.contents()]


def make_image(path: Path, w: int, h: int, seed: int) -> Path:
    """A smooth random picture (coarse noise upscaled with bicubic), raw RGB bytes: textured like a
    photo rather than white noise, so small preprocessing differences stay small."""
    if not path.exists():
        from PIL import Image

        rng = np.random.default_rng(seed)
        coarse = rng.integers(0, 256, size=(max(1, h // 32), max(1, w // 32), 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        np.asarray(img, dtype=np.uint8).tofile(path)
    return path


# ---------------------------------------------------------------------------------------------
# the sides: long-lived worker processes answering one JSON line per command
# ---------------------------------------------------------------------------------------------
class Worker(LineWorker):
    """A process that answers `encode RGB W H [EMBD_OUT]` lines with JSON lines (see
    mtmd_vision_bench.cpp; the Python workers below speak the same protocol)."""

    def __init__(self, name: str, argv: list[str], log_path: Path):
        super().__init__(name, argv, log_path, "quit")

    def encode(self, rgb: Path, w: int, h: int, embd_out: Path | None = None) -> dict:
        return self.request(f"encode {rgb} {w} {h}{' ' + str(embd_out) if embd_out else ''}")


def memory_fields() -> dict:
    return {"peak_rss_kib": proc_status_kib("VmHWM"), "rss_kib": proc_status_kib("VmRSS"),
            "rss_anon_kib": proc_status_kib("RssAnon"), "rss_file_kib": proc_status_kib("RssFile")}


def serve(encode) -> int:
    """The worker loop: `encode RGB_FILE W H [EMBD_OUT]` -> encode(img) = (embeddings, extra reply
    fields), timed here as total_ms; embeddings written after the timed region when asked for."""
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        try:
            if parts[0] != "encode" or len(parts) not in (4, 5):
                raise ValueError("usage: encode RGB_FILE WIDTH HEIGHT [EMBD_OUT]")
            w, h = int(parts[2]), int(parts[3])
            rgb = np.fromfile(parts[1], dtype=np.uint8)
            if rgb.size != w * h * 3:
                raise ValueError(f"{parts[1]} holds {rgb.size} bytes, expected {w}x{h}x3")
            img = rgb.reshape(h, w, 3)
            t0 = time.perf_counter()
            emb, extra = encode(img)
            ms = (time.perf_counter() - t0) * 1e3
            if len(parts) == 5:
                np.ascontiguousarray(emb, dtype=np.float32).tofile(parts[4])
            print(json.dumps({"total_ms": ms, **extra, "n_tokens": int(emb.shape[0]), "n_embd": int(emb.shape[1]),
                              **memory_fields()}), flush=True)
        except Exception as e:  # reported to the parent as a protocol error, not a traceback
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
    return 0


def ours_worker(model: str, threads: int, compute: str) -> int:
    """The minicpmo-cpp side, run as `vision.py --worker-ours MODEL --compute C` in its own process."""
    rss_start = proc_status_kib("VmRSS")
    from minicpmo_cpp import OmniSession, _testing

    t0 = time.perf_counter()
    try:
        session = OmniSession(model, n_threads=threads, n_gpu_layers=0, n_ctx=512, compute_type=compute)
        if not hasattr(session, "encode_image"):
            raise RuntimeError("the installed minicpmo_cpp has no OmniSession.encode_image")
    except Exception as e:  # reported to the parent as a protocol error, not a traceback
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps({"ready": True, "load_ms": (time.perf_counter() - t0) * 1e3, "n_threads": threads,
                      "compute_type": compute, "rss_start_kib": rss_start,
                      "rss_after_load_kib": proc_status_kib("VmRSS"),
                      "system_info": _testing.system_info().strip()}), flush=True)
    return serve(lambda img: (session.encode_image(img, max_slice_nums=MAX_SLICE_NUMS), {}))


class TorchVision:
    """MiniCPM-o's vision path in PyTorch on the checkpoint's weights (read as float32): transformers'
    Idefics2VisionTransformer (NaViT SigLIP: Conv2d patch embedding, bucketized position ids from the
    patch_attention_mask, pre-LN layers, tanh GELU, post LayerNorm) with the configured depth less
    the dropped last layer, then the test suite's torch resampler (nn.MultiheadAttention, official
    2-D sin-cos table). All slices of an image run as one batch (padded, with a patch mask, where
    their grids differ), as the official code batches them. compute "bf16": the same forward under
    torch.autocast("cpu", dtype=torch.bfloat16)."""

    def __init__(self, hf_dir: str, threads: int, compute: str, attn: str):
        import functools

        import torch
        from safetensors.torch import load_file
        from transformers import Idefics2VisionConfig
        from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

        sys.path.insert(0, str(REPO / "tests"))
        import test_vision_reference_vs_torch as tv
        from reference.vision import vision_layers_to_run

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        self.torch, self.compute, self.pixel_tensor = torch, compute, tv.pixel_tensor
        # the official Resampler builds its sin-cos table once and keeps it (_set_2d_pos_cache); the
        # test module's builds it per call in numpy, which would be timed here: keep the one made
        tv.official_style_pos_table = functools.lru_cache(maxsize=4)(tv.official_style_pos_table)
        hf = Path(hf_dir)
        cfg = json.loads((hf / "config.json").read_text())
        state = {}
        for f in sorted(hf.glob("model*.safetensors")):
            for k, v in load_file(str(f)).items():
                if k.startswith(("vpm.", "resampler.")):
                    state[k] = v.float()
        n_layers = vision_layers_to_run(state, cfg)
        vc = cfg["vision_config"]
        tcfg = Idefics2VisionConfig(
            hidden_size=vc["hidden_size"], intermediate_size=vc["intermediate_size"], num_hidden_layers=n_layers,
            num_attention_heads=vc["num_attention_heads"], num_channels=vc.get("num_channels", 3),
            image_size=vc["image_size"], patch_size=vc["patch_size"], hidden_act=vc["hidden_act"],
            layer_norm_eps=vc["layer_norm_eps"])
        tcfg._attn_implementation = attn
        query = state["resampler.query"]
        heads = int(cfg.get("resampler_num_heads") or cfg["hidden_size"] // 128)
        with torch.device("meta"):  # no random init of 400 M parameters: the checkpoint's are assigned
            vit = Idefics2VisionTransformer(tcfg)
            res = tv.TorchResampler(query.shape[1], vc["hidden_size"], query.shape[0], heads)
        dropped = tuple(f"vpm.encoder.layers.{i}." for i in range(n_layers, n_layers + 8))
        vit.load_state_dict({k[len("vpm."):]: v for k, v in state.items()
                             if k.startswith("vpm.") and not k.startswith(dropped)}, strict=True, assign=True)
        res.load_state_dict({k[len("resampler."):]: v for k, v in state.items() if k.startswith("resampler.")},
                            strict=True, assign=True)
        for m in (vit, res):
            m.eval()
            left = [n for n, t in list(m.named_parameters()) + list(m.named_buffers()) if t.is_meta]
            if left:
                raise RuntimeError(f"torch modules left without weights: {left[:5]}")
        self.vit, self.res, self.embed_dim = vit, res, query.shape[1]
        import transformers

        self.info = {"torch": torch.__version__, "transformers": transformers.__version__, "compute_type": compute,
                     "autocast": "torch.autocast('cpu', dtype=torch.bfloat16)" if compute == "bf16" else None,
                     "attn_implementation": attn, "vision_layers_run": n_layers, "torch_threads": torch.get_num_threads(),
                     "torch_config": torch.__config__.parallel_info().splitlines()[:8]}

    def encode(self, img: np.ndarray) -> tuple[np.ndarray, dict]:
        from minicpmo_cpp import _testing

        torch = self.torch
        pre = _testing.preprocess_image(img, MAX_SLICE_NUMS)  # source first, then the slices row by row
        sizes = [tuple(int(v) for v in hw) for hw in pre["tgt_sizes"]]
        mh, mw = max(h for h, _ in sizes), max(w for _, w in sizes)
        pix = torch.zeros(len(sizes), 3, mh * PATCH, mw * PATCH)
        mask = torch.zeros(len(sizes), mh, mw, dtype=torch.bool)
        for b, (rgb, (h, w)) in enumerate(zip(pre["images"], sizes)):
            pix[b, :, :h * PATCH, :w * PATCH] = self.pixel_tensor(rgb)
            mask[b, :h, :w] = True
        t0 = time.perf_counter()
        with torch.inference_mode(), torch_precision(torch, self.compute):
            feats = self.vit(pixel_values=pix, patch_attention_mask=mask).last_hidden_state  # (B, mh*mw, D)
            if len(set(sizes)) > 1:  # each slice's valid patches first, row-major, as the resampler takes them
                packed = feats.new_zeros(len(sizes), max(h * w for h, w in sizes), feats.shape[-1])
                for b, (h, w) in enumerate(sizes):
                    packed[b, :h * w] = feats[b].reshape(mh, mw, -1)[:h, :w].reshape(h * w, -1)
                feats = packed
            out = self.res(feats, sizes)
        forward_ms = (time.perf_counter() - t0) * 1e3
        return out.float().reshape(-1, self.embed_dim).numpy(), {"forward_ms": forward_ms}


def torch_worker(hf_dir: str, threads: int, compute: str, attn: str) -> int:
    """The PyTorch side, run as `vision.py --worker-torch HF_DIR --compute C` in its own process."""
    rss_start = proc_status_kib("VmRSS")
    t0 = time.perf_counter()
    try:
        side = TorchVision(hf_dir, threads, compute, attn)
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps({"ready": True, "load_ms": (time.perf_counter() - t0) * 1e3, "n_threads": threads,
                      "rss_start_kib": rss_start, "rss_after_load_kib": proc_status_kib("VmRSS"), **side.info}),
          flush=True)
    return serve(side.encode)


# ---------------------------------------------------------------------------------------------
# FLOP model (multiply-add = 2 FLOPs)
# ---------------------------------------------------------------------------------------------
def vision_flops(sizes: list[tuple[int, int]]) -> float:
    """FLOPs of ViT + resampler over an image's slices, sizes = [(h, w)] patch grids. Per slice of
    N = h*w patches, with D = 1152 (ViT width), F = 4304 (FFN), L = 26 layers run, E = 4096
    (resampler width = LLM width), Q = 64 queries, C = 3*14*14 = 588 values per patch:
        patch embedding   2 N C D
        each ViT layer    2 N (4 D^2 + 2 D F)     q, k, v, out projections + FFN up and down
                        + 2 * 2 N^2 D             attention scores and weighted sum over all N keys
        resampler         2 N D E                 kv_proj
                        + 2 * 2 N E^2             the attention's key and value projections
                        + 2 * 2 Q E^2             its query and output projections
                        + 2 * 2 Q N E             scores and weighted sum
                        + 2 Q E^2                 the final proj
    Norms, GELU, softmax, position tables, preprocessing and padding (torch's batch pads unequal
    slices; the bench's images have equal ones) are not counted."""
    D, F_ = VISION_REAL["hidden_size"], VISION_REAL["intermediate_size"]
    L = VISION_REAL["num_hidden_layers"] - 1  # drop_vision_last_layer
    E, Q, C = LLM_4096["hidden_size"], 64, 3 * PATCH * PATCH
    total = 0
    for h, w in sizes:
        N = h * w
        vit = 2 * N * C * D + L * (2 * N * (4 * D * D + 2 * D * F_) + 2 * 2 * N * N * D)
        res = 2 * N * D * E + 2 * 2 * N * E * E + 2 * 2 * Q * E * E + 2 * 2 * Q * N * E + 2 * Q * E * E
        total += vit + res
    return float(total)


def slice_sizes(rgb: Path, w: int, h: int) -> list[tuple[int, int]]:
    """The patch grids of an image's source + slices, by our preprocessing (the same slicing rules as
    upstream's and the official processor's)."""
    from minicpmo_cpp import _testing

    img = np.fromfile(rgb, dtype=np.uint8).reshape(h, w, 3)
    return [tuple(int(v) for v in hw) for hw in _testing.preprocess_image(img, MAX_SLICE_NUMS)["tgt_sizes"]]


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
def cosine_per_token(a: np.ndarray, b: np.ndarray) -> dict:
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = num / np.maximum(den, 1e-30)
    rel = float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(b)), 1e-30)
    return {"min": round(float(cos.min()), 7), "median": round(float(np.median(cos)), 7),
            "mean": round(float(cos.mean()), 7), "rel_l2_diff": round(rel, 6)}


def upstream_hparams(log_path: Path) -> dict:
    """clip's `load_hparams: key: value` lines and its flash-attention choice, as it printed them."""
    out: dict[str, str] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        m = re.match(r"load_hparams:\s+([\w ]+?):\s+(.*)$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2).strip()
        if "flash attention is" in line:
            out["flash_attention"] = line.split("flash attention is", 1)[1].strip()
    return out


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def bench_one(label: str, llm: Path, omni: Path, mmproj: Path, exe: list[str] | None, hf: Path, image: str, rgb: Path,
              warm_rgb: Path, args, work: Path, peak: dict) -> tuple[dict, dict]:
    w, h, want_tokens = IMAGES[image]
    reps = args.reps if image == "448x448" else args.reps_large
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    me = str(Path(__file__).resolve())
    # each side in its own process, fresh for every (type, image), so the peak RSS is this image's
    argv: dict[str, list[str]] = {}
    if exe is not None:
        argv["upstream"] = [*exe, "--mmproj", str(mmproj), "--model", str(llm), "--threads", str(args.threads)]
    for c in args.compute:
        argv[f"minicpmo_cpp_{c}"] = [sys.executable, me, "--worker-ours", str(llm), "--threads", str(args.threads),
                                     "--compute", c]
    if not args.no_torch:
        for c in [c for c in args.compute if c in TORCH_COMPUTE_TYPES]:  # int8: ours only
            argv[f"torch_{c}"] = [sys.executable, me, "--worker-torch", str(hf), "--threads", str(args.threads),
                                  "--compute", c, "--torch-attn", args.torch_attn]
    sides: dict[str, Worker] = {}
    try:
        for name, cmd in argv.items():
            sides[name] = Worker(name, cmd, logs / f"{name}-{label}-{image}.log")
        names = list(sides)
        runs: dict[str, list[dict]] = {n: [] for n in names}
        emb = {n: work / f"emb-{n}-{label}-{image}.f32" for n in names}
        log(f"{label} {image}: warm-up (one 448x448 encode each)")
        for n in names:
            sides[n].encode(warm_rgb, 448, 448)
        for i in range(reps):
            # the order rotates from round to round, so drifting load on a shared machine hits all alike
            for n in round_order(names, i):
                # embeddings written once, after the timed region, for the agreement check
                runs[n].append(sides[n].encode(rgb, w, h, emb[n] if i == 0 else None))
            log(f"{label} {image}: round {i + 1}/{reps}: " + ", ".join(f"{n} {runs[n][-1]['total_ms']:.0f} ms"
                                                                        for n in names))
    finally:
        for wk in sides.values():
            wk.close()

    for n, rs in runs.items():
        got = {r["n_tokens"] for r in rs}
        if got != {want_tokens}:
            raise RuntimeError(f"{label} {image}: {n} produced {sorted(got)} tokens, expected {want_tokens}")
    n_embd = runs[names[0]][0]["n_embd"]
    sizes = slice_sizes(rgb, w, h)
    flop = vision_flops(sizes)

    def side_summary(n: str) -> dict:
        rs, ready = runs[n], sides[n].ready
        s = {"ms": round(statistics.median(r["total_ms"] for r in rs), 1),
             "ms_runs": [round(r["total_ms"], 1) for r in rs]}
        for k in ("encode_ms", "preprocess_ms", "forward_ms"):  # upstream's / torch's parts of total_ms
            if k in rs[0]:
                s[k] = round(statistics.median(r[k] for r in rs), 1)
        # sustained rate over the whole timed call (preprocessing included, a few % of it)
        s.update(throughput(flop, s["ms"], peak))
        part = s.get("forward_ms") or s.get("encode_ms")
        if part:  # the towers alone, where the side times them apart from its preprocessing
            s["towers_only"] = throughput(flop, part, peak)
        s["peak_rss_mib"] = mib(max(r["peak_rss_kib"] for r in rs))
        s["rss_after_load_mib"] = mib(ready["rss_after_load_kib"])
        s["rss_before_load_mib"] = mib(ready["rss_start_kib"])  # ours/torch: the Python interpreter + numpy
        # what encoding adds on top of the loaded model (compute buffers, slices, outputs)
        s["encode_growth_mib"] = round(s["peak_rss_mib"] - s["rss_after_load_mib"], 1)
        # after the last encode: heap (weights read into buffers, compute) versus mapped file pages
        # (an mmap-ed GGUF counts in RSS once its pages are touched or prefetched; the kernel can drop them)
        s["rss_anon_mib"] = mib(rs[-1]["rss_anon_kib"])
        s["rss_file_mib"] = mib(rs[-1]["rss_file_kib"])
        s["load_ms"] = round(ready["load_ms"], 1)
        return s

    ref = next(n for n in ("torch_f32", "upstream", "minicpmo_cpp_f32", names[0]) if n in names)
    b = np.fromfile(emb[ref], dtype=np.float32).reshape(-1, n_embd)
    result = {
        "type": label, "image": image, "n_tokens": want_tokens, "slices_patch_grids": [list(v) for v in sizes],
        "gflop": round(flop / 1e9, 1),
        **{n: side_summary(n) for n in names},
        # num_ms / den_ms per round (>1: den is faster), median over the rounds: each round ran all
        # sides back to back, so this is the estimate least affected by load drift
        "ratios": {f"{a}/{d}": paired_ratio([r["total_ms"] for r in runs[a]], [r["total_ms"] for r in runs[d]])
                   for a, d in ratio_pairs(names)},
        "agreement": {"reference": ref, **{n: cosine_per_token(np.fromfile(emb[n], dtype=np.float32)
                                                              .reshape(-1, n_embd), b)
                                           for n in names if n != ref}},
        "files": {"llm": llm.name, "llm_size_mib": round(llm.stat().st_size / 2**20, 1),
                  "omni_size_mib": round(omni.stat().st_size / 2**20, 1),
                  "mmproj_size_mib": round(mmproj.stat().st_size / 2**20, 1)},
    }
    meta = {f"{n}_system_info": sides[n].ready["system_info"] for n in names if "system_info" in sides[n].ready}
    if "upstream" in sides:
        meta["upstream_hparams"] = upstream_hparams(sides["upstream"].log_path)
    torch_side = next((n for n in names if n.startswith("torch_")), None)
    if torch_side:
        meta["torch_info"] = {k: v for k, v in sides[torch_side].ready.items()
                              if not k.endswith(("_kib", "_ms")) and k not in ("ready", "compute_type", "autocast")}
    return result, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--reps", type=int, default=5, help="rounds for the 448x448 image (0: leave it out)")
    ap.add_argument("--reps-large", type=int, default=3, help="rounds for the 1344x1344 image (0: leave it out)")
    ap.add_argument("--types", default="F16", help="omni/mmproj outtypes, comma separated: F16, Q8_0, F32")
    ap.add_argument("--compute", default="f32,bf16",
                    help="compute types of our side and of the torch side (bf16: torch.autocast), comma separated: "
                         "f32, bf16, int8 (int8: ours only)")
    ap.add_argument("--images", default=",".join(IMAGES))
    ap.add_argument("--no-upstream", action="store_true", help="leave out upstream libmtmd (and its build)")
    ap.add_argument("--no-torch", action="store_true", help="leave out the PyTorch sides")
    ap.add_argument("--torch-attn", default="sdpa", choices=("sdpa", "eager"),
                    help="transformers attention implementation of the torch ViT")
    ap.add_argument("--work", default=None, help="cache directory for models and images")
    ap.add_argument("--worker-ours", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--worker-torch", metavar="HF_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads <= 0:
        ap.error("--threads must be positive")
    try:
        args.compute = parse_compute(args.compute)
    except ValueError as e:
        ap.error(str(e))
    if args.worker_ours:
        sys.exit(ours_worker(args.worker_ours, args.threads, args.compute[0]))
    if args.worker_torch:
        sys.exit(torch_worker(args.worker_torch, args.threads, args.compute[0], args.torch_attn))

    from minicpmo_cpp import build_info

    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    for t in types:
        if t not in ("F16", "Q8_0", "F32"):
            ap.error(f"unknown type {t}: choose from F16, Q8_0, F32")
    images = [i.strip() for i in args.images.split(",") if i.strip()]
    for i in images:
        if i not in IMAGES:
            ap.error(f"unknown image {i}: choose from {', '.join(IMAGES)}")
    images = [i for i in images if (args.reps if i == "448x448" else args.reps_large) > 0]  # 0 rounds: left out
    if not images:
        ap.error("no image left to time: --reps / --reps-large are 0")
    require_onednn_build(args.compute)
    work = Path(args.work) if args.work else cache_dir() / "bench-vision" / model_key()
    work.mkdir(parents=True, exist_ok=True)

    exe = None if args.no_upstream else build_upstream(build_info)
    models = make_models(work, types)
    rgbs = {name: make_image(work / f"image-{name}.rgb", w, h, seed=k + 1)
            for k, (name, (w, h, _)) in enumerate(IMAGES.items())}
    peak = f32_fma_peak(args.threads)
    log(f"F32 FMA peak: {peak['derivation']}")
    results, meta = [], {}
    for label in types:
        llm, omni, mmproj = models[label]
        for image in images:
            res, m = bench_one(label, llm, omni, mmproj, exe, work / "hf", image, rgbs[image], rgbs["448x448"],
                               args, work, peak)
            results.append(res)
            meta = meta or m  # upstream's hparams and the system infos, as read with the first type
            log(f"{label} {image}: " + ", ".join(f"{k} {v['ratio']}" for k, v in res["ratios"].items()))
            log(f"{label} {image}: share of the F32 FMA peak: " + ", ".join(
                f"{n} {res[n]['share_of_f32_peak']:.0%}" for n in res if isinstance(res[n], dict)
                and "share_of_f32_peak" in res[n]))
    print(json.dumps({
        "benchmark": "vision",
        "shape": "MiniCPM-o 4.5 vision (random weights): SigLIP 1152/4304/16 heads, 27 layers (26 run), "
                 "resampler 64 queries into 4096 with 32 heads",
        "timed": "uint8 RGB in memory -> image embeddings (preprocessing + ViT + resampler)",
        "sides": {"minicpmo_cpp_<c>": "OmniSession(compute_type=<c>).encode_image (int8: ours only, no torch_int8)",
                  "upstream": "libmtmd: mtmd_tokenize + mtmd_encode_chunk (F32 compute)",
                  "torch_f32": "Idefics2VisionTransformer + nn.MultiheadAttention resampler, float32 weights",
                  "torch_bf16": "the same forward under torch.autocast('cpu', dtype=torch.bfloat16)"},
        "compute": args.compute,
        "ratio_meaning": "a/b: a_ms / b_ms, median of the per-round ratios (>1: b is faster)",
        "gflops_meaning": "gflop: FLOPs of one image (vision_flops: ViT + resampler over the slices' patch "
                          "grids, multiply-add = 2); <side>.gflops: gflop over the side's median ms; "
                          "share_of_f32_peak: that over f32_fma_peak.gflops (measured in this run); "
                          "towers_only: the same over torch's forward_ms / upstream's encode_ms",
        "flop_formula": "per slice of N patches: 2NCD + L(2N(4D^2 + 2DF) + 4N^2 D) + 2NDE + 4NE^2 + 4QE^2 + "
                        "4QNE + 2QE^2 with C=588, D=1152, F=4304, L=26, E=4096, Q=64",
        "f32_fma_peak": peak,
        "threads": args.threads, "reps": args.reps, "reps_large": args.reps_large, "cpu": cpu_name(),
        **cpu_kernels(), "machine": platform.machine(), **meta,
        "work": str(work), "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
