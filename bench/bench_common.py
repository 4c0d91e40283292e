"""Small pieces every benchmark script uses: where built benchmark models are cached, this
process's memory figures, a speech-like test signal, torch's GEMM rate, the machine's measured F32 FMA
peak, the handle on a worker process, and the compute types (f32 / bf16 / int8) each side runs under,
with the order of the sides in each round, their paired ratios and their sustained GFLOP/s."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path

# the tests' speech-like signal: one definition for tests and benchmarks
from minicpmo_cpp.signals import speechlike  # noqa: F401


def cache_dir() -> Path:
    """Benchmark models and tools are built once and kept here (MINICPMO_CACHE_DIR overrides)."""
    d = os.environ.get("MINICPMO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "minicpmo-cpp")
    return Path(d)


def cpu_kernels() -> dict:
    """Which ggml CPU kernels this package runs (DESIGN: every benchmark states the CPU variant)."""
    from minicpmo_cpp import build_info, cpu_features
    return {"minicpmo_native": build_info.MINICPMO_NATIVE, "minicpmo_cpu_variants": build_info.MINICPMO_CPU_VARIANTS,
            "cpu_features": cpu_features()}


def upstream_build_dir(build_info) -> Path:
    """The upstream llama.cpp build tree bench/llm.py and bench/vision.py share: one per set of ggml
    CPU switches, so a build with other switches never reconfigures (and keeps stale options in) it."""
    variants = "-variants" if build_info.MINICPMO_CPU_VARIANTS else ""
    return cache_dir() / f"llama-bench-build-native{int(build_info.MINICPMO_NATIVE)}{variants}"


def cpu_name() -> str:
    """The CPU model ("Intel(R) Xeon(R) Processor", "AMD EPYC 9R14 ..."): ratios against other
    runtimes swing with the vendor, so every benchmark names it."""
    return cpuinfo_value("model name") or platform.processor() or platform.machine()


def cpuinfo_value(key: str) -> str | None:
    """The first /proc/cpuinfo line's value for `key` ("model name", "cpu MHz"), None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def proc_status_kib(key: str) -> int:
    """VmHWM (peak RSS), VmRSS, RssAnon or RssFile of this process in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class LineWorker:
    """The parent's handle on a long-lived worker process that answers each request line with one
    JSON line (its first line says it is ready); the worker's stderr goes to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, quit_line: str, env: dict | None = None):
        self.name = name
        self.log_path = log_path
        self._quit_line = quit_line
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, bufsize=1, env=env)
        try:
            self.ready = self._reply()
        except BaseException:
            self.close()
            raise

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"{self.name}: {msg['error']} (log: {self.log_path})")
        return msg

    def request(self, line: str) -> dict:
        """Sends one request line and returns the worker's JSON answer."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(self._quit_line + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_probe(source: str, threads: int) -> dict:
    """Runs one of bench/'s C probes on `threads` threads (compiled once into the cache folder, keyed by
    its source's hash) and returns the JSON line it prints."""
    src = Path(__file__).resolve().parent / source
    exe = cache_dir() / f"{src.stem}-{hashlib.sha256(src.read_bytes()).hexdigest()[:10]}"
    if not exe.exists():
        cc = shutil.which("cc") or shutil.which("gcc")
        exe.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([cc, "-O3", "-pthread", str(src), "-o", str(exe)], check=True)
    return json.loads(subprocess.run([str(exe), str(threads)], capture_output=True, text=True, check=True).stdout)


def f32_fma_peak(threads: int) -> dict:
    """This machine's F32 FMA peak on `threads` cores, measured by bench/fma_peak.c (compiled once
    into the cache folder): independent register-resident FMA chains on every thread, with how the
    figure decomposes into cores x GHz x FLOP/cycle. Measured, not taken from a datasheet: virtual
    machines' clocks vary (repeated runs here spread by up to 30 %), so each benchmark measures it in
    its own run and reports its GFLOP/s as a fraction of it."""
    out = run_probe("fma_peak.c", threads)
    ghz = float(cpuinfo_value("cpu MHz") or 0) / 1000
    per_cycle = out["gflops"] / threads / ghz if ghz else None
    out["nominal_ghz"] = round(ghz, 3)
    out["flop_per_cycle_at_nominal_ghz"] = round(per_cycle, 1) if per_cycle else None
    out["derivation"] = (f"{threads} cores x {ghz:.2f} GHz (nominal, /proc/cpuinfo) x {per_cycle:.1f} FLOP/cycle "
                         f"(measured: {out['isa']} FMAs of {out['flop_per_fma']} FLOP) = {out['gflops']} GFLOP/s"
                         if per_cycle else f"{threads} cores, measured {out['gflops']} GFLOP/s ({out['isa']})")
    return out


def read_bandwidth(threads: int) -> dict:
    """This machine's memory read bandwidth on `threads` threads, measured by bench/read_bandwidth.c
    (each thread sums its own 256 MiB, the passes started together; the best of five): the bound of a
    memory-bound decode step."""
    return run_probe("read_bandwidth.c", threads)


