"""Voice prompts from a recording (spec §5.2.1): the numpy front ends of convert/voice_frontend.py
against independent implementations (transformers' WhisperFeatureExtractor, kaldi-native-fbank,
torch.stft, a direct evaluation of torchaudio's resampling formula), and the onnxruntime path end to
end with small stand-in ONNX models (the release's speech tokenizer and CAM++ are not available
here) whose outputs are recomputed from the reference features."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import _import_convert

frontend = _import_convert(".voice_frontend")
voice_gguf = _import_convert(".voice_gguf")
ConversionError = _import_convert("").ConversionError


def _signal(n: int, rate: int, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: two partials with vibrato plus noise, 0.5 s of near-silence at the start."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    f0 = 180 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = 0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase) + 0.02 * rng.standard_normal(n)
    x[: rate // 2] *= 0.01
    return x.astype(np.float32)


def direct_resample(x: np.ndarray, orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """torchaudio's sinc_interp_hann resampling evaluated output by output from its formula: output m
    sits at input position m*orig/new; each input sample i contributes
    x[i] * sinc(b (i - pos)) * cos^2(pi b (i - pos) / (2 zeros)) * b, for |b (i - pos)| <= zeros,
    b = min(orig, new) / orig * rolloff (in input samples); ceil(len*new/orig) outputs."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    b = min(o, n) * rolloff / o
    n_out = math.ceil(len(x) * n / o)
    pos = np.arange(n_out) * o / n
    reach = int(math.ceil(zeros / b)) + 1
    idx = np.floor(pos)[:, None].astype(np.int64) + np.arange(-reach, reach + 1)[None, :]
    t = np.clip(b * (idx - pos[:, None]), -zeros, zeros)
    w = np.sinc(t) * np.cos(np.pi * t / (2 * zeros)) ** 2 * b
    xs = np.where((idx >= 0) & (idx < len(x)), x[np.clip(idx, 0, len(x) - 1)].astype(np.float64), 0.0)
    return np.sum(xs * w, axis=1)


@pytest.mark.parametrize("orig,new", [(16000, 24000), (44100, 16000), (48000, 24000), (22050, 24000),
                                      (8000, 16000)])
def test_resampler_matches_the_torchaudio_formula(orig, new):
    x = _signal(orig, orig)  # 1 s: the quiet first half and the loud second half
    got = frontend.resample_sinc_hann(x, orig, new)
    ref = direct_resample(x, orig, new)
    assert got.dtype == np.float32 and got.shape == ref.shape == (math.ceil(len(x) * new / orig),)
    # the same float64 sums in another order, then float32 rounding of values < 0.5: half an ulp is
    # 2^-25 ~ 3e-8 (measured 1.5e-8); 1e-7 leaves room for float64 summation-order differences
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)


@pytest.mark.torch
def test_whisper_log_mel_matches_transformers():
    from transformers import WhisperFeatureExtractor

    a = _signal(16000 * 2, 16000)
    ref = WhisperFeatureExtractor(feature_size=128).__call__(
        a, sampling_rate=16000, padding="longest", return_tensors="np").input_features[0]
    got = frontend.whisper_log_mel(a)
    assert got.shape == ref.shape == (128, 200)  # len / 160 frames: the centred STFT's last frame dropped
    # transformers computes in float32 (numpy STFT on float32 frames), here float64: the float32
    # FFT's rounding is relative to a frame's energy, so weak bins of the near-silent start carry
    # the largest log error: measured max 7e-5 (one bin; the median 1e-7) -> 2e-4
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-4)


