"""The LLM file and its omni companion as a pair: a missing companion warns, a truncated one is
refused at load (naming the file and the tensor), a companion from another conversion is refused
naming both files (the LLM fingerprint, kept by quantization), files from an older converter load
with a warning, and a truncated LLM's error carries libllama's reason.

Loads run in a child interpreter (conftest.run_isolated) so a crash is a failed test, not a dead
pytest."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import gguf
import pytest

from conftest import _import_convert, run_isolated

FINGERPRINT_KEY = "minicpmo.llm_fingerprint"

# child: load each (label, llm, omni) with warnings recorded; one JSON line per case
LOAD = r"""
import json, warnings
from minicpmo_cpp import OmniSession, MinicpmoError
for label, llm, omni in CASES:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            s = OmniSession(llm, omni_path=omni, n_ctx=256, n_threads=1)
            r = {"outcome": "loaded", "has_omni": s.has_omni, "omni_path": s.omni_path}
        except MinicpmoError as e:
            r = {"outcome": "raised", "msg": str(e)}
    r["warnings"] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    print("CASE " + json.dumps([label, r]), flush=True)
"""


def load_cases(cases):
    """cases: [(label, llm, omni|None)] -> ({label: result}, child's stderr)."""
    code = "CASES = " + repr([(lbl, str(llm), None if o is None else str(o)) for lbl, llm, o in cases]) + LOAD
    p = run_isolated(code, timeout=300)
    assert p.returncode == 0, (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    results = dict(json.loads(line[5:]) for line in p.stdout.splitlines() if line.startswith("CASE "))
    assert len(results) == len(cases), p.stdout
    return results, p.stderr


def key_of(path: Path, key: str):
    f = gguf.GGUFReader(str(path)).fields.get(key)
    return None if f is None else bytes(f.parts[f.data[0]]).decode("utf-8")


def pair_dir(root: Path, name: str, llm: Path, omni: Path | None) -> Path:
    """A folder holding `llm` and, under the name the LLM file gives its companion, `omni`."""
    d = root / name
    d.mkdir()
    shutil.copyfile(llm, d / llm.name)
    if omni is not None:
        shutil.copyfile(omni, d / key_of(llm, "minicpmo.omni_file"))
    return d / llm.name


@pytest.fixture(scope="module")
def other_conversion(tmp_path_factory, qwen2_vocab_gguf):
    """(llm, omni) of another tiny checkpoint (seed 1): same shapes as tiny_f32, other weights."""
    make_tiny = _import_convert(".make_tiny").make_tiny_checkpoint
    convert = _import_convert("").convert_checkpoint
    root = tmp_path_factory.mktemp("other")
    hf = make_tiny(root / "hf", seed=1, vocab_gguf=qwen2_vocab_gguf)
    llm, omni = convert(hf, root / "gguf", outtype="f32", quiet=True)
    return Path(llm), Path(omni)


@pytest.fixture(scope="module")
def old_converter_pair(tmp_path_factory, tiny_hf):
    """The tiny checkpoint written the way converters before the fingerprint wrote it (same writers,
    no fingerprint key)."""
    ckpt = _import_convert(".checkpoint").Checkpoint.load(tiny_hf)
    write_llm = _import_convert(".llm_gguf").write_llm_gguf
    write_omni = _import_convert(".omni_gguf").write_omni_gguf
    out = tmp_path_factory.mktemp("old")
    llm_name, omni_name = "MiniCPM-o-4_5-F32.gguf", "MiniCPM-o-4_5-omni-F32.gguf"
    llm = Path(write_llm(ckpt, out / llm_name, "f32", "MiniCPM-o-4_5", omni_name, quiet=True))
    omni = Path(write_omni(ckpt, out / omni_name, "f32", "MiniCPM-o-4_5", llm_name, quiet=True))
    return llm, omni


# ---------------------------------------------------------------- (a) missing companion


def test_missing_companion_warns_naming_the_file(tmp_path, tiny_f32):
    llm, omni = tiny_f32
    lone = pair_dir(tmp_path, "lone", llm, None)
    looked_for = str(lone.parent / omni.name)
    results, _ = load_cases([("lone", lone, None), ("pair", llm, None)])
    r = results["lone"]
    assert r["outcome"] == "loaded" and not r["has_omni"], r
    assert len(r["warnings"]) == 1 and looked_for in r["warnings"][0] and "text-only" in r["warnings"][0], r
    # the converted pair loads silently
    assert results["pair"] == {"outcome": "loaded", "has_omni": True, "omni_path": str(llm.parent / omni.name),
                               "warnings": []}

    # the C API / CLI path: the same warning on stderr
    cli = shutil.which("minicpmo-cli")
    for model, warned in ((lone, True), (llm, False)):
        res = subprocess.run([cli, "-m", str(model), "-p", "Hi", "-n", "1", "-t", "2", "-c", "256"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert ("minicpmo: warning: " in res.stderr and looked_for in res.stderr) == warned, res.stderr


# ---------------------------------------------------------------- (b) truncated companion


def test_truncated_companion_refused_at_load_naming_the_tensor(tmp_path, tiny_f32):
    llm, omni = tiny_f32
    info = gguf.GGUFReader(str(omni))
    # (name, first byte, end) of every tensor's data, in table order, read by the gguf package
    spans = [(t.name, int(t.data_offset), int(t.data_offset) + int(t.n_bytes)) for t in info.tensors]
    data_start = min(s for _, s, _ in spans)
    data_end = max(e for _, _, e in spans)
    del info
    src = omni.read_bytes()
    cases, expected = [], {}
    # cuts in the tensor data: each is refused naming the first tensor (table order) it cuts into
    for i, cut in enumerate([data_start + 1, (data_start + data_end) // 2, data_end - 1]):
        path = pair_dir(tmp_path, f"cut{i}", llm, None)
        (path.parent / omni.name).write_bytes(src[:cut])
        cases.append((f"cut{i}", path, None))
        expected[f"cut{i}"] = next(name for name, _, end in spans if end > cut)
    # a cut in the header: gguf's reason is quoted
    head = pair_dir(tmp_path, "head", llm, None)
    (head.parent / omni.name).write_bytes(src[:100])
    cases.append(("head", head, None))
    results, stderr = load_cases(cases)
    for label, path, _ in cases[:-1]:
        r = results[label]
        assert r["outcome"] == "raised", r
        assert str(path.parent / omni.name) in r["msg"] and "truncated or corrupt" in r["msg"], r
        assert f"tensor '{expected[label]}'" in r["msg"], (expected[label], r["msg"])
        assert "beyond the end of the file" in r["msg"], r
    r = results["head"]
    assert r["outcome"] == "raised" and str(head.parent / omni.name) in r["msg"], r
    assert "corrupt or truncated GGUF file (" in r["msg"], r  # with gguf's reason in parentheses


def test_corrupt_tensor_offset_refused(tmp_path, tiny_f32):
    """A tensor table entry pointing far past the file (the offset field of the last tensor set to
    2^62) is refused at load, naming the file."""
    llm, omni = tiny_f32
    info = gguf.GGUFReader(str(omni))
    name_bytes = info.tensors[-1].name.encode()
    del info
    data = bytearray(omni.read_bytes())
    # a tensor info is: name (u64 length + bytes), n_dims (u32), dims (u64 each), type (u32), offset (u64)
    at = data.find(len(name_bytes).to_bytes(8, "little") + name_bytes)
    assert at > 0
    n_dims = int.from_bytes(data[at + 8 + len(name_bytes): at + 12 + len(name_bytes)], "little")
    off_pos = at + 8 + len(name_bytes) + 4 + 8 * n_dims + 4
    data[off_pos: off_pos + 8] = (1 << 62).to_bytes(8, "little")
    path = pair_dir(tmp_path, "badoff", llm, None)
    (path.parent / omni.name).write_bytes(bytes(data))
    results, _ = load_cases([("badoff", path, None)])
    r = results["badoff"]
    assert r["outcome"] == "raised" and str(path.parent / omni.name) in r["msg"], r


# ---------------------------------------------------------------- (c) fingerprint


def test_fingerprint_is_written_and_shared_by_the_outtypes(tiny_f32, tiny_f16, other_conversion):
    fp = key_of(tiny_f32[0], FINGERPRINT_KEY)
    assert fp is not None and re.fullmatch(r"[0-9a-f]{64}", fp), fp
    # one checkpoint: the same value in both files and in every outtype's files
    assert key_of(tiny_f32[1], FINGERPRINT_KEY) == fp
    assert key_of(tiny_f16[0], FINGERPRINT_KEY) == fp == key_of(tiny_f16[1], FINGERPRINT_KEY)
    # another checkpoint of the same shapes: another value
    assert key_of(other_conversion[0], FINGERPRINT_KEY) == key_of(other_conversion[1], FINGERPRINT_KEY) != fp


def test_companion_of_another_conversion_refused_naming_both(tmp_path, tiny_f32, tiny_f16, other_conversion):
    llm, omni = tiny_f32
    mixed = pair_dir(tmp_path, "mixed", llm, other_conversion[1])
    mixed_omni = mixed.parent / omni.name
    f16_pair = pair_dir(tmp_path, "f32-with-f16", llm, tiny_f16[1])  # one checkpoint: belongs together
    results, _ = load_cases([
        ("mixed", mixed, None),
        ("explicit", llm, other_conversion[1]),
        ("reverse", other_conversion[0], omni),
        ("f16-companion", f16_pair, None),
    ])
    for label, a, b in (("mixed", mixed_omni, mixed), ("explicit", other_conversion[1], llm),
                        ("reverse", omni, other_conversion[0])):
        r = results[label]
        assert r["outcome"] == "raised", (label, r)
        assert str(a) in r["msg"] and str(b) in r["msg"] and "different conversions" in r["msg"], (label, r)
    r = results["f16-companion"]
    assert r["outcome"] == "loaded" and r["has_omni"] and r["warnings"] == [], r


def test_fingerprint_survives_quantization(tmp_path, tiny_f32, other_conversion):
    from minicpmo_cpp.quantize import quantize_llm_file

    llm, omni = tiny_f32
    q8 = Path(quantize_llm_file(str(llm), "Q8_0", str(tmp_path / "q"), n_threads=2))
    assert key_of(q8, FINGERPRINT_KEY) == key_of(llm, FINGERPRINT_KEY)
    results, _ = load_cases([("q8", q8, None), ("q8-other", q8, other_conversion[1])])
    assert results["q8"]["outcome"] == "loaded" and results["q8"]["has_omni"], results["q8"]
    assert results["q8"]["warnings"] == [], results["q8"]
    assert results["q8-other"]["outcome"] == "raised", results["q8-other"]
    assert "different conversions" in results["q8-other"]["msg"]


def test_files_without_fingerprint_load_with_a_warning(tmp_path, tiny_f32, old_converter_pair):
    old_llm, old_omni = old_converter_pair
    assert key_of(old_llm, FINGERPRINT_KEY) is None and key_of(old_omni, FINGERPRINT_KEY) is None
    new_llm, _ = tiny_f32
    new_with_old = pair_dir(tmp_path, "new-old", new_llm, old_omni)
    results, _ = load_cases([("old", old_llm, None), ("new-llm-old-omni", new_with_old, None)])
    for label, named in (("old", [old_llm, old_omni]), ("new-llm-old-omni", [new_with_old.parent / old_omni.name])):
        r = results[label]
        assert r["outcome"] == "loaded" and r["has_omni"], (label, r)
        assert len(r["warnings"]) == 1 and FINGERPRINT_KEY in r["warnings"][0], (label, r)
        assert all(str(p) in r["warnings"][0] for p in named), (label, r)
    assert str(new_with_old) not in results["new-llm-old-omni"]["warnings"][0]  # the LLM has its key


# ---------------------------------------------------------------- (d) truncated LLM


def test_truncated_llm_error_carries_libllama_reason(tmp_path, tiny_f32):
    llm, _ = tiny_f32
    src = llm.read_bytes()
    path = tmp_path / llm.name
    path.write_bytes(src[: len(src) - 100_000])  # cuts into the last tensors' data
    results, stderr = load_cases([("trunc", path, None)])
    r = results["trunc"]
    assert r["outcome"] == "raised", r
    assert str(path) in r["msg"], r
    assert re.search(r"tensor '[^']+' data is not within the file bounds", r["msg"]), r
    # libllama's lines went into the error instead of being printed as well
    assert "not within the file bounds" not in stderr, stderr


def test_llama_reason_is_captured_per_thread(tmp_path, tiny_f32):
    """Two threads load two differently truncated LLM files at the same time through the C API
    (ctypes releases the GIL): each error quotes its own file's reason, never the other's."""
    llm, _ = tiny_f32
    info = gguf.GGUFReader(str(llm))
    spans = sorted((int(t.data_offset), int(t.data_offset) + int(t.n_bytes), t.name) for t in info.tensors)
    del info
    src = llm.read_bytes()
    # file A ends inside the first tensor, file B inside the last: libllama names different tensors
    paths = []
    for label, (start, end, _) in (("a", spans[0]), ("b", spans[-1])):
        p = tmp_path / f"{label}-{llm.name}"
        p.write_bytes(src[: (start + end) // 2])
        paths.append(str(p))
    code = f"""
    import ctypes, os, threading
    import minicpmo_cpp
    lib = ctypes.CDLL(os.path.join(os.path.dirname(minicpmo_cpp.__file__), "libminicpmo.so"))
    lib.minicpmo_last_error.restype = ctypes.c_char_p
    paths = {paths!r}
    def load(path):
        model = ctypes.c_void_p()
        status = lib.minicpmo_model_load(path.encode(), None, ctypes.byref(model))
        assert status != 0 and not model.value
        return lib.minicpmo_last_error().decode()
    alone = [load(p) for p in paths]
    assert alone[0] != alone[1], alone
    for p, msg in zip(paths, alone):
        assert p in msg and "not within the file bounds" in msg, msg
    errors = []
    def worker(i):
        for _ in range(4):
            errors.append((i, load(paths[i])))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert len(errors) == 8
    for i, msg in errors:
        assert msg == alone[i], (i, msg, alone[i])
    print("PER-THREAD-OK")
    """
    p = run_isolated(code, timeout=300)
    assert p.returncode == 0 and "PER-THREAD-OK" in p.stdout, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])


# ---------------------------------------------------------------- (d) the vocabulary libllama needs


def _edit_string(data: bytearray, start: int, old: bytes, new: bytes) -> None:
    """Overwrites the first length-prefixed GGUF string `old` at or after `start` with `new` (same length)."""
    assert len(old) == len(new)
    at = data.find(len(old).to_bytes(8, "little") + old, start)
    assert at >= 0, old
    data[at + 8: at + 8 + len(old)] = new


def test_vocabulary_libllama_would_abort_on_is_refused(tmp_path, tiny_f32):
    """libllama aborts the process (GGML_ASSERT in llama_vocab::load) on a vocabulary with the same
    string twice (fuzz_llm_gguf/vocab_duplicate_token_abort), and MiniCPM-o's LLM has a byte-level BPE
    ("gpt2") tokenizer: both are refused by name before libllama sees the file."""
    llm, _ = tiny_f32
    reader = gguf.GGUFReader(str(llm))
    tokens_field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(tokens_field.parts[i]) for i in tokens_field.data]
    model_offset = reader.fields["tokenizer.ggml.model"].offset
    del reader
    by_length = {}
    for i, t in enumerate(tokens):
        if len(t) >= 3 and len(t) in by_length:
            first, second = by_length[len(t)], i  # two different entries of one length
            break
        by_length.setdefault(len(t), i)
    data = bytearray(llm.read_bytes())
    _edit_string(data, tokens_field.offset, tokens[second], tokens[first])
    dup = tmp_path / "dup" / llm.name
    dup.parent.mkdir()
    dup.write_bytes(bytes(data))
    data = bytearray(llm.read_bytes())
    _edit_string(data, model_offset, b"gpt2", b"bert")
    bert = tmp_path / "bert" / llm.name
    bert.parent.mkdir()
    bert.write_bytes(bytes(data))
    results, _ = load_cases([("dup", dup, None), ("bert", bert, None)])
    r = results["dup"]
    assert r["outcome"] == "raised", r
    assert str(dup) in r["msg"] and f"(token ids {first} and {second})" in r["msg"], r
    r = results["bert"]
    assert r["outcome"] == "raised", r
    assert str(bert) in r["msg"] and "tokenizer.ggml.model 'bert', expected 'gpt2'" in r["msg"], r
