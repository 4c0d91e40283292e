"""The C API (a C program compiled against the installed header and library), the CLI and the
Python API give the same greedy replies on the tiny model; errors come back as statuses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import minicpmo_cpp
from minicpmo_cpp import OmniSession

from c_demos import C_DIR, build_c_demo

PKG_DIR = Path(minicpmo_cpp.__file__).parent
PROMPT1, PROMPT2, N_PREDICT = "Hello! Who are you?", "Tell me more.", 12


@pytest.fixture(scope="module")
def chat_demo(tmp_path_factory) -> Path:
    return build_c_demo("chat_demo", tmp_path_factory.mktemp("capi"))


def _parse_reply(out: bytes, tag: str) -> str:
    m = re.search(rb"^" + tag.encode() + rb" (\d+)\n", out, re.M)
    assert m, out
    n = int(m.group(1))
    return out[m.end(): m.end() + n].decode("utf-8")


def _python_replies(model: str) -> tuple[str, str]:
    s = OmniSession(model, n_ctx=1024)
    greedy = dict(do_sample=False, repetition_penalty=1.0, max_new_tokens=N_PREDICT)
    msgs = [{"role": "user", "content": PROMPT1}]
    r1 = s.chat(msgs, **greedy)
    msgs += [{"role": "assistant", "content": r1}, {"role": "user", "content": PROMPT2}]
    r2 = s.chat(msgs, **greedy)
    return r1, r2


def test_c_program_matches_python_api(chat_demo, tiny_f32):
    model = str(tiny_f32[0])
    res = subprocess.run([str(chat_demo), model, PROMPT1, PROMPT2, str(N_PREDICT)], capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    c1, c2 = _parse_reply(res.stdout, "REPLY1"), _parse_reply(res.stdout, "REPLY2")
    p1, p2 = _python_replies(model)
    assert (c1, c2) == (p1, p2)
    assert c1 and c2
    # a missing file is a status with a message naming it, not a crash
    missing = re.search(rb"^MISSING:(.*)$", res.stdout, re.M).group(1).decode()
    assert missing.startswith("i/o error:") and "/nonexistent/model.gguf" in missing


def test_cli_matches_python_api(tiny_f32):
    model = str(tiny_f32[0])
    cli = shutil.which("minicpmo-cli")
    assert cli, "minicpmo-cli must be on PATH after pip install"
    res = subprocess.run([cli, "-m", model, "-p", PROMPT1, "-n", str(N_PREDICT), "--temp", "0",
                          "--repeat-penalty", "1", "-c", "1024"], capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    p1, _ = _python_replies(model)
    assert res.stdout.decode("utf-8") == p1 + "\n"


def test_cli_interactive_two_turns(tiny_f32):
    model = str(tiny_f32[0])
    res = subprocess.run([sys.executable, "-m", "minicpmo_cpp.cli", "-m", model, "-n", str(N_PREDICT), "--temp", "0",
                          "--repeat-penalty", "1", "-c", "1024"],
                         input=f"{PROMPT1}\n{PROMPT2}\n/exit\n".encode(), capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    p1, p2 = _python_replies(model)
    assert res.stdout.decode("utf-8") == p1 + "\n" + p2 + "\n"


@pytest.mark.parametrize("argv, message", [
    (["-m"], "option -m needs a value"),
    (["-p", "hi"], "no model given"),
    (["-m", "x.gguf", "--bogus"], "unknown option '--bogus'"),
    (["-m", "x.gguf", "-n", "abc"], "expects a number"),
    (["-m", "/nonexistent/x.gguf", "-p", "hi"], "/nonexistent/x.gguf"),
])
def test_cli_bad_arguments(argv, message):
    res = subprocess.run([shutil.which("minicpmo-cli"), *argv], capture_output=True, timeout=60)
    assert res.returncode in (1, 2)
    assert message in res.stderr.decode()


# ---- the C program built as an application would: pkg-config, and CMake's find_package ----

def _chat_demo_replies(exe: Path, model: str) -> tuple[str, str]:
    res = subprocess.run([str(exe), model, PROMPT1, PROMPT2, str(N_PREDICT)], capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return _parse_reply(res.stdout, "REPLY1"), _parse_reply(res.stdout, "REPLY2")


def test_c_program_built_with_pkg_config(tiny_f32, tmp_path):
    """minicpmo.pc of the installed package (minicpmo_cpp/lib/pkgconfig) gives the compile and link
    flags; the program runs with the library found through an rpath to pkg-config's libdir."""
    pkg_config = shutil.which("pkg-config")
    assert pkg_config, "pkg-config is needed to build against minicpmo.pc (Debian: apt-get install pkg-config)"
    env = dict(os.environ, PKG_CONFIG_PATH=str(PKG_DIR / "lib" / "pkgconfig"))

    def query(option: str) -> list[str]:
        res = subprocess.run([pkg_config, option, "minicpmo"], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return res.stdout.split()

    assert query("--modversion") == [minicpmo_cpp.__version__]
    libdir = query("--variable=libdir")[0]
    # paths are relative to the .pc file, so they point into wherever the package was installed
    assert Path(libdir).resolve() == PKG_DIR.resolve()
    assert (Path(query("--variable=includedir")[0]) / "minicpmo.h").is_file()

    cc = shutil.which("cc") or shutil.which("gcc")
    exe = tmp_path / "chat_demo"
    res = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", str(C_DIR / "chat_demo.c"), "-o", str(exe),
                          *query("--cflags"), *query("--libs"), f"-Wl,-rpath,{libdir}"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    model = str(tiny_f32[0])
    assert _chat_demo_replies(exe, model) == _python_replies(model)


def test_c_program_built_with_cmake_find_package(tiny_f32, tmp_path):
    """tests/c/find_package_app: find_package(minicpmo) against the installed package's
    minicpmo_cpp/lib/cmake/minicpmo, linked through the imported target minicpmo::minicpmo."""
    cmake = shutil.which("cmake")
    assert cmake, "cmake is needed to build tests/c/find_package_app"
    build = tmp_path / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    res = subprocess.run([cmake, "-S", str(C_DIR / "find_package_app"), "-B", str(build), *generator,
                          f"-DCMAKE_PREFIX_PATH={PKG_DIR}"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    cache = (build / "CMakeCache.txt").read_text()
    found = re.search(r"^minicpmo_DIR:PATH=(.*)$", cache, re.M).group(1)
    assert Path(found).resolve() == (PKG_DIR / "lib" / "cmake" / "minicpmo").resolve()
    res = subprocess.run([cmake, "--build", str(build)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    model = str(tiny_f32[0])
    assert _chat_demo_replies(build / "chat_demo", model) == _python_replies(model)
