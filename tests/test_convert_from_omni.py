"""`minicpmo-convert --from-omni-gguf`: the official llama.cpp-omni GGUF set, made from the tiny
checkpoint by llama.cpp-omni's own conversion scripts (tests/official_omni_set.py; Token2Wav files by
our writer, tests/official_token2wav.py), imported, and every stage compared with our own conversion
of the same checkpoint.

Which conversion each stage is compared with, and why that tolerance: the import keeps the official
stored types (F16 matrices of the LLM, vision, audio and TTS blocks; F32 elsewhere), so
  - LLM: the official F16 file holds the same bytes as our F16 conversion -> logits bit for bit;
  - vision / audio / TTS: our F16 conversion differs only where the official file keeps F32 (the
    resampler queries, the audio position table, the TTS's tables, projector and head): within our
    F16-vs-reference tolerances (test_vision_encoder 1e-2, test_audio_encoder 1e-2, test_tts_runtime
    2e-2);
  - Token2Wav: the official files are F32 -> our F32 conversion at its tolerance (test_flow_runtime 1e-4).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from backend import SESSION, tol
from official_omni_set import make_official_set, oracle_dir
from relative_error import rel

pytestmark = pytest.mark.torch  # the oracle scripts need torch / transformers

NAME = "MiniCPM-o-4_5"


@pytest.fixture(scope="module")
def official_set(tmp_path_factory, tiny_hf) -> Path:
    if oracle_dir() is None:
        pytest.fail("the llama.cpp-omni oracle scripts (../shared/oracles/llama.cpp-omni-0788f99) are missing")
    t = time.monotonic()
    out = make_official_set(tiny_hf, tmp_path_factory.mktemp("official"), NAME)
    print(f"oracle scripts: {time.monotonic() - t:.1f} s")
    return out


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


def _cli(*args: str) -> _Run:
    """minicpmo-convert in this process (its main(); a subprocess would re-import everything)."""
    from minicpmo_cpp.convert.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as e:  # argparse usage errors
            rc = int(e.code or 0)
    return _Run(rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def imported(official_set, tiny_hf, tmp_path_factory) -> tuple[Path, Path, str]:
    """(llm, omni, stderr) of the import, the tiny checkpoint's default voice then added."""
    out = tmp_path_factory.mktemp("imported")
    # the tiny resampler (width 64) is narrower than the reference's width // 128 rule allows
    p = _cli("--from-omni-gguf", str(official_set), "-o", str(out), "--tokenizer-config",
             str(tiny_hf / "tokenizer_config.json"), "--resampler-heads", "2")
    assert p.returncode == 0, p.stderr
    llm, omni = (Path(x) for x in p.stdout.split())
    assert llm.name == f"{NAME}-F16.gguf" and omni.name == f"{NAME}-omni-F16.gguf"
    assert "has no voice" in p.stderr and "--add-voice" in p.stderr
    assert "copying LLM tensors: 100%" in p.stderr  # progress shown
    v = _cli("--omni", str(omni), "--add-voice", f"default={tiny_hf / 'assets' / 'token2wav' / 'default_voice.npz'}")
    assert v.returncode == 0, v.stderr
    return llm, omni, p.stderr


def _tensors(path):
    from minicpmo_cpp.convert.omni_set import GGUFTensors

    return GGUFTensors(Path(path))


def test_layout_matches_our_conversion(imported, tiny_f16):
    """Same tensor names, shapes and keys as our conversion; LLM tensors byte for byte ours."""
    llm, omni, _ = imported
    ours, got = _tensors(tiny_f16[1]), _tensors(omni)
    assert {t.name: t.shape for t in got.info.tensors} == {t.name: t.shape for t in ours.info.tensors}
    differ = {k for k in ours.info.kv if got.info.kv.get(k) != pytest.approx(ours.info.kv[k])}
    assert differ == {"minicpmo.llm_fingerprint"}, differ  # another source file, another fingerprint
    assert got.info.kv["minicpmo.llm_file"] == llm.name
    ours_llm, got_llm = _tensors(tiny_f16[0]), _tensors(llm)
    # same tensors (the official converter writes them in another order)
    assert sorted(t.name for t in got_llm.info.tensors) == sorted(t.name for t in ours_llm.info.tensors)
    for t in ours_llm.info.tensors:
        assert got_llm.qtype(t.name) == ours_llm.qtype(t.name)
        assert np.array_equal(np.asarray(got_llm.raw(t.name)), np.asarray(ours_llm.raw(t.name))), t.name
    assert got_llm.info.kv["minicpmo.omni_file"] == omni.name
    assert got_llm.info.kv["minicpmo.llm_fingerprint"] == got.info.kv["minicpmo.llm_fingerprint"]