def kaldi_native_fbank(pcm16k: np.ndarray) -> np.ndarray:
    """(T, 80) Kaldi fbank of 16 kHz audio by kaldi-native-fbank (dither 0): the independent reference."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, pcm16k.tolist())
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


def test_kaldi_fbank_matches_kaldi_native_fbank():
    a = _signal(16000 * 2 + 123, 16000)
    ref = kaldi_native_fbank(a)
    got = frontend.kaldi_fbank(a)
    assert got.shape == ref.shape == (1 + (len(a) - 400) // 160, 80)
    # kaldi-native-fbank runs in float32 (its own FFT); log energies of order 1..10 agree to float32
    # rounding: measured 6.3e-5 -> 3e-4
    np.testing.assert_allclose(got, ref, rtol=0, atol=3e-4)


def reference_prompt_mel(a24: np.ndarray) -> np.ndarray:
    """The reference's mel_spectrogram with torch ops: reflect pad 720, STFT 1920/480 (center off),
    sqrt(re^2 + im^2 + 1e-9), Slaney mel (transformers' filter bank = librosa's), ln(clamp 1e-5)."""
    import torch
    from transformers.audio_utils import mel_filter_bank

    x = torch.from_numpy(a24.astype(np.float64))
    y = torch.nn.functional.pad(x[None, None], (720, 720), mode="reflect")[0, 0]
    spec = torch.view_as_real(torch.stft(y, 1920, 480, 1920, window=torch.hann_window(1920, dtype=torch.float64),
                                         center=False, return_complex=True))
    mag = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
    fb = torch.from_numpy(mel_filter_bank(num_frequency_bins=961, num_mel_filters=80, min_frequency=0,
                                          max_frequency=8000, sampling_rate=24000, norm="slaney",
                                          mel_scale="slaney").T)
    return torch.log(torch.clamp(fb @ mag, min=1e-5)).T.numpy()


@pytest.mark.torch
def test_prompt_mel_matches_torch_stft():
    a = _signal(24000 * 2 + 77, 24000)
    ref = reference_prompt_mel(a)
    got = frontend.prompt_mel(a)
    assert got.shape == ref.shape == (len(a) // 480, 80)
    # both float64, rounded once to float32: measured 1.5e-7 on |values| <= 12 -> 1e-6
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_fit_frames_replicates_or_truncates():
    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(frontend.fit_frames(m, 2), m[:2])
    padded = frontend.fit_frames(m, 6)
    assert np.array_equal(padded[:4], m) and np.array_equal(padded[4:], np.stack([m[3], m[3]]))


# ------------------------------------------------------------------------------------------------
# onnxruntime voice path with stand-in models
# ------------------------------------------------------------------------------------------------

def write_stand_in_onnx(d: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """speech_tokenizer_v2_25hz.onnx: (feats (1,128,T) f32, feats_length (1,) i32) -> argmax over
    6561 of feats^T W at every 4th frame (25 Hz ids, int64); campplus.onnx: (1,T,80) -> max over time
    @ W2 -> (1,192). Returns (W, W2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((128, 6561)).astype(np.float32)
    w2 = (rng.standard_normal((80, 192)) / np.sqrt(80)).astype(np.float32)
    tok = helper.make_graph(
        [helper.make_node("Transpose", ["feats"], ["ft"], perm=[0, 2, 1]),
         helper.make_node("MatMul", ["ft", "W"], ["logits"]),
         helper.make_node("Slice", ["logits", "starts", "ends", "axes", "steps"], ["every4"]),
         helper.make_node("ArgMax", ["every4"], ["tokens"], axis=2, keepdims=0)],
        "tokenizer",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
         helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "N"])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([0], np.int64), "starts"),
         numpy_helper.from_array(np.array([2**62], np.int64), "ends"),
         numpy_helper.from_array(np.array([1], np.int64), "axes"),
         numpy_helper.from_array(np.array([4], np.int64), "steps")])
    onnx.save(helper.make_model(tok, opset_imports=[helper.make_opsetid("", 13)]), d / "speech_tokenizer_v2_25hz.onnx")
    spk = helper.make_graph(
        [helper.make_node("ReduceMax", ["feats"], ["m"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["m", "W2"], ["embedding"])],
        "campplus",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 192])],
        [numpy_helper.from_array(w2, "W2")])
    onnx.save(helper.make_model(spk, opset_imports=[helper.make_opsetid("", 13)]), d / "campplus.onnx")
    return w, w2


