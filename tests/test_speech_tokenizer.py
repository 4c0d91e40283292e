"""The native S3 speech tokenizer v2 (csrc/voice/speech_tokenizer, `_testing.SpeechTokenizer`) against
onnxruntime on an ONNX export of PyPI s3tokenizer's S3TokenizerV2 (random weights, width 256, the
release's 6 layers and 64-wide heads), converted into the companion by the converter path the
release's file takes (convert/speech_tokenizer_gguf.py via convert_checkpoint's token2wav folder).

Ties at FSQ boundaries: an id is 8 roundings of v = 0.999 tanh(.) to {-1, 0, 1}, each flipping where
|v| crosses 0.5. Two float32 paths (ggml's kernels, onnxruntime's) differ by ~1e-5 in v after six
layers, so a value within that of 0.5 can round either way, differently on different CPUs. Frames
whose 8 values all lie more than TIE_MARGIN from +-0.5 must agree exactly; over all frames the
agreement must reach 99.5% (the near-tie frames are a small fraction, see the measured figures).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import _import_convert
from minicpmo_cpp.signals import speechlike
from s3tokenizer_export import export_onnx, make_model, reference_values

pytestmark = pytest.mark.torch

frontend = _import_convert(".voice_frontend")
stok_gguf = _import_convert(".speech_tokenizer_gguf")
ConversionError = _import_convert("").ConversionError
convert_checkpoint = _import_convert("").convert_checkpoint

# over 100x the largest |v| difference measured between the paths (8.5e-6), so no frame outside it
# can flip on any CPU; 0-12 frames per signal fall inside it
TIE_MARGIN = 1e-3
SIGNALS = [(1.0, 11), (4.5, 12), (9.0, 13), (15.0, 14)]  # (seconds, seed): 1-15 s, a voice prompt's range


@pytest.fixture(scope="module")
def stok(tmp_path_factory, tiny_hf):
    """(torch model, ONNX path, {outtype: omni path}): the export in a copy of the tiny token2wav folder,
    converted with the tiny checkpoint as f32 and f16."""
    model = make_model()
    d = tmp_path_factory.mktemp("stok")
    t2w = d / "token2wav"
    shutil.copytree(Path(tiny_hf) / "assets" / "token2wav", t2w)
    onnx_path = export_onnx(model, t2w / "speech_tokenizer_v2_25hz.onnx")
    omni = {}
    for outtype in ("f32", "f16"):
        _, omni[outtype] = convert_checkpoint(tiny_hf, d / outtype, outtype=outtype, quiet=True, token2wav_dir=t2w)
    return model, onnx_path, omni


@pytest.fixture(scope="module")
def native(stok):
    from minicpmo_cpp import _testing

    return {k: _testing.SpeechTokenizer(str(p)) for k, p in stok[2].items()}


@pytest.fixture(scope="module")
def ort_session(stok):
    import onnxruntime as ort

    return ort.InferenceSession(str(stok[1]), providers=["CPUExecutionProvider"])


def _ort_ids(sess, mel: np.ndarray) -> np.ndarray:
    out = sess.run(None, {"feats": mel[None], "feats_length": np.array([mel.shape[1]], np.int32)})[0]
    return np.asarray(out).reshape(-1).astype(np.int64)


def test_companion_keys_and_storage(stok):
    from gguf import GGMLQuantizationType as Q, GGUFReader

    for outtype, path in stok[2].items():
        r = GGUFReader(path)
        assert "speech_tokenizer" in r.fields["minicpmo.components"].contents()
        key = lambda k: r.fields["minicpmo.speech_tokenizer." + k].contents()  # noqa: E731
        assert (key("n_embd"), key("n_layer"), key("n_head"), key("n_ff"), key("n_mel")) == (256, 6, 4, 1024, 128)
        assert (key("fsmn_kernel"), key("fsq_dim"), key("fsq_levels")) == (31, 8, 3)
        assert abs(key("fsq_scale") - 0.999) < 1e-7  # read from the graph's Mul after Tanh
        tensors = {t.name: t for t in r.tensors if t.name.startswith("stok.")}
        assert len(tensors) == 4 + 16 * 6 + 2 + 1
        matrix = Q.F32 if outtype == "f32" else Q.F16
        for name, t in tensors.items():
            vector = len(t.shape) == 1 or name.endswith("fsmn.weight") or name == "stok.mel_filters"
            assert t.tensor_type == (Q.F32 if vector else matrix), name


def test_log_mel_matches_numpy(native):
    """C++ front end vs convert/voice_frontend.whisper_log_mel (both float64 inside, rounded once):
    atol 1e-4 is the brief's bound; they differ only by FFT rounding (~1e-6 measured)."""
    for seconds, seed in SIGNALS[:2] + [(0.05, 3)]:
        x = speechlike(seconds, seed)
        got = native["f32"].log_mel(x)
        want = frontend.whisper_log_mel(x)
        assert got.shape == want.shape == (128, len(x) // 160)
        assert np.max(np.abs(got - want)) < 1e-4


@pytest.mark.parametrize("seconds,seed", SIGNALS)
def test_ids_match_onnxruntime(stok, native, ort_session, seconds, seed):
    model = stok[0]
    x = speechlike(seconds, seed)
    mel = frontend.whisper_log_mel(x)
    want = _ort_ids(ort_session, mel)
    ids, values = native["f32"].tokenize(x, 2)
    assert ids.shape == want.shape == ((mel.shape[1] - 1) // 2 // 2 + 1,)
    # the export computes what the unpatched torch model computes: its FSQ values, rounded, give its ids
    ref = reference_values(model, mel)
    # float32 paths through 6 layers: 2e-4 is ~20x the measured max difference (8.5e-6)
    assert np.max(np.abs(values - ref)) < 2e-4
    near_tie = np.any(np.abs(np.abs(values) - 0.5) < TIE_MARGIN, axis=1)
    same = ids == want
    assert np.all(same[~near_tie]), f"{np.count_nonzero(~same & ~near_tie)} frames away from FSQ ties differ"
    assert same.mean() >= 0.995, f"{same.mean():.4f} agreement ({np.count_nonzero(near_tie)} near-tie frames)"
    levels = np.rint(values).astype(int)
    print(f"{seconds} s: {same.mean():.4f} of {same.size} frames agree, {np.count_nonzero(near_tie)} near ties, "
          f"max |v - torch| {np.max(np.abs(values - ref)):.2e}, {np.unique(want).size} distinct ids")
    # the codes vary (a stuck FSQ dimension would hide mapping errors): every dimension takes 2+ levels
    # and there are many distinct ids
    assert all(np.unique(levels[:, i]).size >= 2 for i in range(levels.shape[1]))
    assert np.unique(want).size >= min(20, want.size // 2)


def test_f16_agreement(stok, native, ort_session):
    """F16 matrices (the default file type) move the FSQ values more than F32 does, so frames nearer a
    boundary can flip: 95% bounds a broken F16 path (which flips most frames); the measured agreement
    and value error are printed (the report's figures)."""
    agree, total, err = 0, 0, 0.0
    for seconds, seed in SIGNALS[1:3]:
        x = speechlike(seconds, seed)
        mel = frontend.whisper_log_mel(x)
        want = _ort_ids(ort_session, mel)
        ids, values = native["f16"].tokenize(x, 2)
        agree += int(np.count_nonzero(ids == want))
        total += want.size
        err = max(err, float(np.max(np.abs(values - reference_values(stok[0], mel)))))
    print(f"F16 speech tokenizer: {agree / total:.4f} of {total} frames agree with onnxruntime, "
          f"max |v - torch| {err:.2e}")
    assert agree / total >= 0.95


def test_bad_audio_is_refused(native):
    from minicpmo_cpp import MinicpmoError

    t = native["f32"]
    with pytest.raises(MinicpmoError, match="the audio is empty"):
        t.tokenize(np.zeros(0, np.float32))
    with pytest.raises(MinicpmoError, match="too short"):
        t.tokenize(np.zeros(150, np.float32))
    with pytest.raises(MinicpmoError, match=r"30\.01 s of audio is longer than the tokenizer's 30-s window"):
        t.tokenize(np.zeros(480160, np.float32))
    x = speechlike(1.0, 5)
    x[77] = np.nan
    with pytest.raises(MinicpmoError, match="sample 77 is NaN"):
        t.tokenize(x)
    ids, _ = t.tokenize(speechlike(30.0, 6)[:480000])  # exactly the 30-s window is accepted
    assert ids.shape == (750,)


def test_missing_component_is_named(tiny_f16):
    from minicpmo_cpp import MinicpmoError, _testing

    with pytest.raises(MinicpmoError, match="speech_tokenizer"):
        _testing.SpeechTokenizer(str(tiny_f16[1]))


def _onnx_model(stok):
    import onnx

    return onnx.load(str(stok[1]))


def _release_like(model):
    """The release's layout (s3tokenizer's onnx2torch reads it): initializers under generated names
    and the FSQ projection as MatMul (D, 8) + Add instead of the export's Gemm."""
    from onnx import helper, numpy_helper

    g = model.graph
    renames = {t.name: f"onnx::Init_{i}" for i, t in enumerate(g.initializer)}
    for t in g.initializer:
        t.name = renames[t.name]
    for n in g.node:
        n.input[:] = [renames.get(x, x) for x in n.input]
    k, gemm = next((k, n) for k, n in enumerate(g.node) if n.op_type == "Gemm")
    inits = {t.name: t for t in g.initializer}
    w = numpy_helper.to_array(inits[gemm.input[1]])
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "onnx::MatMul_9999"))
    matmul = helper.make_node("MatMul", [gemm.input[0], "onnx::MatMul_9999"], ["proj_mm"], name="/MatMul_1")
    add = helper.make_node("Add", [gemm.input[2], "proj_mm"], [gemm.output[0]], name="/Add_1")
    del g.node[k]
    g.node.insert(k, add)
    g.node.insert(k, matmul)
    return model


def test_mapper_reads_the_release_layout(stok, native, ort_session, tmp_path):
    """Generated names and MatMul + Add for the projection map to the same tensors; the rewritten
    graph still computes the same ids (onnxruntime) away from FSQ near-ties (Gemm and MatMul + Add
    may round differently), so the rewrite is a faithful stand-in."""
    import onnx
    import onnxruntime as ort

    ours = stok_gguf.map_speech_tokenizer(Path("a.onnx"), _onnx_model(stok))
    release = _release_like(_onnx_model(stok))
    onnx.save(release, tmp_path / "release_like.onnx")
    theirs = stok_gguf.map_speech_tokenizer(Path("b.onnx"), release)
    assert [t.gguf for t in ours.tensors] == [t.gguf for t in theirs.tensors]
    a, b = stok_gguf._OnnxSource(ours.path, ours.tensors), stok_gguf._OnnxSource(theirs.path, theirs.tensors)
    for ta, tb in zip(ours.tensors, theirs.tensors):
        assert np.array_equal(a.float32(a.label(ta)), b.float32(b.label(tb))), ta.gguf
    assert any(t.param.proto.name.startswith("onnx::") for t in theirs.tensors)
    x = speechlike(3.0, 21)
    mel = frontend.whisper_log_mel(x)
    sess = ort.InferenceSession(str(tmp_path / "release_like.onnx"), providers=["CPUExecutionProvider"])
    _, values = native["f32"].tokenize(x)
    away = ~np.any(np.abs(np.abs(values) - 0.5) < TIE_MARGIN, axis=1)
    assert np.count_nonzero(away) > 0.9 * away.size
    assert np.array_equal(_ort_ids(sess, mel)[away], _ort_ids(ort_session, mel)[away])


def test_mapper_names_the_first_node_that_does_not_fit(stok):
    m = _onnx_model(stok)
    nodes = list(m.graph.node)
    # drop layer 1's value bias: the FSMN convolution then comes where the bias was expected
    i = next(k for k, n in enumerate(nodes) if n.name == "/encoder/blocks.1/attn/value/Add")
    del m.graph.node[i]
    with pytest.raises(ConversionError, match=r"node #\d+ '/encoder/blocks.1/attn/fsmn_block/Conv' \(Conv\).*"
                                              r"expected layer 1 attn_v bias: Add reading \(256,\)"):
        stok_gguf.map_speech_tokenizer(Path("x.onnx"), m)

    m = _onnx_model(stok)
    w = next(t for t in m.graph.initializer if tuple(t.dims) == (256, 1, 31))
    w.dims[:] = [256, 31]  # an FSMN kernel of the wrong rank
    with pytest.raises(ConversionError, match=r"blocks.\d/attn/fsmn_block/Conv.*expected layer \d FSMN memory"):
        stok_gguf.map_speech_tokenizer(Path("x.onnx"), m)

    m = _onnx_model(stok)
    for n in m.graph.node:
        if n.op_type == "Erf":
            n.op_type = "Tanh"  # GELU no longer the erf form
            break
    with pytest.raises(ConversionError, match="Erf"):
        stok_gguf.map_speech_tokenizer(Path("x.onnx"), m)


def test_corrupt_or_absent_onnx(tmp_path):
    assert stok_gguf.check_speech_tokenizer(tmp_path) is None  # absent: the component is left out
    (tmp_path / "speech_tokenizer_v2_25hz.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ConversionError, match="speech_tokenizer_v2_25hz.onnx: not a readable ONNX model"):
        stok_gguf.check_speech_tokenizer(tmp_path)