def test_llm_file_is_the_official_one_rekeyed(imported, official_set):
    llm, _, _ = imported
    off, got = _tensors(official_set / f"{NAME}-F16.gguf"), _tensors(llm)
    added = set(got.info.kv) - set(off.info.kv)
    # the rope base only where the oracle ran under transformers >= 5 and left it out (omni_import.py)
    assert added - {"qwen3.rope.freq_base"} == {"minicpmo.omni_file", "minicpmo.llm_fingerprint"}
    assert got.info.kv["qwen3.rope.freq_base"] == 1e6
    for k, v in off.info.kv.items():
        if k != "general.alignment":
            assert got.info.kv[k] == v, k
    for t in off.info.tensors:
        assert np.array_equal(np.asarray(got.raw(t.name)), np.asarray(off.raw(t.name))), t.name


def test_values_are_the_official_ones(imported, tiny_f32):
    """Every companion tensor against our F32 conversion: tensors the official files hold in F16
    equal our F32 values rounded to F16 (the official converters round the same F32 weights with
    numpy, round-to-nearest-even), and so do the audio file's F32 tensors (convert_apm.py rounds
    every tensor to F16 before widening the small ones back to F32); other F32 ones equal ours up to
    float32 rounding of the folded weight norms (TTS head, HiFT convolutions: the official code folds
    in float32, ours in float64) -> 1e-6 relative per tensor. Both would fail on any mis-mapped,
    transposed or permuted tensor."""
    ours, got = _tensors(tiny_f32[1]), _tensors(imported[1])
    kinds = {"F16": 0, "F32": 0}
    for t in got.info.tensors:
        if t.name.startswith("voice."):
            continue
        want = ours.float32(t.name)
        q = got.qtype(t.name).name
        kinds[q] += 1
        if q == "F16" or (t.name.startswith("a.") and t.name != "a.mel_filters"):
            assert np.array_equal(got.float32(t.name), want.astype(np.float16).astype(np.float32)), t.name
        else:
            assert rel(got.float32(t.name), want) <= 1e-6, (t.name, rel(got.float32(t.name), want))
    print(f"companion tensors kept as F16: {kinds['F16']}, F32: {kinds['F32']}")
    assert kinds["F16"] > 0 and kinds["F32"] > 0


@pytest.fixture(scope="module")
def session_pair(imported, tiny_f16):
    from minicpmo_cpp import OmniSession

    def make(path):
        return OmniSession(str(path), n_threads=2, **SESSION, n_ctx=512, seed=0, kv_cache_type="f32")

    return make(imported[0]), make(tiny_f16[0])


def test_vision_and_audio_features(session_pair):
    from minicpmo_cpp.signals import speechlike

    got, ours = session_pair
    y, x = np.mgrid[0:160, 0:224]
    img = np.stack([128 + 100 * np.sin(x / 17.0), 128 + 100 * np.cos(y / 23.0), 128 + 60 * np.sin((x + y) / 31.0)],
                   -1).astype(np.uint8)
    err_v = rel(got._session.encode_image(img), ours._session.encode_image(img))
    pcm = speechlike(2.0, seed=3)
    err_a = rel(got._session.encode_audio(pcm), ours._session.encode_audio(pcm))
    print(f"vision features rel {err_v:.2e}, audio embeddings rel {err_a:.2e}")
    assert err_v <= tol(1e-2) and err_a <= tol(1e-2), (err_v, err_a)


def test_llm_logits_bit_for_bit(session_pair):
    got, ours = session_pair
    ids = ours.tokenize(ours.apply_chat_template([{"role": "user", "content": "Say something."}]))
    lg, hg = got._session.forward(ids)
    lo, ho = ours._session.forward(ids)
    # the same weight bytes through the same kernels: identical (on a device: its float floor)
    assert rel(lg, lo) <= tol(0.0) and rel(hg, ho) <= tol(0.0), (rel(lg, lo), rel(hg, ho))


