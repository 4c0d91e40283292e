"""Bad model files and bad API inputs give a clear Python exception naming the file, never a crash.

Crash-prone cases run in a child interpreter (conftest.run_isolated) so that a segfault or abort is
reported as a failed test with its output instead of killing pytest.
"""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np

from conftest import run_isolated

# child-side helper: try to open each (label, llm_path, omni_path) and print one JSON line per case
LOAD_CASES = r"""
import json, sys
from minicpmo_cpp import OmniSession, MinicpmoError
cases = CASES
for label, llm, omni in cases:
    print(json.dumps({"case": label, "start": True}), flush=True)
    try:
        s = OmniSession(llm, omni_path=omni, n_ctx=256, n_threads=1)
        r = {"case": label, "outcome": "loaded"}
    except (MinicpmoError, FileNotFoundError) as e:
        r = {"case": label, "outcome": "raised", "type": type(e).__name__, "msg": str(e)}
    except BaseException as e:
        r = {"case": label, "outcome": "other", "type": type(e).__name__, "msg": str(e)}
    print(json.dumps(r), flush=True)
"""


def try_load(cases):
    """cases: list of (label, llm_path, omni_path|None). Returns {label: result dict}."""
    code = "CASES = " + repr([(lbl, str(llm), None if o is None else str(o))
                              for lbl, llm, o in cases]) + "\n" + LOAD_CASES
    p = run_isolated(code)
    results = {}
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            if "outcome" in d:
                results[d["case"]] = d
    started = [json.loads(line)["case"] for line in p.stdout.splitlines()
               if line.startswith("{") and '"start"' in line]
    assert p.returncode == 0, (
        f"child exited with {p.returncode} (negative = killed by signal, i.e. a crash) while "
        f"handling case {started[-1] if started else None!r}\nstdout:\n{p.stdout[-3000:]}\n"
        f"stderr:\n{p.stderr[-3000:]}")
    assert len(results) == len(cases), p.stdout
    return results


def assert_raised_naming(res, name):
    assert res["outcome"] == "raised", res  # MinicpmoError or FileNotFoundError, nothing else
    assert name in res["msg"], f"error message should name the file {name!r}: {res['msg']!r}"


def test_error_type():
    from minicpmo_cpp import MinicpmoError

    assert issubclass(MinicpmoError, RuntimeError)


def test_missing_file(tmp_path):
    missing = tmp_path / "no-such-model-Q4_K_M.gguf"
    res = try_load([("missing", missing, None)])["missing"]
    assert_raised_naming(res, missing.name)


def test_truncated_gguf(tmp_path, tiny_f32):
    src = tiny_f32[0].read_bytes()
    n = len(src)
    # cut points: inside the magic, the header counts, the KV metadata, and the tensor data
    # (never only the final alignment padding, so every cut really removes needed bytes)
    cuts = [0, 3, 4, 8, 16, 24, 64, 1000, 100_000, n // 2, n - 4096]
    cases = []
    for c in cuts:
        p = tmp_path / f"trunc-{c}.gguf"
        p.write_bytes(src[:c])
        cases.append((f"trunc-{c}", p, None))
    results = try_load(cases)
    for label, p, _ in cases:
        assert_raised_naming(results[label], p.name)


def test_garbage_files(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "random.gguf": rng.integers(0, 256, 8192, dtype=np.uint8).tobytes(),
        "text.gguf": b"this is not a model\n" * 100,
        # right magic, garbage after it
        "magic-garbage.gguf": b"GGUF" + rng.integers(0, 256, 8192, dtype=np.uint8).tobytes(),
        # valid v3 header claiming absurd counts (must not allocate/read out of bounds)
        "huge-counts.gguf": b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 1 << 40) + b"\0" * 64,
        # one KV whose key string claims a length far beyond the file
        "huge-string.gguf": b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 60)
        + b"general.architecture",
        # wrong version
        "version-99.gguf": b"GGUF" + struct.pack("<IQQ", 99, 0, 0),
    }
    cases = []
    for name, data in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        cases.append((name, p, None))
    results = try_load(cases)
    for name, p, _ in cases:
        assert_raised_naming(results[name], name)


