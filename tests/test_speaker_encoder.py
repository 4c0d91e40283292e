"""The CAM++ speaker encoder in C++ (csrc/voice/speaker_encoder.*, kaldi_fbank.*) against onnxruntime
running the ONNX export of an independent PyTorch CAM++ (FunASR's CAMPPlus, tests/campplus_reference.py)
at the release's size with seeded random weights, converted through the converter's own path (the
token2wav folder's campplus.onnx, convert/speaker_encoder_gguf.py); its Kaldi fbank against the numpy
reference (convert/voice_frontend.py) and kaldi-native-fbank; the structural mapper's refusals.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from minicpmo_cpp import MinicpmoError, _testing

from campplus_reference import export_onnx, random_campplus, speech_like
from conftest import _import_convert
from test_voice_frontend import kaldi_native_fbank

pytestmark = pytest.mark.torch  # the reference CAM++ runs in torch (the test extra has onnx, onnxruntime, knf)

voice_frontend = _import_convert(".voice_frontend")
spk_gguf = _import_convert(".speaker_encoder_gguf")
ConversionError = _import_convert(".errors").ConversionError

# x-vector agreement with onnxruntime on the F32 file (the bar): both compute the same
# float32 network; the differences are summation orders (per-tap products vs onnxruntime's im2col /
# Winograd convs over up to 1500 frames x 1024 channels). Measured: 1 - cosine < 1e-7 and a relative
# error ||got - want|| / ||want|| of 2.5e-5 to 2.7e-5 (1 to 15 s, AMD EPYC); REL_F32 leaves 40x room.
COSINE_F32 = 0.9999
REL_F32 = 1e-3
# F16 file: every kernel rounded to 11 significant bits (2^-11 = 4.9e-4 relative per weight) through
# ~60 layers; measured relative error 2.8e-4 to 3.2e-4, 1 - cosine ~1e-7. Asserted with ~10x room.
COSINE_F16 = 0.9999
REL_F16 = 3e-3


@pytest.fixture(scope="module")
def campplus_net():
    return random_campplus(seed=7)


@pytest.fixture(scope="module")
def campplus_onnx(tmp_path_factory, campplus_net) -> Path:
    """campplus.onnx at the release's size (6.8 M parameters), BatchNorms folded into the convs
    they follow, as torch.onnx's default export has them."""
    return export_onnx(campplus_net, tmp_path_factory.mktemp("campplus") / "campplus.onnx")


def _convert_with_speaker_encoder(tmp_path_factory, tiny_hf: Path, onnx_path: Path, outtype: str) -> Path:
    """The tiny checkpoint's conversion with campplus.onnx beside its Token2Wav assets."""
    t2w = tmp_path_factory.mktemp(f"t2w_{outtype}")
    shutil.copytree(tiny_hf / "assets" / "token2wav", t2w, dirs_exist_ok=True)
    shutil.copy(onnx_path, t2w / "campplus.onnx")
    out = tmp_path_factory.mktemp(f"spk_{outtype}")
    _, omni = _import_convert("").convert_checkpoint(tiny_hf, out, outtype=outtype, name="MiniCPM-o-4_5",
                                                      quiet=True, token2wav_dir=t2w)
    return Path(omni)


@pytest.fixture(scope="module")
def encoder_f32(tmp_path_factory, tiny_hf, campplus_onnx):
    return _testing.SpeakerEncoder(str(_convert_with_speaker_encoder(tmp_path_factory, tiny_hf, campplus_onnx, "f32")))


@pytest.fixture(scope="module")
def ort_session(campplus_onnx):
    return ort.InferenceSession(str(campplus_onnx), providers=["CPUExecutionProvider"])


def _features(pcm: np.ndarray) -> np.ndarray:
    f = voice_frontend.kaldi_fbank(pcm).astype(np.float64)
    return (f - f.mean(axis=0, keepdims=True)).astype(np.float32)


def _ort_xvector(sess, pcm: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: _features(pcm)[None]})[0][0]


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want.astype(np.float64)))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


SIGNALS = [(1.0, 1), (3.7, 2), (15.0, 3)]  # 1.0 s: one segment of the masking; 15 s: eight, the last partial


def test_converter_keys_and_storage(encoder_f32, campplus_onnx):
    plan = spk_gguf.plan_speaker_encoder(campplus_onnx)
    assert 6_000_000 < plan.n_params < 8_000_000  # the release's size
    assert plan.keys["block.n_layers"] == [12, 24, 16] and plan.keys["seg_len"] == 100
    assert encoder_f32.embedding_length == 192 and encoder_f32.n_mel == 80 and encoder_f32.sample_rate == 16000