def _teacher_forced_logits(h, rows, codes) -> np.ndarray:
    """TTS logits of every greedy step: the chat layout's condition rows at 0..L-1, then each code."""
    h.tts_reset()
    out = [h.tts_forward_rows(rows, list(range(len(rows))))[0]]
    for i, c in enumerate(codes[:-1]):
        out.append(h.tts_forward_code(int(c), len(rows) + i)[0])
    return np.stack(out).astype(np.float64)


CHAT = dict(temperature=0.8, penalty=1.05, window=16)  # minicpmo.tts.chat.* keys of both companions


def _chat_processed(logits: np.ndarray, codes: list[int], eos: int) -> np.ndarray:
    """The chat sampling's view of each step's logits before the greedy pick (csrc/sampling/
    tts_sampler.cpp): divided by the temperature; from the second step on, the repetition penalty
    (penalty ** count over the last `window` codes); EOS masked (every step here is under
    min_new_tokens 50). Its top-p / top-k masks keep the best token, so they are left out."""
    out = logits / CHAT["temperature"]
    for i in range(1, len(out)):
        recent = codes[max(0, i - CHAT["window"]):i]
        for c in set(recent):
            f = CHAT["penalty"] ** recent.count(c)
            out[i, c] = out[i, c] / f if out[i, c] > 0 else out[i, c] * f
        out[i, eos] = -np.inf
    out[0, eos] = -np.inf
    return out


def test_tts_logits_and_tokens(session_pair):
    """The TTS's logits along our model's greedy speech tokens (teacher-forced into both) within the
    F16 tolerance, and the greedy tokens themselves identical wherever our choice is not a near tie:
    a step whose top-2 margin (after the chat processing, on the same history) exceeds twice the two
    models' largest processed-logit difference there cannot flip, so the sequences must agree up to the first step that is that close (on the
    tiny model measured: one such step (19), every token equal all the same)."""
    from minicpmo_cpp import _testing
    from tts_inputs import text_chunk

    got, ours = (_testing.hooks(s) for s in session_pair)
    ids, hidden = text_chunk(12, 3)
    tok_g, _ = got.tts_generate_chat(ids.tolist(), hidden, max_new_tokens=25)
    tok_o, _ = ours.tts_generate_chat(ids.tolist(), hidden, max_new_tokens=25)
    rows = np.concatenate([ours.tts_condition_rows(ids.tolist(), hidden), ours.tts_text_rows([151692, 151687])])
    lg = _teacher_forced_logits(got, rows, tok_o)
    lo = _teacher_forced_logits(ours, rows, tok_o)
    err = rel(lg, lo)
    eos = lo.shape[1] - 1
    po = _chat_processed(lo, tok_o, eos)
    assert list(np.argmax(po, axis=1)) == tok_o  # the layout and processing above are the runtime's
    top2 = np.sort(po, axis=1)[:, -2:]
    pg = _chat_processed(lg, tok_o, eos)  # the imported model's view along the same history
    finite = np.isfinite(po)  # the masked EOS is -inf in both
    slack = 2 * np.max(np.abs(np.where(finite, pg, 0.0) - np.where(finite, po, 0.0)), axis=1)
    near = np.nonzero(top2[:, 1] - top2[:, 0] <= slack)[0]
    upto = int(near[0]) if near.size else len(tok_o)
    same = sum(a == b for a, b in zip(tok_g, tok_o))
    print(f"TTS logits rel {err:.2e} (teacher-forced); greedy speech tokens equal {same}/{len(tok_o)}, "
          f"near ties at steps {near.tolist()}")
    assert err <= tol(2e-2), err
    assert tok_g[:upto] == tok_o[:upto]
    if not near.size:
        assert tok_g == tok_o