def torch_gemm_rates(shapes: dict[str, tuple[int, int, int]]) -> dict:
    """torch F32 GEMM throughput (MKL on x86) for each name -> (m, k, n): an (m, k) by (k, n)
    product repeated for half a second, with the calling process's torch thread count."""
    import torch

    out = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            torch.mm(a, b)
            reps += 1
        dt = (time.perf_counter() - t0) / reps
        out[name] = {"gflops": round(2 * m * k * n / dt / 1e9, 1), "ms": round(dt * 1e3, 3)}
    return out


# ---------------------------------------------------------------------------------------------
# compute types: every benchmark names the one each side ran ("auto" may mean either, per CPU)
# ---------------------------------------------------------------------------------------------
COMPUTE_TYPES = ("f32", "bf16", "int8")
# the ones the PyTorch sides run: int8 is ours only (torch's int8 quantization would be another
# model, not the same forward at another precision), so no torch_int8 side is made
TORCH_COMPUTE_TYPES = ("f32", "bf16")


def parse_compute(text: str) -> list[str]:
    """`--compute f32,int8` -> ["f32", "int8"] (order kept, duplicates dropped); ValueError on any
    other value. Benchmarks pass each one explicitly: compute_type "auto" follows the CPU and the
    environment (MINICPMO_COMPUTE), so a figure measured under it would not say what ran."""
    out = []
    for v in (s.strip().lower() for s in text.split(",")):
        if not v:
            continue
        if v not in COMPUTE_TYPES:
            raise ValueError(f"compute type {v!r}: choose from {', '.join(COMPUTE_TYPES)}")
        if v not in out:
            out.append(v)
    if not out:
        raise ValueError("no compute type given")
    return out


def require_onednn_build(compute: list[str]) -> None:
    """A build without oneDNN refuses compute_type "bf16" and "int8": say so before any worker starts."""
    from minicpmo_cpp import build_info

    refused = [c for c in compute if c != "f32"]
    if refused and not getattr(build_info, "MINICPMO_ONEDNN", False):
        raise SystemExit("this minicpmo_cpp build has no oneDNN (build_info.MINICPMO_ONEDNN is false), so it "
                         f"refuses compute_type {' and '.join(map(repr, refused))}: run with --compute f32")


def torch_precision(torch, compute: str):
    """The context the torch side's forward runs in: nothing for "f32"; for "bf16", PyTorch's own
    mixed precision, torch.autocast("cpu", dtype=torch.bfloat16) (matrix products and convolutions
    in BF16 through oneDNN, with F32 accumulation; norms, softmax and the rest in F32). ValueError
    for another compute type (int8: there is no torch side)."""
    import contextlib

    if compute == "f32":
        return contextlib.nullcontext()
    if compute == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    raise ValueError(f"no PyTorch side computes in {compute!r}: it runs {', '.join(TORCH_COMPUTE_TYPES)}")


def round_order(sides: list, r: int) -> list:
    """The order the sides run in round r: the list rotated by r, so over len(sides) rounds every
    side runs once in every position (for two sides: alternating who goes first), and drifting load
    on a shared machine hits all alike."""
    k = r % len(sides) if sides else 0
    return list(sides[k:]) + list(sides[:k])


def paired_ratio(num_ms: list[float], den_ms: list[float]) -> dict:
    """num / den per round (both measured back to back in that round), median over the rounds and
    the spread: the estimate least affected by load drift."""
    ratios = [n / d for n, d in zip(num_ms, den_ms)]
    return {"ratio": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3)}


def ratio_pairs(sides: list[str], ours: str = "minicpmo_cpp") -> list[tuple[str, str]]:
    """The (numerator, denominator) side pairs a benchmark reports, of those present, for sides named
    <impl>_<compute> (plus any other reference, e.g. "upstream"): every reference against ours at
    the same compute type; ours in int8, which no reference has, against each reference's F32 (the
    target is a speed-up over PyTorch F32); then what BF16 and int8 gain on each implementation
    (f32 time / bf16 time, f32 time / int8 time)."""
    out = []
    for c in COMPUTE_TYPES:
        for ref in sides:
            if ref.endswith("_" + c) and not ref.startswith(ours) and f"{ours}_{c}" in sides:
                out.append((ref, f"{ours}_{c}"))
    for ref in sides:
        if ref.endswith("_f32") and not ref.startswith(ours) and f"{ours}_int8" in sides:
            out.append((ref, f"{ours}_int8"))
    for ref in sides:
        for c in ("f32", "int8"):  # a reference without compute types (upstream): against our F32 and int8
            if "_" not in ref and f"{ours}_{c}" in sides:
                out.append((ref, f"{ours}_{c}"))
    for impl in dict.fromkeys(s.rsplit("_", 1)[0] for s in sides if s.endswith(COMPUTE_TYPES)):
        for c in ("bf16", "int8"):
            if f"{impl}_f32" in sides and f"{impl}_{c}" in sides:
                out.append((f"{impl}_f32", f"{impl}_{c}"))
    return out


def throughput(flop: float, ms: float, peak: dict) -> dict:
    """What a side sustained on a call of `flop` FLOPs in `ms` milliseconds, and that rate as a
    fraction of the machine's measured F32 FMA peak (f32_fma_peak(threads)["gflops"]). BF16 and int8
    runs are put against the same F32 peak: the fraction then says how far past F32's ceiling they got."""
    gflops = flop / ms / 1e6
    return {"gflops": round(gflops, 1), "share_of_f32_peak": round(gflops / peak["gflops"], 3)}
