"""LLM speed of minicpmo-cpp versus llama.cpp's own llama-bench, same GGUF, same threads.

Builds llama-bench from the llama.cpp tree this package was built against (ccache-cached), makes a
random-weight Qwen3 of the Qwen3-0.6B shape through the normal HF -> converter path, quantizes it
to Q4_K_M with our quantizer, then measures prompt processing (pp512) and generation (tg128) tokens/s
of both. Prints one JSON document on stdout; progress goes to stderr.

    python bench/llm.py [--threads N] [--reps 3] [--work DIR] [--types F16,Q4_K_M]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from minicpmo_cpp import OmniSession, _testing, build_info
from minicpmo_cpp.convert import convert_checkpoint
from minicpmo_cpp.convert.make_tiny import make_tiny_checkpoint
from minicpmo_cpp.quantize import quantize_llm_file
from bench_common import cache_dir, cpu_kernels, upstream_build_dir

# Qwen3-0.6B's shape (28 layers, 1024 wide, GQA 16/8, head_dim 128, FFN 3072) with MiniCPM-o's vocab
QWEN3_06B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=128, intermediate_size=3072)
N_PROMPT, N_GEN = 512, 128


def log(msg: str) -> None:
    print(f"[bench/llm] {msg}", file=sys.stderr, flush=True)


def build_llama_bench() -> Path:
    """llama-bench from the same llama.cpp tree and the same ggml CPU settings as our build."""
    src = Path(build_info.LLAMA_CPP_DIR)
    build = upstream_build_dir(build_info)
    exe = build / "bin" / "llama-bench"
    cmd = ["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
           *[f"-D{opt}" for opt in build_info.GGML_CPU_OPTIONS], "-DBUILD_SHARED_LIBS=ON",
           "-DLLAMA_BUILD_COMMON=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
           "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
           "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_UI=OFF"]
    if subprocess.run(["which", "ccache"], capture_output=True).returncode == 0:
        cmd += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    log(f"building llama-bench from {src} (first time: a few minutes)")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-bench", "-j", str(os.cpu_count() or 2)],
                   check=True, stdout=subprocess.DEVNULL)
    return exe


def make_models(work: Path, types: list[str], threads: int) -> dict[str, Path]:
    gguf_dir = work / "gguf"
    f16 = gguf_dir / "MiniCPM-o-4_5-F16.gguf"
    if not f16.exists():
        log("writing a random-weight Qwen3-0.6B-shaped MiniCPM-o checkpoint")
        hf = make_tiny_checkpoint(work / "hf", seed=0, dtype="float16", llm_dims=QWEN3_06B)
        log("converting to GGUF F16")
        convert_checkpoint(hf, gguf_dir, outtype="f16", quiet=True)
    models = {}
    for t in types:
        path = gguf_dir / f"MiniCPM-o-4_5-{t}.gguf"
        if t != "F16" and not path.exists():
            log(f"quantizing to {t}")
            quantize_llm_file(str(f16), t, str(gguf_dir), threads)
        models[t] = path
    return models


def run_llama_bench(exe: Path, model: Path, threads: int, reps: int) -> dict[str, float]:
    # -fa 0: an LLM wholly on the CPU runs without the fused flash attention in this runtime
    # (llm/llm_context.cpp: it decodes ever slower as the cache grows), so llama-bench does the same work
    out = subprocess.run([str(exe), "-m", str(model), "-p", str(N_PROMPT), "-n", str(N_GEN), "-t", str(threads),
                          "-r", str(reps), "-ngl", "0", "-fa", "0", "-o", "json"], check=True, capture_output=True,
                         text=True)
    rows = json.loads(out.stdout)
    res = {}
    for r in rows:
        key = "pp" if r["n_prompt"] > 0 and r["n_gen"] == 0 else "tg"
        res[f"{key}_tps"] = float(r["avg_ts"])
        res[f"{key}_tps_std"] = float(r["stddev_ts"])
        res["cpu_info"] = r.get("cpu_info", "")
        res["backends"] = r.get("backends", "")
        res["flash_attn"] = r.get("flash_attn")
    return res


class Ours:
    """Same work as llama-bench: pp = one 512-token prompt from an empty cache; tg = 128 tokens
    generated one at a time from an empty cache (ours also samples greedily and detokenizes)."""

    def __init__(self, model: Path, threads: int):
        self.session = OmniSession(str(model), n_threads=threads, n_gpu_layers=0, n_ctx=N_PROMPT + N_GEN + 16,
                                   n_batch=N_PROMPT)
        self.prompt = np.random.default_rng(0).integers(0, 151643, size=N_PROMPT).tolist()
        _testing.hooks(self.session).prefill(self.prompt[:16])  # warm-up (llama-bench warms up too)

    def run(self, reps: int) -> dict[str, float]:
        return measure_ours(_testing.hooks(self.session), self.prompt, reps)


def measure_ours(native, prompt: list[int], reps: int) -> dict[str, float]:
    pp, tg = [], []
    for _ in range(reps):
        native.reset()
        t0 = time.perf_counter()
        native.prefill(prompt)
        pp.append(N_PROMPT / (time.perf_counter() - t0))

        native.reset()
        native.prefill(prompt[:1])
        native.begin_generation(False, 1.0, 1.0, 0, 1.0, 0, N_GEN - 1)
        t0 = time.perf_counter()
        while True:
            more, _ = native.step()
            if not more:
                break
        dt = time.perf_counter() - t0
        tg.append(max(1, len(native.last_generated)) / dt)
    return {"pp_tps": statistics.mean(pp), "pp_tps_std": statistics.pstdev(pp),
            "tg_tps": statistics.mean(tg), "tg_tps_std": statistics.pstdev(tg)}


def summarize(runs: list[dict]) -> dict:
    out = {k: v for k, v in runs[0].items() if not isinstance(v, float)}
    for key in ("pp_tps", "tg_tps"):
        values = [r[key] for r in runs]
        out[key] = statistics.median(values)
        out[key.replace("_tps", "_tps_runs")] = [round(v, 2) for v in values]
    return out


def paired_ratio(ours: list[dict], ref: list[dict], key: str) -> float:
    return round(statistics.median(o[key] / r[key] for o, r in zip(ours, ref)), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--reps", type=int, default=5, help="alternating rounds of both runtimes")
    ap.add_argument("--work", default=str(cache_dir() / "bench-llm"))
    ap.add_argument("--types", default="Q4_K_M,F16")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]

    exe = build_llama_bench()
    models = make_models(work, types, args.threads)
    results = []
    for t, path in models.items():
        # the two runtimes alternate one repetition at a time, so drifting machine load (a shared VM)
        # hits both alike; medians are reported
        ours_runner = Ours(path, args.threads)
        ref_runs, our_runs = [], []
        for i in range(args.reps):
            log(f"{t}: round {i + 1}/{args.reps}")
            ref_runs.append(run_llama_bench(exe, path, args.threads, 1))
            our_runs.append(ours_runner.run(1))
        del ours_runner
        ref, ours = summarize(ref_runs), summarize(our_runs)
        results.append({
            "model": path.name, "type": t, "size_mib": round(path.stat().st_size / 2**20, 1),
            "minicpmo_cpp": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in ours.items()},
            "llama_bench": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in ref.items()},
            # median of the per-round ratios: each round ran both runtimes back to back, so this
            # is the estimate least affected by load drifting over the run
            "ratio_pp": paired_ratio(our_runs, ref_runs, "pp_tps"),
            "ratio_tg": paired_ratio(our_runs, ref_runs, "tg_tps"),
            "ratio_of_medians_pp": round(ours["pp_tps"] / ref["pp_tps"], 3),
            "ratio_of_medians_tg": round(ours["tg_tps"] / ref["tg_tps"], 3),
        })
        log(f"{t}: pp ratio {results[-1]['ratio_pp']}, tg ratio {results[-1]['ratio_tg']}")
    print(json.dumps({
        "benchmark": "llm", "shape": "Qwen3-0.6B (random weights), vocab 151748",
        "n_prompt": N_PROMPT, "n_gen": N_GEN, "threads": args.threads, "reps": args.reps,
        **cpu_kernels(),
        "system_info": _testing.system_info().strip(),
        "machine": platform.machine(), "results": results, "target_ratio": 0.97,
    }, indent=2))


if __name__ == "__main__":
    main()
