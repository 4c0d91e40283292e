"""The C API's safety contract (tests/c/safety_demo.c, strict C11 with pthreads): parameters out of
range are refused naming the parameter, its value and the range; two threads on one session get the
single-threaded reply or MINICPMO_ERR_BUSY; a callback calling into its own session gets
MINICPMO_ERR_BUSY; finish reasons ("length", "context", "cancelled") come back with MINICPMO_OK."""

from __future__ import annotations

import re
import subprocess

import pytest

from c_demos import build_c_demo


@pytest.fixture(scope="module")
def safety_run(tmp_path_factory, tiny_f32):
    exe = build_c_demo("safety_demo", tmp_path_factory.mktemp("capi_safety"), extra_libs=("-pthread",))
    res = subprocess.run([str(exe), str(tiny_f32[0]), "15"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"rc {res.returncode}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.mark.parametrize("case, message", [
    ("n_gpu_layers=-2", "n_gpu_layers must be -1 (all) or >= 0, got -2"),
    ("n_batch=0", "n_batch must be in [8, 65536], got 0"),
    ("n_batch=7", "n_batch must be in [8, 65536], got 7"),
    ("n_batch=65537", "n_batch must be in [8, 65536], got 65537"),
    ("n_ctx=0", "n_ctx must be in [16, 40960] (16 to the model's training context), got 0"),
    ("n_ctx=15", "n_ctx must be in [16, 40960]"),
    ("n_ctx=10000000", "got 10000000"),
    ("n_threads=-1", "n_threads must be in [0, 512] (0 = all cores), got -1"),
    ("n_threads=513", "got 513"),
    ("n_threads=1000", "got 1000"),
    ("compute_type=fp8", "compute_type 'fp8': expected auto, f32, bf16 or int8"),
    ("max_new_tokens=-1", "max_new_tokens must be >= 0, got -1"),
    ("top_p=0", "top_p must be in (0, 1]"),
    ("temperature=-1", "temperature must be >= 0"),
])
def test_parameters_out_of_range_are_refused(safety_run, case, message):
    m = re.search(rf"^PARAM {re.escape(case)} (.*)$", safety_run, re.M)
    assert m, safety_run
    assert m.group(1).startswith("invalid argument ") and message in m.group(1), m.group(1)


def test_smallest_valid_settings_work(safety_run):
    assert re.search(r"^PARAM valid ok $", safety_run, re.M), safety_run


def test_two_threads_on_one_session(safety_run):
    m = re.search(r"^THREADS ok=(\d+) busy=(\d+) mismatch=(\d+) other=(\d+)$", safety_run, re.M)
    ok, busy, mismatch, other = (int(v) for v in m.groups())
    assert (mismatch, other) == (0, 0), safety_run
    assert ok + busy == 30 and ok > 0 and busy > 0, safety_run


def test_callback_calling_its_own_session_is_busy(safety_run):
    # the inner call is refused; the outer chat stops because the callback returned false
    assert re.search(r"^REENTRY session busy ok cancelled$", safety_run, re.M), safety_run


def test_finish_reasons(safety_run):
    finishes = re.findall(r"^FINISH (.*)$", safety_run, re.M)
    assert finishes[0] == "length ok"
    # the context filled: the reply came back (ok) and the cache is full
    assert finishes[1] == "context ok 256", finishes
