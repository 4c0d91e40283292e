"""The 16 LLM sizes through libllama's quantizer (minicpmo-quantize): each file loads and generates,
sizes follow the expected order, the companion stays beside them, bad requests are refused.

K-quants need rows that are multiples of 256, so this uses a 256-wide variant of the tiny LLM
(the 64-wide one would silently fall back to legacy types for every tensor)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession
from minicpmo_cpp.convert.gguf_read import read_gguf_info
from minicpmo_cpp.quantize import QUANT_TYPES, quantize_llm_file

WIDE_LLM = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64, intermediate_size=512)

# Largest first by nominal bits per weight; neighbours joined by "=" have equal nominal size
# (BF16/F16 16 bpw; Q5_K and Q5_0 blocks are both 5.5 bpw), all others must strictly shrink.
EXPECTED_ORDER = ["BF16=F16", "Q8_0", "Q6_K", "Q5_1", "Q5_K_M", "Q5_K_S=Q5_0", "Q4_1", "Q4_K_M", "Q4_K_S", "Q4_0",
                  "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K"]


@pytest.fixture(scope="module")
def wide_f16(tmp_path_factory, qwen2_vocab_gguf):
    from minicpmo_cpp.convert import convert_checkpoint
    from minicpmo_cpp.convert.make_tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("wide")
    hf = make_tiny_checkpoint(root / "hf", seed=3, vocab_gguf=qwen2_vocab_gguf, llm_dims=WIDE_LLM)
    llm, omni = convert_checkpoint(hf, root / "gguf", outtype="f16", quiet=True)
    return Path(llm), Path(omni)


@pytest.fixture(scope="module")
def all_sizes(wide_f16, tmp_path_factory):
    """Runs the console script once for all 16 sizes into a separate folder."""
    out = tmp_path_factory.mktemp("quantized")
    exe = shutil.which("minicpmo-quantize")
    assert exe, "minicpmo-quantize must be on PATH after pip install"
    res = subprocess.run([exe, str(wide_f16[0]), "--all", "-o", str(out), "-t", "2"], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    assert "[16/16] Q2_K" in res.stderr  # progress is shown
    return out


def test_sixteen_types_are_offered():
    assert len(QUANT_TYPES) == 16
    assert set(QUANT_TYPES) == {t for group in EXPECTED_ORDER for t in group.split("=")}


def test_each_size_loads_and_generates(all_sizes, wide_f16):
    for qtype in QUANT_TYPES:
        path = all_sizes / f"MiniCPM-o-4_5-{qtype}.gguf"
        assert path.is_file(), qtype
        info = read_gguf_info(path)
        assert info.kv["general.architecture"] == "qwen3"
        assert info.kv["minicpmo.omni_file"] == wide_f16[1].name  # the companion key survives
        s = OmniSession(str(path), n_ctx=256, n_threads=2)
        assert s.has_omni, qtype  # the companion was copied beside the quantized files
        reply = s.chat([{"role": "user", "content": "Hi"}], do_sample=False, max_new_tokens=4)
        assert len(s.last_generated_ids) >= 1, qtype
        assert isinstance(reply, str)


def test_sizes_follow_expected_order(all_sizes):
    size = {t: (all_sizes / f"MiniCPM-o-4_5-{t}.gguf").stat().st_size for t in QUANT_TYPES}
    print({t: round(v / 2**20, 2) for t, v in size.items()})
    groups = [g.split("=") for g in EXPECTED_ORDER]
    for g in groups:
        assert len({size[t] for t in g}) == 1, g  # equal nominal size -> equal file size
    for bigger, smaller in zip(groups, groups[1:]):
        assert size[bigger[0]] > size[smaller[0]], (bigger, smaller)


def test_k_quants_really_quantize_layers(all_sizes):
    """Guards against silent fallbacks: a layer matrix carries the type the name promises."""
    expect = {"Q2_K": {"Q2_K", "Q3_K", "Q4_K"}, "Q4_K_M": {"Q4_K", "Q6_K"}, "Q6_K": {"Q6_K"}, "Q8_0": {"Q8_0"},
              "Q4_0": {"Q4_0"}, "BF16": {"BF16"}}
    for qtype, allowed in expect.items():
        info = read_gguf_info(all_sizes / f"MiniCPM-o-4_5-{qtype}.gguf")
        t = gguf.GGMLQuantizationType(info.tensor("blk.0.ffn_up.weight").ggml_type).name
        assert t in allowed, (qtype, t)


def test_bad_requests(wide_f16, tmp_path):
    with pytest.raises(MinicpmoError, match="unknown quantization type 'Q9_9'"):
        quantize_llm_file(str(wide_f16[0]), "Q9_9", str(tmp_path))
    with pytest.raises(MinicpmoError, match="architecture 'minicpmo-omni'"):
        quantize_llm_file(str(wide_f16[1]), "Q8_0", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        quantize_llm_file(str(tmp_path / "missing.gguf"), "Q8_0", str(tmp_path))
    with pytest.raises(MinicpmoError, match="already is F16"):
        quantize_llm_file(str(wide_f16[0]), "F16")
    res = subprocess.run([sys.executable, "-m", "minicpmo_cpp.quantize.cli", str(wide_f16[0]), "Q7"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "unknown type(s) Q7" in res.stderr


def _limit_file_size(limit: int):
    """preexec_fn: files larger than `limit` bytes cannot be written (write() fails with EFBIG, as
    on a full disk); SIGXFSZ is ignored so the process sees the error instead of being killed."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_failed_write_names_the_output_and_leaves_no_file(wide_f16, tmp_path):
    # The output cannot grow past 64 KiB (the Q8_0 file is ~1 MB): libllama's write fails mid-file.
    res = subprocess.run([sys.executable, "-m", "minicpmo_cpp.quantize.cli", str(wide_f16[0]), "Q8_0",
                          "-o", str(tmp_path), "-q"], capture_output=True, text=True, timeout=300,
                         preexec_fn=_limit_file_size(64 << 10))
    assert res.returncode == 1, res.stderr
    out = tmp_path / "MiniCPM-o-4_5-Q8_0.gguf"
    assert f"minicpmo-quantize: error: quantizing '{wide_f16[0]}' to Q8_0 into '{out}.part' failed" in res.stderr
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []  # neither the partial file nor a finished-looking one stays
