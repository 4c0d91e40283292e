"""Replays the fuzz corpora through the fuzz targets' entry points in the ordinary build: the seed
corpus of every target (fuzz/make_seeds.py: valid files of every format plus malformed GGUF headers
after past llama.cpp CVEs) and every crasher the fuzzers found (fuzz/crashers/<target>/, kept after
the fix). Each file must load or be refused with the library's error, never crash (a crash, a
sanitizer report or a violated property ends the replay process with a non-zero status).

The C++ entry points (fuzz/fuzz_*.cpp) are compiled here with fuzz/replay_main.cpp against the
installed libminicpmo, as an application would link it; under scripts/test_sanitized.sh (a library
built with ASan) the replay program is built with the same sanitizers. The Python entry point
(fuzz/fuzz_messages.py) runs in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FUZZ = REPO / "fuzz"
CRASHERS = FUZZ / "crashers"
CPP_TARGETS = ["fuzz_omni_file", "fuzz_llm_gguf", "fuzz_image_file", "fuzz_image_preprocess", "fuzz_audio_file",
               "fuzz_resample", "fuzz_utf8"]
# the CLI sources the media targets exercise (not part of libminicpmo)
CLI_SOURCES = ["csrc/cli/image_file.cpp", "csrc/cli/stb_image_impl.cpp", "csrc/cli/audio_file.cpp",
               "csrc/cli/wav_writer.cpp"]
# CMakeLists.txt's sanitizer exception for the stb_image source (a null memcpy destination of length 0)
SANITIZE_EXCEPTIONS = {"csrc/cli/stb_image_impl.cpp": ["-fno-sanitize=nonnull-attribute"]}

pytestmark = pytest.mark.sanitize  # in the CI sanitizer subset


def _sanitizer_flags(lib: Path) -> list[str]:
    """-fsanitize=... when the installed library was built with sanitizers (scripts/test_sanitized.sh)."""
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True).stdout
    return ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if "libasan" in out else []


@pytest.fixture(scope="module")
def replay_exe(tmp_path_factory, llama_cpp_dir) -> Path:
    import minicpmo_cpp

    cxx = shutil.which("c++") or shutil.which("g++")
    assert cxx, "a C++ compiler is needed to build the fuzz replay program"
    pkg = Path(minicpmo_cpp.__file__).parent
    out = tmp_path_factory.mktemp("fuzz_replay")
    flags = ["-std=c++17", "-O1", "-g", *_sanitizer_flags(pkg / "libminicpmo.so"),
             f"-I{REPO / 'csrc'}", f"-I{FUZZ}", f"-I{llama_cpp_dir / 'include'}", f"-I{llama_cpp_dir / 'ggml' / 'include'}",
             f"-I{llama_cpp_dir / 'vendor' / 'stb'}", f"-I{llama_cpp_dir / 'vendor' / 'miniaudio'}"]
    sanitized = bool(_sanitizer_flags(pkg / "libminicpmo.so"))
    jobs = [(REPO / s, out / (Path(s).stem + ".o"), SANITIZE_EXCEPTIONS.get(s, []) if sanitized else [])
            for s in CLI_SOURCES]
    jobs += [(FUZZ / f"{t}.cpp", out / f"{t}.o", [f"-DLLVMFuzzerTestOneInput={t}"]) for t in CPP_TARGETS]
    jobs.append((FUZZ / "replay_main.cpp", out / "replay_main.o", []))

    def compile_one(job):
        src, obj, extra = job
        return subprocess.run([cxx, *flags, *extra, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for (src, _, _), res in zip(jobs, pool.map(compile_one, jobs)):
            assert res.returncode == 0, f"{src}:\n{res.stderr[-3000:]}"
    exe = out / "replay"
    link = [cxx, *flags, *(str(o) for _, o, _ in jobs), "-o", str(exe), f"-L{pkg}", "-lminicpmo", "-lllama",
            "-lggml", "-lggml-base", f"-Wl,-rpath,{pkg}", "-lpthread", "-ldl", "-lm"]
    res = subprocess.run(link, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return exe


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    sys.path.insert(0, str(FUZZ))
    try:
        import make_seeds
    finally:
        sys.path.remove(str(FUZZ))
    out = tmp_path_factory.mktemp("fuzz_seeds")
    make_seeds.main(str(out))
    return out


def _files(seeds: Path, target: str) -> list[Path]:
    files = sorted((seeds / target).glob("*")) + sorted((CRASHERS / target).glob("*"))
    return [f for f in files if f.is_file() and f.name != "README.md"]


def _replay(cmd: list[str], files: list[Path], timeout: float, leaks: bool = False) -> None:
    # MINICPMO_FUZZ_LARGE_TABLES: fuzz_resample builds every filter table (a fuzzing run skips the
    # large ones for speed; a replay has the time)
    env = {**os.environ, "MINICPMO_VERBOSE": "0", "MINICPMO_FUZZ_LARGE_TABLES": "1"}
    if leaks and "ASAN_OPTIONS" in env:
        # a sanitized replay program is all ours (no interpreter): LeakSanitizer can run at its exit
        env["ASAN_OPTIONS"] = env["ASAN_OPTIONS"].replace("detect_leaks=0", "detect_leaks=1")
    res = subprocess.run(cmd + [str(f) for f in files], capture_output=True, text=True, timeout=timeout, env=env)
    done = {line[3:] for line in res.stdout.splitlines() if line.startswith("ok ")}
    missing = [f.name for f in files if str(f) not in done]
    assert res.returncode == 0 and not missing, (
        f"replay stopped with status {res.returncode} (first file not passed: {missing[:1]}):\n{res.stderr[-4000:]}")


@pytest.mark.parametrize("target", CPP_TARGETS)
def test_cpp_fuzz_corpus_replays_cleanly(replay_exe, seeds, target):
    files = _files(seeds, target)
    assert len(files) >= 3, f"{target}: seed corpus missing"
    _replay([str(replay_exe), target], files, timeout=600, leaks=True)


def test_python_message_fuzz_corpus_replays_cleanly(tmp_path):
    """fuzz/fuzz_messages.py: message / content parsing, data URLs, image and audio inputs."""
    corpus = sorted((FUZZ / "corpus_messages").glob("*")) + sorted((CRASHERS / "fuzz_messages").glob("*"))
    files = [f for f in corpus if f.is_file() and f.name != "README.md"]
    assert len(files) >= 3
    _replay([sys.executable, str(FUZZ / "fuzz_messages.py"), "--replay"], files, timeout=600)


def test_resample_refuses_rates_too_far_apart():
    """The fuzz_resample crasher (768 kHz -> 1 Hz wanted a 1e8-tap filter, 17 rows: 7 GB and minutes)
    is refused at once with the library's error; the ratio limit (~1:3400) leaves 768 kHz -> 16 kHz
    (1:48) far inside."""
    import time

    import numpy as np

    from minicpmo_cpp import MinicpmoError, _core

    pcm = np.zeros(64, np.float32)
    t0 = time.perf_counter()
    with pytest.raises(MinicpmoError, match="too far apart"):
        _core.resample(pcm, 768000, 1)
    assert time.perf_counter() - t0 < 5.0
    assert _core.resample(pcm, 768000, 16000).size == 2  # ceil(64 * 16000 / 768000)
