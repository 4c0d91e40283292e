"""Small pieces every benchmark script uses: where built benchmark models are cached, this
process's memory figures, a speech-like test signal, torch's GEMM rate, the machine's measured F32 FMA
peak, and the handle on a worker process."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
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


def f32_fma_peak(threads: int) -> dict:
    """This machine's F32 FMA peak on `threads` cores, measured by bench/fma_peak.c (compiled once
    into the cache folder): independent register-resident FMA chains on every thread, with how the
    figure decomposes into cores x GHz x FLOP/cycle. Measured, not taken from a datasheet: virtual
    machines' clocks vary (repeated runs here spread by up to 30 %), so each benchmark measures it in
    its own run and reports its GFLOP/s as a fraction of it."""
    src = Path(__file__).resolve().parent / "fma_peak.c"
    exe = cache_dir() / f"fma_peak-{hashlib.sha256(src.read_bytes()).hexdigest()[:10]}"
    if not exe.exists():
        cc = shutil.which("cc") or shutil.which("gcc")
        exe.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([cc, "-O3", "-pthread", str(src), "-o", str(exe)], check=True)
    out = json.loads(subprocess.run([str(exe), str(threads)], capture_output=True, text=True, check=True).stdout)
    ghz = float(cpuinfo_value("cpu MHz") or 0) / 1000
    per_cycle = out["gflops"] / threads / ghz if ghz else None
    out["nominal_ghz"] = round(ghz, 3)
    out["flop_per_cycle_at_nominal_ghz"] = round(per_cycle, 1) if per_cycle else None
    out["derivation"] = (f"{threads} cores x {ghz:.2f} GHz (nominal, /proc/cpuinfo) x {per_cycle:.1f} FLOP/cycle "
                         f"(measured: {out['isa']} FMAs of {out['flop_per_fma']} FLOP) = {out['gflops']} GFLOP/s"
                         if per_cycle else f"{threads} cores, measured {out['gflops']} GFLOP/s ({out['isa']})")
    return out


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