# Token ids are the argmax of feats^T W computed on two float paths (ours: numpy log-mel + onnxruntime's
# float32 MatMul; the reference: transformers' log-mel + a float64 matmul), so a near tie can flip a
# token on one CPU and not on another. The rule: the log-mel features agree to FEATURE_ATOL (the bound
# test_whisper_log_mel_matches_transformers asserts), so the difference of logits r and t moves by at
# most FEATURE_ATOL * ||W[:, r] - W[:, t]||_1, plus MATMUL_ATOL for each logit's float32 rounding (a
# 128-term sum of products |x w| <= 6: 128 * 2^-24 * 128 * 6 ~ 6e-3 worst case, in practice far less;
# measured logit differences 6e-5). A token may differ from the reference only where the reference's
# winning margin over it is within that bound; everywhere else the tokens must be equal.
FEATURE_ATOL = 2e-4
MATMUL_ATOL = 6e-3


def assert_tokens_match_up_to_near_ties(got: np.ndarray, logits: np.ndarray, w: np.ndarray) -> None:
    """got: the runtime's tokens; logits: (n, vocab) reference logits (float64); w: the tokenizer matrix."""
    ref = np.argmax(logits, axis=1)
    assert got.shape == ref.shape
    differ = np.nonzero(got != ref)[0]
    for i in differ:
        r, t = int(ref[i]), int(got[i])
        assert 0 <= t < logits.shape[1], f"token {i}: {t} is no tokenizer id"
        margin = logits[i, r] - logits[i, t]
        bound = FEATURE_ATOL * np.abs(w[:, r] - w[:, t]).sum() + 2 * MATMUL_ATOL
        assert margin <= bound, f"token {i} is {t} where the reference has {r} by a margin {margin:.3g} > {bound:.3g}"
    # flips need a near tie; they stay rare (measured: 1 of 50 on AMD Zen 4, 0 elsewhere), so a
    # front end drifting within the tolerance everywhere is still caught
    assert len(differ) <= len(ref) // 10, f"{len(differ)} of {len(ref)} tokens differ: {differ.tolist()}"


def reference_voice(pcm16: np.ndarray, w: np.ndarray, w2: np.ndarray):
    """Tokens, x-vector and prompt mel of a 16 kHz mono recording, from the independent references, and
    the reference's tokenizer logits (for the near-tie rule above)."""
    import kaldi_native_fbank as knf
    from transformers import WhisperFeatureExtractor

    feats = WhisperFeatureExtractor(feature_size=128)(pcm16, sampling_rate=16000, padding="longest",
                                                       return_tensors="np").input_features[0]
    logits = (feats.T.astype(np.float64) @ w)[::4]
    tokens = np.argmax(logits, axis=1)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.mel_opts.num_bins = 80
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, pcm16.tolist())
    fb.input_finished()
    fbank = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    spk = (fbank - fbank.mean(axis=0)).max(axis=0) @ w2
    mel = reference_prompt_mel(direct_resample(pcm16, 16000, 24000))
    n = 2 * len(tokens)
    mel = mel[:n] if len(mel) >= n else np.concatenate([mel, np.repeat(mel[-1:], n - len(mel), 0)])
    return tokens, spk, mel, logits


@pytest.mark.torch  # the reference features: transformers' WhisperFeatureExtractor, torch.stft
def test_voice_from_wav_with_onnxruntime(tmp_path):
    w, w2 = write_stand_in_onnx(tmp_path)
    pcm = _signal(16000 * 3, 16000, seed=5)
    stereo = np.stack([pcm, 0.5 * pcm], axis=1)  # channel 0 feeds the tokenizer, the mean the prompt mel
    wav = tmp_path / "ref.wav"
    soundfile.write(wav, stereo, 16000, subtype="FLOAT")
    v = voice_gguf.voice_from_wav(wav, "me", tmp_path, voice_gguf.VoiceDims())
    tokens, spk, _, logits = reference_voice(pcm, w, w2)
    _, _, mel, _ = reference_voice(0.75 * pcm, w, w2)  # the channel mean
    assert v.name == "me" and v.tokens.dtype == np.int32
    assert v.tokens.size == tokens.size == 75  # 3 s -> 300 mel frames -> 75 tokens
    assert_tokens_match_up_to_near_ties(v.tokens, logits, w)
    # fbank features agree to 3e-4 (test above); max over time then a 80x192 matmul with weights of
    # ~0.11: |err| <= 80 * 3e-4 * 0.4 ~ 1e-2 worst case, measured 1.1e-5 -> 1e-3
    np.testing.assert_allclose(v.spk, spk, rtol=0, atol=1e-3)
    assert v.mel.shape == (150, 80)
    # resampler (1e-7) and mel (1e-6) differences through the log: measured 9e-7 -> 1e-4
    np.testing.assert_allclose(v.mel, mel, rtol=0, atol=1e-4)