@pytest.mark.parametrize("seconds,seed", SIGNALS)
def test_xvector_matches_onnxruntime(encoder_f32, ort_session, seconds, seed):
    pcm = speech_like(seconds, seed)
    want = _ort_xvector(ort_session, pcm)
    # two threads on the shortest signal (a product's rows split over threads: the same sums), one on the
    # others: ggml's threads wait for each other spinning, which a loaded 2-core machine turns into seconds
    got = encoder_f32.embed(pcm, n_threads=2 if seconds < 2 else 1)
    assert got.shape == (192,) and np.all(np.isfinite(got))
    cos = _cosine(got, want)
    assert cos >= COSINE_F32, f"{seconds} s: cosine {cos:.7f}"
    assert _rel(got, want) <= REL_F32


def test_xvector_from_the_same_features(encoder_f32, ort_session):
    """The numpy features into both networks: the graph alone, without the C++ fbank."""
    pcm = speech_like(3.7, 2)
    want = _ort_xvector(ort_session, pcm)
    got = encoder_f32.embed_features(_features(pcm), n_threads=1)
    assert _cosine(got, want) >= COSINE_F32 and _rel(got, want) <= REL_F32


def test_one_encoder_serves_threads_at_once(encoder_f32):
    """The weights are shared read-only and each call builds its own backend: concurrent calls (the GIL
    is released inside) give each thread the value a lone call gives (the same sums, bit for bit)."""
    from concurrent.futures import ThreadPoolExecutor

    signals = [speech_like(1.5, 20 + i) for i in range(4)]
    alone = [encoder_f32.embed(x, n_threads=1) for x in signals]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda x: encoder_f32.embed(x, n_threads=1), signals))
    for a, b in zip(alone, together):
        assert np.array_equal(a, b)


def test_xvector_f16_file(tmp_path_factory, tiny_hf, campplus_onnx, ort_session):
    enc = _testing.SpeakerEncoder(str(_convert_with_speaker_encoder(tmp_path_factory, tiny_hf, campplus_onnx, "f16")))
    for seconds, seed in SIGNALS[:2]:
        pcm = speech_like(seconds, seed)
        got, want = enc.embed(pcm, n_threads=1), _ort_xvector(ort_session, pcm)
        cos, rel = _cosine(got, want), _rel(got, want)
        print(f"F16 file, {seconds} s: x-vector cosine {cos:.9f}, relative error {rel:.2e} vs onnxruntime")
        assert cos >= COSINE_F16 and rel <= REL_F16


# fbank tolerances. C++ vs numpy: both in double with the same operations (the C++ file is built
# without FMA contraction), rounded to float once; the FFTs differ (mixed-radix vs numpy's pocketfft),
# ~1e-15 relative in the energies, so the logs agree to float32 rounding of values up to ~|25|
# (2^-24 * 25 = 1.5e-6): 1e-5. kaldi-native-fbank computes in float32 (frames, FFT, mel sums): its
# energies carry ~1e-6 relative error, more in the weakest bins where cancellation in the FFT leaves
# fewer significant bits; 2e-3 bounds the log of every bin of these signals (measured max 5.0e-4;
# against numpy the measured difference is 0: the same operations in the same order).
FBANK_ATOL_NUMPY = 1e-5
FBANK_ATOL_KNF = 2e-3


@pytest.mark.parametrize("seconds,seed", [(0.5, 11), (2.3, 12)])
def test_fbank_matches_numpy_and_kaldi_native_fbank(seconds, seed):
    pcm = speech_like(seconds, seed)
    got = _testing.kaldi_fbank(pcm)
    want = voice_frontend.kaldi_fbank(pcm)
    assert got.shape == want.shape == (1 + (pcm.size - 400) // 160, 80)
    np.testing.assert_allclose(got, want, rtol=0, atol=FBANK_ATOL_NUMPY)

    ref = kaldi_native_fbank(pcm)
    assert ref.shape == got.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=FBANK_ATOL_KNF)


def test_features_subtract_the_utterance_mean(encoder_f32):
    pcm = speech_like(1.3, 5)
    np.testing.assert_allclose(encoder_f32.features(pcm), _features(pcm), rtol=0, atol=2 * FBANK_ATOL_NUMPY)


def test_bad_audio_is_refused(encoder_f32):
    with pytest.raises(MinicpmoError, match="empty"):
        encoder_f32.embed(np.zeros(0, np.float32))
    short = speech_like(0.02, 1)[: encoder_f32.min_samples - 1]
    with pytest.raises(MinicpmoError, match="too short"):
        encoder_f32.embed(short)
    encoder_f32.embed(speech_like(0.1, 1)[: encoder_f32.min_samples])  # the shortest accepted
    with pytest.raises(MinicpmoError, match="longer than"):
        encoder_f32.embed(np.zeros(encoder_f32.max_samples + 1, np.float32))
    bad = speech_like(1.0, 1)
    bad[123] = np.nan
    with pytest.raises(MinicpmoError, match="NaN"):
        encoder_f32.embed(bad)
    with pytest.raises(MinicpmoError, match="float32"):
        encoder_f32.embed(np.zeros(16000, np.float64))
    with pytest.raises(MinicpmoError, match="too short"):
        _testing.kaldi_fbank(np.zeros(399, np.float32))