def test_token2wav_against_our_f32(imported, tiny_f32):
    """The official Token2Wav is F32: the flow's mel and HiFT's audio equal our F32 conversion's
    within the F32 tolerance of test_flow_runtime (1e-4)."""
    from minicpmo_cpp import _testing

    tokens = [int(t) for t in np.random.default_rng(0).integers(0, 6561, 20)]
    mel_g = _testing.Flow(str(imported[1]), n_threads=2, seed=0).inference(tokens)
    mel_o = _testing.Flow(str(tiny_f32[1]), n_threads=2, seed=0).inference(tokens)
    err_mel = rel(mel_g, mel_o)
    mel = np.asarray(mel_o, np.float32)
    f0 = _testing.HiftVocoder(str(tiny_f32[1]), n_threads=2, seed=0).f0(mel)
    wav_g = _testing.HiftVocoder(str(imported[1]), n_threads=2, seed=0).forward(mel, f0=f0)[0]
    wav_o = _testing.HiftVocoder(str(tiny_f32[1]), n_threads=2, seed=0).forward(mel, f0=f0)[0]
    err_wav = rel(wav_g, wav_o)
    print(f"flow mel rel {err_mel:.2e}, HiFT audio rel {err_wav:.2e}")
    assert err_mel <= tol(1e-4) and err_wav <= tol(1e-4), (err_mel, err_wav)


def test_spoken_reply_through_the_import(imported):
    """The whole speaking pipeline runs from the imported pair (with the voice added afterwards)."""
    from minicpmo_cpp import OmniSession

    s = OmniSession(str(imported[0]), n_threads=2, **SESSION, n_ctx=512, seed=0)
    r = s.chat([{"role": "user", "content": "Say something."}], do_sample=False, max_new_tokens=4,
               generate_audio=True, max_speech_tokens=25)
    assert r.audio is not None and r.audio.size > 0 and np.all(np.isfinite(r.audio))


# ------------------------------------------------------------------------------------------------
# bad input: clear errors naming the file
# ------------------------------------------------------------------------------------------------

def _copy_set(official_set: Path, dst: Path) -> Path:
    shutil.copytree(official_set, dst)
    return dst