@pytest.mark.torch  # as above
def test_voice_from_wav_resamples_other_rates(tmp_path):
    w, w2 = write_stand_in_onnx(tmp_path, seed=1)
    pcm24 = _signal(24000 * 2, 24000, seed=6)
    wav = tmp_path / "ref24.wav"
    soundfile.write(wav, pcm24, 24000, subtype="FLOAT")
    v = voice_gguf.voice_from_wav(wav, "v24", tmp_path, voice_gguf.VoiceDims())
    pcm16 = direct_resample(pcm24, 24000, 16000).astype(np.float32)
    tokens, spk, _, logits = reference_voice(pcm16, w, w2)
    assert v.tokens.size == tokens.size == 50  # 2 s -> 50 tokens
    assert_tokens_match_up_to_near_ties(v.tokens, logits, w)  # token 18 is a near tie (margin 6e-7)
    np.testing.assert_allclose(v.spk, spk, rtol=0, atol=1e-3)  # as above
    mel = reference_prompt_mel(pcm24)  # 24 kHz input: the prompt mel uses it unresampled
    n = 2 * len(tokens)
    mel = mel[:n] if len(mel) >= n else np.concatenate([mel, np.repeat(mel[-1:], n - len(mel), 0)])
    np.testing.assert_allclose(v.mel, mel, rtol=0, atol=1e-5)  # no resampling: measured 5e-7 (float32 rounding)


def test_voice_from_wav_errors(tmp_path):
    write_stand_in_onnx(tmp_path)
    dims = voice_gguf.VoiceDims()
    short = tmp_path / "short.wav"
    soundfile.write(short, np.zeros(4000, np.float32), 16000)
    with pytest.raises(ConversionError, match=r"0\.25 s of audio.*at least 0\.5 s"):
        voice_gguf.voice_from_wav(short, "s", tmp_path, dims)
    bad = tmp_path / "nan.wav"
    x = _signal(16000, 16000)
    x[100] = np.nan
    soundfile.write(bad, x, 16000, subtype="FLOAT")
    with pytest.raises(ConversionError, match="NaN or Inf"):
        voice_gguf.voice_from_wav(bad, "n", tmp_path, dims)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ConversionError, match="cannot decode the audio"):
        voice_gguf.voice_from_wav(junk, "j", tmp_path, dims)
    with pytest.raises(ConversionError, match="reference audio not found"):
        voice_gguf.voice_from_wav(tmp_path / "nope.wav", "x", tmp_path, dims)
    empty_dir = tmp_path / "no_onnx"
    empty_dir.mkdir()
    good = tmp_path / "good.wav"
    soundfile.write(good, _signal(16000, 16000), 16000)
    with pytest.raises(ConversionError, match="missing speech_tokenizer_v2_25hz.onnx"):
        voice_gguf.voice_from_wav(good, "g", empty_dir, dims)
    (empty_dir / "speech_tokenizer_v2_25hz.onnx").write_bytes(b"not onnx")
    (empty_dir / "campplus.onnx").write_bytes(b"not onnx")
    with pytest.raises(ConversionError, match="onnxruntime cannot load it"):
        voice_gguf.voice_from_wav(good, "g", empty_dir, dims)
