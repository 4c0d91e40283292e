"""Image-encoding speed of minicpmo-cpp versus upstream llama.cpp's libmtmd (MiniCPM-o 4.5), same
weights, same threads.

Builds libmtmd from the llama.cpp tree this package was built against (ccache-cached, the same build
tree and flags as bench/llm.py) plus bench/mtmd_vision_bench.cpp; makes a random-weight checkpoint
with the real vision shape (SigLIP 1152 wide, FFN 4304, 16 heads, 27 layers with the last dropped,
resampler into 4096 with 32 heads and 64 queries) and a 1-layer 4096-wide LLM, converts it with our
converter and writes the same weights as upstream's mmproj (minicpmo_cpp.convert.mtmd_mmproj). Then encodes a
448x448 image (1 slice, 64 tokens) and a 1344x1344 image (source + 3x3 slices, 640 tokens) with
both, each side in its own process, rounds alternating. Timed: uint8 RGB in memory -> embeddings
(ours: OmniSession.encode_image; upstream: mtmd_tokenize, its preprocessing, + mtmd_encode_chunk
per image chunk). Also reports peak RSS and the per-token cosine similarity of the two outputs.
Prints one JSON document on stdout; progress goes to stderr.

    python bench/vision.py [--threads N] [--reps 5] [--reps-large 3] [--types F16,Q8_0] [--work DIR]
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
from bench_common import LineWorker, cache_dir, cpu_kernels, proc_status_kib, upstream_build_dir

BENCH_DIR = Path(__file__).resolve().parent

# the real MiniCPM-o 4.5 vision tower: 27 layers configured, drop_vision_last_layer -> 26 stored and run
VISION_REAL = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27,
                   resampler_num_heads=32)
# the LLM only has to exist: 4096 wide (the resampler's output width) with 1 layer and a small FFN
LLM_4096 = dict(hidden_size=4096, num_hidden_layers=1, num_attention_heads=32, num_key_value_heads=8,
                head_dim=128, intermediate_size=256)
IMAGES = {"448x448": (448, 448, 64), "1344x1344": (1344, 1344, 640)}  # name -> (w, h, tokens)
MAX_SLICE_NUMS = 9  # what mtmd hard-codes for MiniCPM-V slicing
SEED = 0


def log(msg: str) -> None:
    print(f"[bench/vision] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# upstream build
# ---------------------------------------------------------------------------------------------
def build_upstream(build_info) -> Path:
    """libmtmd from the same llama.cpp tree and ggml CPU settings as our build, then the driver."""
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
    return exe


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
# the two sides: long-lived worker processes speaking one JSON line per command
# ---------------------------------------------------------------------------------------------
class Worker(LineWorker):
    """A process that answers `encode RGB W H [EMBD_OUT]` lines with JSON lines (see
    mtmd_vision_bench.cpp)."""

    def __init__(self, name: str, argv: list[str], log_path: Path):
        super().__init__(name, argv, log_path, "quit")

    def encode(self, rgb: Path, w: int, h: int, embd_out: Path | None = None) -> dict:
        return self.request(f"encode {rgb} {w} {h}{' ' + str(embd_out) if embd_out else ''}")


def ours_worker(model: str, threads: int) -> int:
    """The minicpmo-cpp side, run as `vision.py --worker-ours MODEL` in its own process."""
    rss_start = proc_status_kib("VmRSS")
    from minicpmo_cpp import OmniSession, _testing

    t0 = time.perf_counter()
    try:
        session = OmniSession(model, n_threads=threads, n_gpu_layers=0, n_ctx=512)
        if not hasattr(session, "encode_image"):
            raise RuntimeError("the installed minicpmo_cpp has no OmniSession.encode_image")
    except Exception as e:  # reported to the parent as a protocol error, not a traceback
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps({"ready": True, "load_ms": (time.perf_counter() - t0) * 1e3, "n_threads": threads,
                      "rss_start_kib": rss_start, "rss_after_load_kib": proc_status_kib("VmRSS"),
                      "system_info": _testing.system_info().strip()}), flush=True)
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
            emb = session.encode_image(img, max_slice_nums=MAX_SLICE_NUMS)
            ms = (time.perf_counter() - t0) * 1e3
            if len(parts) == 5:
                np.ascontiguousarray(emb, dtype=np.float32).tofile(parts[4])
            print(json.dumps({"total_ms": ms, "n_tokens": int(emb.shape[0]), "n_embd": int(emb.shape[1]),
                              "peak_rss_kib": proc_status_kib("VmHWM"), "rss_kib": proc_status_kib("VmRSS"),
                              "rss_anon_kib": proc_status_kib("RssAnon"), "rss_file_kib": proc_status_kib("RssFile")}),
                  flush=True)
        except Exception as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
    return 0


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


def bench_one(label: str, llm: Path, omni: Path, mmproj: Path, exe: Path, image: str, rgb: Path, warm_rgb: Path,
              reps: int, threads: int, work: Path) -> tuple[dict, dict]:
    w, h, want_tokens = IMAGES[image]
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    # each side in its own process, fresh for every (type, image), so the peak RSS is this image's
    up = Worker("upstream", [str(exe), "--mmproj", str(mmproj), "--model", str(llm), "--threads", str(threads)],
                logs / f"upstream-{label}-{image}.log")
    try:
        ours = Worker("minicpmo_cpp", [sys.executable, str(Path(__file__).resolve()), "--worker-ours", str(llm),
                                       "--threads", str(threads)], logs / f"ours-{label}-{image}.log")
    except BaseException:
        up.close()
        raise
    try:
        log(f"{label} {image}: warm-up (one 448x448 encode each)")
        up.encode(warm_rgb, 448, 448)
        ours.encode(warm_rgb, 448, 448)
        up_runs, our_runs = [], []
        emb_up, emb_ours = work / f"emb-upstream-{label}-{image}.f32", work / f"emb-ours-{label}-{image}.f32"
        for i in range(reps):
            # alternate who goes first, so drifting load on a shared machine hits both alike
            first_up = i % 2 == 0
            dump = i == 0  # embeddings written once, after the timed region, for the cosine check
            for side in ((up, ours) if first_up else (ours, up)):
                if side is up:
                    up_runs.append(up.encode(rgb, w, h, emb_up if dump else None))
                else:
                    our_runs.append(ours.encode(rgb, w, h, emb_ours if dump else None))
            log(f"{label} {image}: round {i + 1}/{reps}: upstream {up_runs[-1]['total_ms']:.0f} ms, "
                f"ours {our_runs[-1]['total_ms']:.0f} ms")
    finally:
        up.close()
        ours.close()

    for name, runs in (("upstream", up_runs), ("minicpmo_cpp", our_runs)):
        got = {r["n_tokens"] for r in runs}
        if got != {want_tokens}:
            raise RuntimeError(f"{label} {image}: {name} produced {sorted(got)} tokens, expected {want_tokens}")
    n_embd = our_runs[0]["n_embd"]
    a = np.fromfile(emb_ours, dtype=np.float32).reshape(-1, n_embd)
    b = np.fromfile(emb_up, dtype=np.float32).reshape(-1, n_embd)

    def side_summary(runs: list[dict], ready: dict, extra: tuple[str, ...]) -> dict:
        s = {"ms": round(statistics.median(r["total_ms"] for r in runs), 1),
             "ms_runs": [round(r["total_ms"], 1) for r in runs]}
        for k in extra:
            s[k] = round(statistics.median(r[k] for r in runs), 1)
        s["peak_rss_mib"] = mib(max(r["peak_rss_kib"] for r in runs))
        s["rss_after_load_mib"] = mib(ready["rss_after_load_kib"])
        s["rss_before_load_mib"] = mib(ready["rss_start_kib"])  # ours: the Python interpreter + numpy
        # what encoding adds on top of the loaded model (compute buffers, slices, outputs)
        s["encode_growth_mib"] = round(s["peak_rss_mib"] - s["rss_after_load_mib"], 1)
        # after the last encode: heap (weights read into buffers, compute) versus mapped file pages
        # (an mmap-ed GGUF counts in RSS once its pages are touched or prefetched; the kernel can drop them)
        s["rss_anon_mib"] = mib(runs[-1]["rss_anon_kib"])
        s["rss_file_mib"] = mib(runs[-1]["rss_file_kib"])
        s["load_ms"] = round(ready["load_ms"], 1)
        return s

    ratios = [u["total_ms"] / o["total_ms"] for u, o in zip(up_runs, our_runs)]
    result = {
        "type": label, "image": image, "n_tokens": want_tokens,
        "minicpmo_cpp": side_summary(our_runs, ours.ready, ()),
        "upstream": side_summary(up_runs, up.ready, ("encode_ms", "preprocess_ms")),
        # upstream_ms / our_ms per round (>1: we are faster), median over the rounds: each round
        # ran both back to back, so this is the estimate least affected by load drift
        "ratio": round(statistics.median(ratios), 3),
        "ratio_runs": [round(r, 3) for r in ratios],
        "ratio_of_medians": round(statistics.median(r["total_ms"] for r in up_runs)
                                  / statistics.median(r["total_ms"] for r in our_runs), 3),
        "cosine_ours_vs_upstream": cosine_per_token(a, b),
        "files": {"llm": llm.name, "llm_size_mib": round(llm.stat().st_size / 2**20, 1),
                  "omni_size_mib": round(omni.stat().st_size / 2**20, 1),
                  "mmproj_size_mib": round(mmproj.stat().st_size / 2**20, 1)},
    }
    meta = {"upstream_hparams": upstream_hparams(up.log_path), "upstream_system_info": up.ready["system_info"],
            "minicpmo_cpp_system_info": ours.ready["system_info"]}
    return result, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--reps", type=int, default=5, help="alternating rounds for the 448x448 image")
    ap.add_argument("--reps-large", type=int, default=3, help="alternating rounds for the 1344x1344 image")
    ap.add_argument("--types", default="F16", help="omni/mmproj outtypes, comma separated: F16, Q8_0, F32")
    ap.add_argument("--images", default=",".join(IMAGES))
    ap.add_argument("--work", default=None, help="cache directory for models and images")
    ap.add_argument("--worker-ours", metavar="MODEL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads <= 0:
        ap.error("--threads must be positive")
    if args.worker_ours:
        sys.exit(ours_worker(args.worker_ours, args.threads))

    from minicpmo_cpp import build_info

    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    for t in types:
        if t not in ("F16", "Q8_0", "F32"):
            ap.error(f"unknown type {t}: choose from F16, Q8_0, F32")
    images = [i.strip() for i in args.images.split(",") if i.strip()]
    for i in images:
        if i not in IMAGES:
            ap.error(f"unknown image {i}: choose from {', '.join(IMAGES)}")
    work = Path(args.work) if args.work else cache_dir() / "bench-vision" / model_key()
    work.mkdir(parents=True, exist_ok=True)

    exe = build_upstream(build_info)
    models = make_models(work, types)
    rgbs = {name: make_image(work / f"image-{name}.rgb", w, h, seed=k + 1)
            for k, (name, (w, h, _)) in enumerate(IMAGES.items())}
    results, meta = [], {}
    for label in types:
        llm, omni, mmproj = models[label]
        for image in images:
            reps = args.reps if image == "448x448" else args.reps_large
            res, m = bench_one(label, llm, omni, mmproj, exe, image, rgbs[image], rgbs["448x448"], reps,
                                  args.threads, work)
            results.append(res)
            meta = meta or m  # upstream's hparams and system info, as read with the first type
            log(f"{label} {image}: ratio {res['ratio']} (upstream/ours), cosine median "
                f"{res['cosine_ours_vs_upstream']['median']}")
    print(json.dumps({
        "benchmark": "vision",
        "shape": "MiniCPM-o 4.5 vision (random weights): SigLIP 1152/4304/16 heads, 27 layers (26 run), "
                 "resampler 64 queries into 4096 with 32 heads",
        "timed": "uint8 RGB in memory -> image embeddings (preprocessing + ViT + resampler)",
        "threads": args.threads, "reps": args.reps, "reps_large": args.reps_large,
        **cpu_kernels(), "machine": platform.machine(), **meta,
        "work": str(work), "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
