"""Which CPU kernels ggml runs: `minicpmo_cpp.cpu_features()` against the build's options and the CPU.

A portable build runs the instruction sets it was compiled for (build_info.GGML_CPU_OPTIONS); a build
with MINICPMO_CPU_VARIANTS=ON loads, at run time, the CPU module of the highest level this CPU has.
Either way the kernels must never use an instruction set the CPU lacks (read independently from
/proc/cpuinfo here). MINICPMO_CPU_VARIANT=<level> pins one module (how CI runs the AVX2 kernels on an
AVX-512 machine): it must run that level's kernels, or refuse clearly."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import minicpmo_cpp
from minicpmo_cpp import build_info

# ggml's feature names -> the /proc/cpuinfo flags each needs (Linux x86-64 names)
CPUINFO_FLAGS = {
    "SSE3": ["pni"], "SSSE3": ["ssse3"], "AVX": ["avx"], "AVX2": ["avx2"], "F16C": ["f16c"], "FMA": ["fma"],
    "BMI2": ["bmi2"], "AVX_VNNI": ["avx_vnni"], "AVX512": ["avx512f"], "AVX512_VBMI": ["avx512vbmi"],
    "AVX512_VNNI": ["avx512_vnni"], "AVX512_BF16": ["avx512_bf16"], "AMX_INT8": ["amx_int8", "amx_tile"],
}
# the levels this project ships (cmake/CpuFeatures.cmake) and the ggml features each one must report
SHIPPED_LEVELS = {
    "x64": [], "haswell": ["AVX2", "FMA", "F16C", "BMI2"], "skylakex": ["AVX2", "AVX512"],
    "cascadelake": ["AVX512", "AVX512_VNNI"], "icelake": ["AVX512", "AVX512_VBMI", "AVX512_VNNI"],
    "zen4": ["AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"], "alderlake": ["AVX2", "AVX_VNNI"],
}
# features a level must not report: the pin really replaced the best module
ABOVE_LEVEL = {"x64": ["AVX", "AVX2"], "haswell": ["AVX512"], "alderlake": ["AVX512"]}
X86_LINUX = platform.machine() in ("x86_64", "AMD64") and Path("/proc/cpuinfo").exists()


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("/proc/cpuinfo has no flags line")


def test_kernels_use_only_what_the_cpu_has():
    features = minicpmo_cpp.cpu_features()
    assert isinstance(features, list) and all(isinstance(f, str) for f in features)
    if not X86_LINUX:
        return  # the flag names below are Linux x86-64's
    flags = _cpu_flags()
    for f in features:
        for need in CPUINFO_FLAGS.get(f, []):
            assert need in flags, f"ggml's CPU kernels use {f}, this CPU lacks {need}: {features}"


def test_features_follow_the_build():
    features = set(minicpmo_cpp.cpu_features())
    options = dict(o.split("=") for o in build_info.GGML_CPU_OPTIONS)
    if build_info.MINICPMO_CPU_VARIANTS:
        assert options.get("GGML_BACKEND_DL") == "ON" and options.get("GGML_CPU_ALL_VARIANTS") == "ON", options
        if not X86_LINUX:
            return
        pinned = os.environ.get("MINICPMO_CPU_VARIANT")
        if pinned:
            # this run is pinned to one level (CI's AVX2 pass): its features, none above
            assert set(SHIPPED_LEVELS[pinned]) <= features, (pinned, sorted(features))
            assert not set(ABOVE_LEVEL.get(pinned, [])) & features, (pinned, sorted(features))
            return
        flags = _cpu_flags()
        # the variant chosen covers the highest level this CPU offers among ggml's x86 variants
        # (haswell: AVX2; skylakex: AVX512; zen4 / sapphirerapids: + VNNI, BF16)
        for level in ("AVX2", "AVX512", "AVX512_VNNI", "AVX512_BF16"):
            if all(n in flags for n in CPUINFO_FLAGS[level]):
                assert level in features, (level, sorted(features))
    else:
        # a fixed build runs exactly the x86 switches it was compiled with
        for name, value in options.items():
            feature = name.removeprefix("GGML_")
            if feature in CPUINFO_FLAGS and feature != "AMX_INT8":
                assert (feature in features) == (value == "ON"), (name, value, sorted(features))


def _features_with_pin(level: str) -> subprocess.CompletedProcess:
    # a fresh process: the modules are loaded once per process, at the first session or query
    code = "import minicpmo_cpp, json; print(json.dumps(minicpmo_cpp.cpu_features()))"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "MINICPMO_CPU_VARIANT": level},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("level", sorted(SHIPPED_LEVELS))
def test_a_pinned_level_runs_its_own_kernels_or_is_refused(level):
    run = _features_with_pin(level)
    if not build_info.MINICPMO_CPU_VARIANTS:
        assert run.returncode != 0 and "MINICPMO_CPU_VARIANT" in run.stderr and "MINICPMO_CPU_VARIANTS=OFF" in run.stderr
        return
    assert X86_LINUX  # variants are built for x86-64 Linux only (cmake/CpuFeatures.cmake)
    flags = _cpu_flags()
    runnable = all(n in flags for f in SHIPPED_LEVELS[level] for n in CPUINFO_FLAGS[f])
    if not runnable:
        # e.g. alderlake (AVX-VNNI) on AMD Zen 4: a clear refusal, not a crash later
        assert run.returncode != 0 and "needs instructions this CPU lacks" in run.stderr, run.stderr[-2000:]
        return
    assert run.returncode == 0, run.stderr[-2000:]
    features = set(json.loads(run.stdout))
    assert set(SHIPPED_LEVELS[level]) <= features, (level, sorted(features))
    assert not set(ABOVE_LEVEL.get(level, [])) & features, (level, sorted(features))


@pytest.mark.parametrize("level, message", [("nehalem", "no CPU module"), ("../x64", "not a level name")])
def test_a_bad_level_is_a_clear_error(level, message):
    run = _features_with_pin(level)
    assert run.returncode != 0, run.stdout
    expected = message if build_info.MINICPMO_CPU_VARIANTS else "MINICPMO_CPU_VARIANTS=OFF"
    assert expected in run.stderr and "MINICPMO_CPU_VARIANT" in run.stderr, run.stderr[-2000:]
