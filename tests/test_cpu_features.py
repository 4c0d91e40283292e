"""The instruction sets ggml's CPU kernels are compiled for (cmake/CpuFeatures.cmake), configure only.

MINICPMO_NATIVE=ON reads /proc/cpuinfo; the independent reference is the compiler's own
`-march=native` detection: each ggml switch must be on exactly when gcc's native target defines
every feature macro the switch compiles for, AMX never, and ggml's CPU objects must get explicit
-m flags rather than -march=native (a shared ccache keys objects by their flags). The default must
be ggml's portable x86 set.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minicpmo_cpp.build_info import LLAMA_CPP_DIR

REPO = Path(__file__).resolve().parents[1]

# ggml switch -> the predefined macros of the -m flags ggml's CMake adds for it
MACROS = {
    "GGML_SSE42": ["__SSE4_2__"],
    "GGML_AVX": ["__AVX__"],
    "GGML_AVX2": ["__AVX2__"],
    "GGML_FMA": ["__FMA__"],
    "GGML_F16C": ["__F16C__"],
    "GGML_BMI2": ["__BMI2__"],
    "GGML_AVX_VNNI": ["__AVXVNNI__"],
    "GGML_AVX512": ["__AVX512F__", "__AVX512CD__", "__AVX512VL__", "__AVX512DQ__", "__AVX512BW__"],
    "GGML_AVX512_VBMI": ["__AVX512F__", "__AVX512VBMI__"],
    "GGML_AVX512_VNNI": ["__AVX512F__", "__AVX512VNNI__"],
    "GGML_AVX512_BF16": ["__AVX512F__", "__AVX512BF16__"],
}
AMX = ["GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"]
PORTABLE_ON = {"GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"}

x86_linux = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")),
    reason="the explicit switches are chosen on x86-64 Linux only (elsewhere ON means GGML_NATIVE)")


def configure(build: Path, native: bool, variants: bool | None = False) -> tuple[dict[str, str], str]:
    """Configures the project (variants None: the default run-time dispatch setting); returns the
    printed switches and the generated build.ninja."""
    cmd = ["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja", "-DMINICPMO_BUILD_PYTHON=OFF",
           "-DMINICPMO_CCACHE=OFF", f"-DMINICPMO_LLAMA_CPP_DIR={LLAMA_CPP_DIR}",
           f"-DMINICPMO_NATIVE={'ON' if native else 'OFF'}"]
    if variants is not None:
        cmd.append(f"-DMINICPMO_CPU_VARIANTS={'ON' if variants else 'OFF'}")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = re.search(r"minicpmo: ggml CPU kernels: (.*)", out)
    assert line, out
    switches = dict(kv.split("=") for kv in line.group(1).split())
    return switches, (build / "build.ninja").read_text()


def native_macros() -> set[str]:
    cc = shutil.which("gcc") or shutil.which("cc")
    out = subprocess.run([cc, "-march=native", "-dM", "-E", "-"], input="", capture_output=True, text=True,
                         check=True).stdout
    return {m.group(1) for m in re.finditer(r"#define (__\w+__) 1", out)}


def ggml_cpu_flags(ninja: str) -> set[str]:
    """The -m / -march flags of the ggml-cpu object compile lines."""
    flags = set()
    for block in ninja.split("\nbuild ")[1:]:
        if "ggml-cpu" in block.split(":")[0] and "FLAGS = " in block:
            flags |= set(re.findall(r"(-m[a-z0-9.=-]+|-march=\S+)", block))
    return flags


@x86_linux
def test_native_switches_follow_the_compilers_native_target(tmp_path):
    switches, ninja = configure(tmp_path / "native", native=True)
    have = native_macros()
    assert switches["GGML_NATIVE"] == "OFF"
    for name, macros in MACROS.items():
        assert switches[name] == ("ON" if all(m in have for m in macros) else "OFF"), name
    for name in AMX:
        assert switches[name] == "OFF", name
    flags = ggml_cpu_flags(ninja)
    assert flags, "no ggml-cpu compile lines found"
    assert not any(f.startswith("-march=") for f in flags)
    assert ("-mavx512f" in flags) == (switches["GGML_AVX512"] == "ON")
    assert ("-mavx512bf16" in flags) == (switches["GGML_AVX512_BF16"] == "ON")
    assert not any(f.startswith("-mamx") for f in flags)


@x86_linux
def test_one_linked_set_is_the_portable_x86_set(tmp_path):
    switches, ninja = configure(tmp_path / "portable", native=False, variants=False)
    assert switches["GGML_BACKEND_DL"] == "OFF" and switches["GGML_CPU_ALL_VARIANTS"] == "OFF"
    assert switches["GGML_NATIVE"] == "OFF"
    for name in list(MACROS) + AMX:
        assert switches[name] == ("ON" if name in PORTABLE_ON else "OFF"), name
    flags = ggml_cpu_flags(ninja)
    assert "-mavx2" in flags and "-mfma" in flags
    assert not any(f.startswith(("-mavx512", "-mamx", "-march=")) for f in flags)


# the x86-64 levels shipped (cmake/CpuFeatures.cmake) -> a -m flag each one's objects must have and one
# they must not (the next level up)
SHIPPED = {"x64": (None, "-mavx"), "haswell": ("-mavx2", "-mavx512f"), "skylakex": ("-mavx512f", "-mavx512vnni"),
           "cascadelake": ("-mavx512vnni", "-mavx512vbmi"), "icelake": ("-mavx512vbmi", "-mavx512bf16"),
           "zen4": ("-mavx512bf16", "-mamx-tile"), "alderlake": ("-mavxvnni", "-mavx512f")}


def variant_flags(ninja: str, tag: str) -> tuple[set[str], list[str]]:
    """The -m flags and the source files of one CPU variant's compile lines."""
    flags, sources = set(), []
    for block in ninja.split("\nbuild ")[1:]:
        head = block.split("\n", 1)[0]
        if f"ggml-cpu-{tag}.dir/" in head and "FLAGS = " in block:
            flags |= set(re.findall(r"(-m[a-z0-9.=-]+)", block))
            sources += [Path(f).name for f in head.split(":", 1)[1].split()[1:] if f.endswith((".c", ".cpp"))]
    return flags, sources


@x86_linux
def test_default_builds_the_shipped_levels_and_empties_the_rest(tmp_path):
    switches, ninja = configure(tmp_path / "variants", native=False, variants=None)
    assert switches["GGML_BACKEND_DL"] == "ON" and switches["GGML_CPU_ALL_VARIANTS"] == "ON"
    for tag, (must, must_not) in SHIPPED.items():
        flags, sources = variant_flags(ninja, tag)
        assert len(sources) > 10, (tag, sources)  # ggml-cpu's own sources
        assert must is None or must in flags, (tag, sorted(flags))
        assert must_not not in flags, (tag, sorted(flags))
    for tag in ("sse42", "sandybridge", "ivybridge", "piledriver", "cannonlake", "cooperlake", "sapphirerapids"):
        # ggml's kernels are not compiled for it (its small feature-check file still is)
        _, sources = variant_flags(ninja, tag)
        assert "unshipped_cpu_variant.c" in sources and "ggml-cpu.c" not in sources and "ops.cpp" not in sources, \
            (tag, sources)