def test_missing_component_is_a_clear_error(tiny_f32):
    with pytest.raises(MinicpmoError, match="speaker_encoder"):
        _testing.SpeakerEncoder(str(tiny_f32[1]))


# --- the structural mapper --------------------------------------------------------------------------

def _batchnorms_as_mul_add(path: Path, out: Path, head_channels: int = 32) -> Path:
    """The graph with its BatchNormalization nodes rewritten as Mul by a per-channel scale then Add of a
    shift, as graph optimizers emit them (the one after the embedding layer's Squeeze is left: its input
    has no time axis)."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    consts = spk_gguf._Graph(model, path).consts
    producer = {o: n for n in model.graph.node for o in n.output}
    nodes = []
    for n in model.graph.node:
        if n.op_type != "BatchNormalization" or getattr(producer.get(n.input[0]), "op_type", "") == "Squeeze":
            nodes.append(n)
            continue
        gamma, beta, mean, var = (consts[x].astype(np.float64) for x in n.input[1:5])
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        shape = (1, scale.size, 1, 1) if scale.size == head_channels else (1, scale.size, 1)
        sname, bname, mid = n.output[0] + "_scale", n.output[0] + "_shift", n.output[0] + "_scaled"
        model.graph.initializer.extend([
            numpy_helper.from_array(scale.reshape(shape).astype(np.float32), sname),
            numpy_helper.from_array((beta - mean * scale).reshape(shape).astype(np.float32), bname)])
        nodes += [helper.make_node("Mul", [n.input[0], sname], [mid]),
                  helper.make_node("Add", [mid, bname], [n.output[0]])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out))
    return out


def test_folded_and_unfolded_batchnorms_map_alike(campplus_net, campplus_onnx, tmp_path):
    """Exports that keep every BatchNorm a node, or as Mul + Add, map to the same tensors as one that
    folded them into the convs."""
    folded = spk_gguf.plan_speaker_encoder(campplus_onnx)
    kept_path = export_onnx(campplus_net, tmp_path / "kept.onnx", fold=False)
    n_bn = sum(n.op_type == "BatchNormalization" for n in onnx.load(str(kept_path)).graph.node)
    assert n_bn > 100  # every conv's BatchNorm is a node in this export
    kept = spk_gguf.plan_speaker_encoder(kept_path)
    mul_add = spk_gguf.plan_speaker_encoder(_batchnorms_as_mul_add(kept_path, tmp_path / "mul_add.onnx"))
    for other in (kept, mul_add):
        assert folded.keys == other.keys
        assert [n for n, _ in folded.tensors] == [n for n, _ in other.tensors]
        for (name, a), (_, b) in zip(folded.tensors, other.tensors):
            # torch folds in float32, we in float64 (the Mul + Add form holds float32 scale / shift):
            # float32 rounding of the folded values
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_mismatched_graph_names_the_node(campplus_onnx, tmp_path):
    model = onnx.load(str(campplus_onnx))
    inits = {i.name: i for i in model.graph.initializer}
    convs = [(i, n) for i, n in enumerate(model.graph.node) if n.op_type == "Conv"]
    # the first dense layer's second mask conv (the first 1x1 conv reading the mask width): one output
    # channel short
    target = None
    for i, n in convs:
        w = onnx.numpy_helper.to_array(inits[n.input[1]])
        if w.ndim == 3 and w.shape[2] == 1 and w.shape[1] == 64:  # bottleneck 128 -> mask 64 -> growth 32
            target = (i, n, w)
            break
    assert target is not None
    i, n, w = target
    inits[n.input[1]].CopyFrom(onnx.numpy_helper.from_array(w[:-1], n.input[1]))
    if len(n.input) > 2:
        b = onnx.numpy_helper.to_array(inits[n.input[2]])
        inits[n.input[2]].CopyFrom(onnx.numpy_helper.from_array(b[:-1], n.input[2]))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ConversionError, match=rf"bad\.onnx: node {i} \(Conv.*should give 32 channels, it gives 31"):
        spk_gguf.plan_speaker_encoder(bad)

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    with pytest.raises(ConversionError, match="junk.onnx: not a readable ONNX model"):
        spk_gguf.plan_speaker_encoder(junk)


def test_a_different_network_is_refused(tmp_path):
    """A graph that is not CAM++ (the voice tests' stand-in: max over time and a matrix) fails at its
    first node, named."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("ReduceMax", ["feats"], ["m"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["m", "W2"], ["embedding"])],
        "campplus",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 192])],
        [numpy_helper.from_array(np.zeros((80, 192), np.float32), "W2")])
    p = tmp_path / "campplus.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(p))
    with pytest.raises(ConversionError, match=r"campplus\.onnx: node 1 \(MatMul\): CAM\+\+ has no such layer"):
        spk_gguf.plan_speaker_encoder(p)
