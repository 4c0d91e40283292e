"""Shared fixtures: a tiny random MiniCPM-o checkpoint (HF layout), its GGUF conversions and the
numpy reference built from the same weights.

Everything is made by the project's own generator + converter (DESIGN.md §5): tests never hand-build
the model GGUFs. Fixtures are session-scoped so the (cheap) conversion happens once per run.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # makes `import reference` work from any rootdir/cwd
import backend  # noqa: E402  (tests/ is on sys.path now)
from backend import SESSION  # noqa: E402
# The command-line tools (minicpmo-cli, minicpmo-convert) of the environment running the tests come
# first on PATH, also when that environment is not activated (`venv/bin/python -m pytest`): otherwise
# another installation's tools would be tested.
_ENV_BIN = Path(sys.executable).parent
if (_ENV_BIN / "minicpmo-cli").exists() and os.environ.get("PATH", "").split(os.pathsep)[0] != str(_ENV_BIN):
    os.environ["PATH"] = str(_ENV_BIN) + os.pathsep + os.environ.get("PATH", "")

# The test backend reaches every front end: sessions made without a device (Python, the C programs,
# the CLI, subprocesses) resolve "auto" through MINICPMO_DEVICE (tests/backend.py).
os.environ["MINICPMO_DEVICE"] = backend.DEVICE
# ... and their compute_type "auto" through MINICPMO_COMPUTE: the exact path (tests/backend.py).
os.environ["MINICPMO_COMPUTE"] = backend.COMPUTE


def pytest_report_header(config):
    precision = f", {backend.PRECISION}" if backend.PRECISION else ""
    return (f"minicpmo test backend: {backend.NAME} (device {backend.DEVICE}{precision}, compute {backend.COMPUTE}, "
            f"float tolerance floor {backend.FLOAT_RTOL:g})")


def pytest_configure(config):
    """A GPU mode whose device is missing is an error, not a quiet CPU run."""
    if not backend.ON_DEVICE:
        return
    try:
        from minicpmo_cpp import device_names
    except ImportError:
        return  # numpy-only run from a source checkout: nothing builds a session
    names = [n.lower() for n in device_names()]
    if backend.DEVICE.lower() not in names:
        raise pytest.UsageError(f"MINICPMO_TEST_BACKEND={backend.NAME}: this build has no device {backend.DEVICE} "
                                f"(it has {', '.join(device_names())}); build with the backend, and for Mesa's "
                                "lavapipe set GGML_VK_VISIBLE_DEVICES=0 (scripts/vulkan_env.sh)")


# Real MiniCPM-o 4.5 special-token ids (MODEL_SPEC.md §4.2)
IM_START, IM_END, ENDOFTEXT = 151644, 151645, 151643
THINK, END_THINK = 151667, 151668
TTS_BOS, TTS_EOS = 151703, 151704
TERMINATORS = (IM_END, ENDOFTEXT)


def _import_convert(modname: str):
    """Import ``minicpmo_cpp.convert[.x]`` from the installed package; fall back to the in-tree
    ``convert/`` folder (packaged as ``minicpmo_cpp/convert``) so the numpy-only tests also run from a
    source checkout where the extension is not built yet."""
    try:
        return importlib.import_module("minicpmo_cpp.convert" + modname)
    except ImportError as first:
        if not (REPO_ROOT / "convert").is_dir():
            raise
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        try:
            return importlib.import_module("convert" + modname)
        except ImportError:
            raise first


def pytest_ignore_collect(collection_path, config):
    """A module marked torch as a whole (a line `pytestmark = pytest.mark.torch`) imports torch or
    transformers at the top, so it is not even imported when the torch tests are deselected
    (`-m "not torch"`): that run needs neither package installed."""
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if not _deselects_torch(config.getoption("markexpr", "") or ""):
        return None
    try:
        text = collection_path.read_text(encoding="utf-8")
    except OSError:
        return None
    return True if "\npytestmark = pytest.mark.torch" in text else None


def _deselects_torch(markexpr: str) -> bool:
    """Whether -m `markexpr` deselects a test whose only mark is torch. A -m expression is names joined
    by and / or / not and parentheses (pytest's grammar, minus its rarely used keyword-argument
    matching): each name becomes True for "torch" and False otherwise, and Python evaluates the
    result. Anything else (an expression this cannot read) keeps the module: pytest then decides."""
    if not markexpr.strip():
        return False
    words = []
    for token in re.findall(r"\(|\)|[^\s()]+", markexpr):
        if token in ("(", ")", "and", "or", "not"):
            words.append(token)
        elif re.fullmatch(r"[\w.\-\[\]:]+", token):
            words.append("True" if token == "torch" else "False")
        else:
            return False
    try:
        return not eval(" ".join(words), {"__builtins__": {}}, {})  # only True/False/and/or/not/()
    except SyntaxError:
        return False


@pytest.fixture(scope="session")
def llama_cpp_dir() -> Path:
    """Root of the llama.cpp source tree the runtime was built from."""
    env = os.environ.get("MINICPMO_LLAMA_CPP_DIR")
    if env:
        p = Path(env)
    else:
        from minicpmo_cpp.build_info import LLAMA_CPP_DIR

        p = Path(LLAMA_CPP_DIR)
    assert (p / "include" / "llama.h").is_file(), f"not a llama.cpp tree: {p}"
    return p


@pytest.fixture(scope="session")
def qwen2_vocab_gguf(llama_cpp_dir) -> Path:
    p = llama_cpp_dir / "models" / "ggml-vocab-qwen2.gguf"
    assert p.is_file(), f"missing {p} (the build must keep llama.cpp's models/ folder)"
    return p


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory, qwen2_vocab_gguf) -> Path:
    """Tiny random-weight checkpoint in the real HF layout (MODEL_SPEC.md §8 tiny config)."""
    make_tiny = _import_convert(".make_tiny").make_tiny_checkpoint
    out = tmp_path_factory.mktemp("tiny_hf")
    p = Path(make_tiny(out, seed=0, vocab_gguf=qwen2_vocab_gguf))
    assert (p / "config.json").is_file() and (p / "model.safetensors").is_file()
    return p


def _convert(tmp_path_factory, hf_dir, outtype, tts_outtype="same"):
    """tts_outtype "same": the TTS matrices in outtype too (the tests' references round every matrix
    alike); None: the converter's default."""
    convert_checkpoint = _import_convert("").convert_checkpoint
    out = tmp_path_factory.mktemp(f"tiny_{outtype}")
    llm, omni = convert_checkpoint(hf_dir, out, outtype=outtype, name="MiniCPM-o-4_5",
                                   tts_outtype=outtype if tts_outtype == "same" else tts_outtype)
    llm, omni = Path(llm), Path(omni)
    assert llm.is_file() and omni.is_file()
    return llm, omni


