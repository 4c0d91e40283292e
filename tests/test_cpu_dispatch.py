"""Which CPU kernels ggml runs: `minicpmo_cpp.cpu_features()` against the build's options and the CPU.

A portable build runs the instruction sets it was compiled for (build_info.GGML_CPU_OPTIONS); a build
with MINICPMO_CPU_VARIANTS=ON loads, at run time, the CPU module of the highest level this CPU has.
Either way the kernels must never use an instruction set the CPU lacks (read independently from
/proc/cpuinfo here)."""

from __future__ import annotations

import platform
from pathlib import Path

import minicpmo_cpp
from minicpmo_cpp import build_info

# ggml's feature names -> the /proc/cpuinfo flags each needs (Linux x86-64 names)
CPUINFO_FLAGS = {
    "SSE3": ["pni"], "SSSE3": ["ssse3"], "AVX": ["avx"], "AVX2": ["avx2"], "F16C": ["f16c"], "FMA": ["fma"],
    "BMI2": ["bmi2"], "AVX_VNNI": ["avx_vnni"], "AVX512": ["avx512f"], "AVX512_VBMI": ["avx512vbmi"],
    "AVX512_VNNI": ["avx512_vnni"], "AVX512_BF16": ["avx512_bf16"], "AMX_INT8": ["amx_int8", "amx_tile"],
}
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