def test_quantized_llm_copied_as_is(official_set, tiny_f16, tmp_path):
    """The release ships the LLM in several quantizations (llama-quantize output): with more than one
    beside the components the import asks which; the chosen file's blocks are copied unchanged, and
    the model computes what our F16 conversion quantized the same way computes, bit for bit."""
    from minicpmo_cpp import OmniSession

    d = _copy_set(official_set, tmp_path / "set")
    q = subprocess.run(["minicpmo-quantize", str(d / f"{NAME}-F16.gguf"), "Q4_K_M", "-o", str(d), "-q"],
                       capture_output=True, text=True, timeout=120)
    assert q.returncode == 0, q.stderr
    official_q = d / f"{NAME}-Q4_K_M.gguf"
    p = _cli("--from-omni-gguf", str(d), "-o", str(tmp_path / "o"), "--resampler-heads", "2", "-q")
    assert p.returncode == 1 and "several LLM files" in p.stderr and "--llm" in p.stderr, p.stderr
    p = _cli("--from-omni-gguf", str(d), "--llm", str(official_q), "-o", str(tmp_path / "o"),
             "--resampler-heads", "2", "-q")
    assert p.returncode == 0, p.stderr
    llm = tmp_path / "o" / f"{NAME}-Q4_K_M.gguf"
    assert (tmp_path / "o" / f"{NAME}-omni-Q4_K_M.gguf").is_file()
    src, got = _tensors(official_q), _tensors(llm)
    assert {src.qtype(t.name).name for t in src.info.tensors} - {"F32", "F16"}  # block-quantized tensors
    for t in src.info.tensors:
        assert got.qtype(t.name) == src.qtype(t.name)
        assert np.array_equal(np.asarray(got.raw(t.name)), np.asarray(src.raw(t.name))), t.name
    ours = subprocess.run(["minicpmo-quantize", str(tiny_f16[0]), "Q4_K_M", "-o", str(tmp_path / "ours"), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert ours.returncode == 0, ours.stderr
    ids = list(range(100, 116))
    a = OmniSession(str(llm), n_threads=2, **SESSION, n_ctx=256, seed=0)._session.forward(ids)[0]
    b = OmniSession(str(tmp_path / "ours" / f"{NAME}-Q4_K_M.gguf"), n_threads=2, **SESSION, n_ctx=256,
                    seed=0)._session.forward(ids)[0]
    assert rel(a, b) <= tol(0.0), rel(a, b)  # same blocks, same kernels


def test_missing_folder_and_llm(tmp_path):
    p = _cli("--from-omni-gguf", str(tmp_path / "nope"), "-o", str(tmp_path / "o"))
    assert p.returncode == 1 and "not found" in p.stderr and "nope" in p.stderr
    (tmp_path / "empty").mkdir()
    p = _cli("--from-omni-gguf", str(tmp_path / "empty"), "-o", str(tmp_path / "o"))
    assert p.returncode == 1 and "no LLM GGUF" in p.stderr


def test_truncated_and_corrupt_files(official_set, tmp_path):
    d = _copy_set(official_set, tmp_path / "set")
    audio = next((d / "audio").glob("*.gguf"))
    audio.write_bytes(audio.read_bytes()[:-1000])
    p = _cli("--from-omni-gguf", str(d), "-o", str(tmp_path / "o"), "--resampler-heads", "2")
    assert p.returncode == 1 and "truncated" in p.stderr and audio.name in p.stderr, p.stderr
    audio.write_bytes(b"not a gguf file at all")
    p = _cli("--from-omni-gguf", str(d), "-o", str(tmp_path / "o"), "--resampler-heads", "2")
    assert p.returncode == 1 and audio.name in p.stderr and "GGUF" in p.stderr, p.stderr
    assert not (tmp_path / "o" / f"{NAME}-F16.gguf").exists()  # nothing half-written


def test_missing_tensor_and_missing_parts(official_set, tmp_path):
    d = _copy_set(official_set, tmp_path / "set")
    for f in (d / "token2wav-gguf").glob("*.gguf"):
        f.unlink()
    (d / "audio" / f"{NAME}-audio-F16.gguf").unlink()
    p = _cli("--from-omni-gguf", str(d), "-o", str(tmp_path / "o"), "--resampler-heads", "2")
    assert p.returncode == 0, p.stderr
    assert "no audio file" in p.stderr and "no vocoder" in p.stderr
    comps = _tensors(tmp_path / "o" / f"{NAME}-omni-F16.gguf").info.kv["minicpmo.components"]
    assert comps == ["vision", "tts"]
    p = _cli("--from-omni-gguf", str(d), "-o", str(tmp_path / "o2"))
    assert p.returncode == 1 and "--resampler-heads" in p.stderr  # tiny width: no heads to derive


def test_companion_only(official_set, imported, tmp_path):
    """--companion-only writes no LLM copy: the companion names the official LLM file, which loads with
    omni_path= (warning: no fingerprint to check). An LLM file without its rope base is refused (the
    tiny set's, made under transformers >= 5); a file with it (here: the re-keyed import, standing
    for one made under transformers 4) works and computes what the full import computes."""
    from minicpmo_cpp import OmniSession

    p = _cli("--from-omni-gguf", str(official_set), "-o", str(tmp_path / "a"), "--resampler-heads", "2",
             "--companion-only", "-q")
    assert p.returncode == 1 and "qwen3.rope.freq_base" in p.stderr and "--companion-only" in p.stderr, p.stderr
    d = _copy_set(official_set, tmp_path / "set")
    (d / f"{NAME}-F16.gguf").unlink()
    shutil.copy2(imported[0], d / f"{NAME}-F16.gguf")
    p = _cli("--from-omni-gguf", str(d), "-o", str(tmp_path / "o"), "--resampler-heads", "2", "--companion-only",
             "-q")
    assert p.returncode == 0, p.stderr
    llm, omni = (Path(x) for x in p.stdout.split())
    assert llm == d / f"{NAME}-F16.gguf" and sorted(x.name for x in (tmp_path / "o").iterdir()) == [omni.name]
    info = _tensors(omni).info.kv
    assert "minicpmo.llm_fingerprint" not in info and (omni.parent / info["minicpmo.llm_file"]).resolve() == llm
    with pytest.warns(UserWarning, match="fingerprint"):
        s = OmniSession(str(llm), omni_path=str(omni), n_threads=2, **SESSION, n_ctx=256, seed=0)
    full = OmniSession(str(imported[0]), n_threads=2, **SESSION, n_ctx=256, seed=0)
    ids = list(range(100, 116))
    assert rel(s._session.forward(ids)[0], full._session.forward(ids)[0]) <= tol(0.0)