@pytest.fixture(scope="session")
def tiny_f32(tmp_path_factory, tiny_hf):
    """(llm_gguf, omni_gguf) converted with outtype f32."""
    return _convert(tmp_path_factory, tiny_hf, "f32")


@pytest.fixture(scope="session")
def tiny_f16(tmp_path_factory, tiny_hf):
    """(llm_gguf, omni_gguf) converted with outtype f16."""
    return _convert(tmp_path_factory, tiny_hf, "f16")


@pytest.fixture(scope="session")
def tiny_f16_default(tmp_path_factory, tiny_hf):
    """(llm_gguf, omni_gguf) converted with outtype f16 and the converter's default TTS type (Q8_0)."""
    return _convert(tmp_path_factory, tiny_hf, "f16", None)


@pytest.fixture(scope="session")
def tiny_state(tiny_hf):
    """(state_dict, config) of the tiny checkpoint, read back from model.safetensors."""
    from reference import load_hf_checkpoint

    return load_hf_checkpoint(tiny_hf)


@pytest.fixture(scope="session")
def tiny_ref(tiny_state):
    """float64 numpy Qwen3 reference of the tiny LLM."""
    from reference import Qwen3Reference

    sd, cfg = tiny_state
    return Qwen3Reference(sd, cfg)


@pytest.fixture(scope="session")
def tiny_ref_f16(tiny_state):
    """float64 reference run on F16-rounded matrices (what an F16 GGUF stores)."""
    from reference import Qwen3Reference, round_weights

    sd, cfg = tiny_state
    return Qwen3Reference(round_weights(sd, "f16"), cfg)


@pytest.fixture(scope="module")
def session_f32(tiny_f32):
    from minicpmo_cpp import OmniSession

    # F32 KV cache: an F32 model is compared with the float64 reference at 1e-4 (see test_llm_logits)
    return OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=2048, seed=0, kv_cache_type="f32")


@pytest.fixture(scope="module")
def session_f32_kv16(tiny_f32):
    from minicpmo_cpp import OmniSession

    # llama.cpp's default F16 KV cache, as users get it
    return OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=2048, seed=0)


@pytest.fixture(scope="module")
def session_f16(tiny_f16):
    from minicpmo_cpp import OmniSession

    return OmniSession(str(tiny_f16[0]), n_threads=2, **SESSION, n_ctx=2048, seed=0)


@pytest.fixture(scope="module")
def tiny_tts_ref(tiny_state):
    """float64 numpy reference of the tiny model's TTS decoder."""
    from reference.tts import TTSReference

    sd, cfg = tiny_state
    return TTSReference(sd, cfg)


@pytest.fixture(scope="module")
def tiny_sessions(tiny_f32, tiny_f16):
    """{"f32", "f16"}: the test hooks (minicpmo_cpp._testing.SessionHooks) of a session of each tiny
    conversion, n_ctx 512."""
    from minicpmo_cpp import OmniSession, _testing

    return {kind: _testing.hooks(OmniSession(str(paths[0]), n_threads=2, **SESSION, n_ctx=512))
            for kind, paths in (("f32", tiny_f32), ("f16", tiny_f16))}


def run_isolated(code: str, timeout: float = 120.0, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter so that a native crash shows up as a test failure
    (negative return code) instead of killing pytest. ``env_extra``: more environment variables."""
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env)