def _write_minimal_llama_gguf(path):
    """A well-formed GGUF of arch 'llama' with no tensors: not a MiniCPM-o/qwen3 LLM."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-6)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_wrong_architecture(tmp_path, tiny_f32):
    llm, omni = tiny_f32
    llama_arch = tmp_path / "llama-arch.gguf"
    _write_minimal_llama_gguf(llama_arch)
    results = try_load([
        ("llama-arch", llama_arch, None),
        ("omni-as-llm", omni, None),    # arch minicpmo-omni where the LLM is expected
        ("llm-as-omni", llm, llm),      # arch qwen3 where the omni companion is expected
    ])
    assert_raised_naming(results["llama-arch"], llama_arch.name)
    assert_raised_naming(results["omni-as-llm"], omni.name)
    assert_raised_naming(results["llm-as-omni"], llm.name)


def test_companion_key_and_missing_companion(tmp_path, tiny_f32):
    import gguf

    llm, omni = tiny_f32
    # the converter names the companion in the LLM file (DESIGN.md §2)
    r = gguf.GGUFReader(str(llm))
    f = r.fields["minicpmo.omni_file"]
    assert bytes(f.parts[f.data[0]]).decode("utf-8") == omni.name
    del r

    # the LLM alone in a folder: its companion name points at nothing
    lone = tmp_path / llm.name
    shutil.copyfile(llm, lone)
    missing = tmp_path / "does-not-exist-omni.gguf"
    results = try_load([("text-only", lone, None), ("explicit-missing", lone, missing)])
    # without its companion the runtime still does text (DESIGN.md §2) ...
    assert results["text-only"]["outcome"] == "loaded", results["text-only"]
    # ... but an explicitly requested companion that does not exist is an error naming it
    assert_raised_naming(results["explicit-missing"], missing.name)

    code = f"""
    from minicpmo_cpp import OmniSession
    s = OmniSession({str(lone)!r}, n_ctx=256, n_threads=1)
    ids = s.tokenize("<|im_start|>user\\nHi<|im_end|>\\n", parse_special=True)
    logits, hidden = s.forward(ids)
    assert logits.shape[0] == len(ids), logits.shape
    print("TEXT-OK")
    """
    p = run_isolated(code)
    assert p.returncode == 0 and "TEXT-OK" in p.stdout, (p.returncode, p.stdout, p.stderr[-3000:])


def test_bad_api_inputs(tiny_f32):
    """Out-of-range ids, empty input and context overflow raise; the session stays usable."""
    code = f"""
    import json
    from minicpmo_cpp import OmniSession, MinicpmoError
    s = OmniSession({str(tiny_f32[0])!r}, n_ctx=256, n_threads=1)
    def attempt(label, fn):
        print(json.dumps({{"case": label, "start": True}}), flush=True)
        try:
            fn()
            r = "ok"
        except (MinicpmoError, ValueError, IndexError, OverflowError, TypeError) as e:
            r = "raised " + type(e).__name__
        print(json.dumps({{"case": label, "outcome": r}}), flush=True)
    attempt("id-too-large", lambda: s.forward([1, 2, 151748]))
    attempt("id-huge", lambda: s.forward([2**31 - 1]))
    attempt("id-negative", lambda: s.forward([5, -1]))
    attempt("empty", lambda: s.forward([]))
    attempt("ctx-overflow", lambda: s.forward(list(range(100, 400))))   # 300 > n_ctx 256
    attempt("chat-ctx-overflow", lambda: s.chat([{{"role": "user", "content": "word " * 400}}],
                                                  max_new_tokens=4))
    attempt("detok-bad-id", lambda: s.detokenize([151748]))
    # still works afterwards
    s.reset()
    logits, hidden = s.forward([151644, 872, 198])
    assert logits.shape[0] == 3
    s.chat([{{"role": "user", "content": "Hi"}}], max_new_tokens=2)
    print("STILL-OK", flush=True)
    """
    p = run_isolated(code)
    out = {}
    for line in p.stdout.splitlines():
        if line.startswith("{") and "outcome" in line:
            d = json.loads(line)
            out[d["case"]] = d["outcome"]
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr[-3000:])  # <0: crashed
    for label in ["id-too-large", "id-huge", "id-negative", "empty", "ctx-overflow",
                  "chat-ctx-overflow", "detok-bad-id"]:
        assert out.get(label, "").startswith("raised"), (label, out)
    assert "STILL-OK" in p.stdout
