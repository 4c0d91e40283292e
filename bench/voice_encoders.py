"""Speed of the voice-cloning encoders (issue 18): time per second of reference audio, at full size with
random weights (speed does not depend on the values), against onnxruntime on the same ONNX models.

bench_speech_tokenizer(): the S3 speech tokenizer v2 (csrc/voice/speech_tokenizer; 1280 wide, 6 layers,
20 heads: the release's shape) built from PyPI s3tokenizer, exported to ONNX and converted by
convert/speech_tokenizer_gguf.py into a companion holding only that component, on speech-like audio.

bench_clone(): a whole voice clone (OmniSession.clone_voice's native path: both resamplings, the
speech tokenizer, CAM++, the prompt mel) on a companion with both encoders at the release's size (the
tiny test checkpoint's Token2Wav, F16 file) for 3, 10 and 15 s of 22.05 kHz speech-like audio.

bench_speaker_encoder(): the CAM++ speaker x-vector (csrc/voice/speaker_encoder.*), Kaldi fbank +
network, on a companion file given with --omni, or else on the tests' random-weight CAM++ at the
release's size (tests/campplus_reference.py, converted by the converter's own speaker-encoder module).

    python bench/voice_encoders.py [--seconds 10] [--reps 3] [--threads 1] [--omni FILE]

Prints one JSON document naming the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import cache_dir, cpu_kernels, cpu_name, speechlike

REPO = Path(__file__).resolve().parents[1]
SECONDS = (3.0, 10.0, 15.0)


def _timed(fn, reps: int) -> tuple[object, float]:
    out, times = None, []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def _speech_tokenizer_companion(onnx_dir: Path, out: Path, outtype: str) -> Path:
    from gguf import GGUFValueType

    from minicpmo_cpp.convert.gguf_write import Writer, write_gguf
    from minicpmo_cpp.convert.speech_tokenizer_gguf import check_speech_tokenizer, speech_tokenizer_component

    w = Writer(None, "minicpmo-omni")
    tensors = speech_tokenizer_component(check_speech_tokenizer(onnx_dir), w, outtype)
    w.add_typed_array("minicpmo.components", ["speech_tokenizer"], GGUFValueType.STRING)
    return write_gguf(w, out, tensors, None, quiet=True)


def bench_speech_tokenizer(seconds: float = 10.0, reps: int = 3, n_threads: int | None = None) -> dict:
    import onnxruntime as ort

    sys.path.insert(0, str(REPO / "tests"))
    from s3tokenizer_export import export_onnx, make_model

    from minicpmo_cpp import _testing
    from minicpmo_cpp.convert.voice_frontend import whisper_log_mel

    n_threads = n_threads or os.cpu_count() or 1
    x = speechlike(seconds, 1)
    res: dict = {"audio_seconds": seconds, "n_threads": n_threads, "width": 1280, "layers": 6}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        onnx_path = export_onnx(make_model(width=1280, n_layer=6), d / "speech_tokenizer_v2_25hz.onnx")
        for outtype in ("f16", "f32"):
            tok = _testing.SpeechTokenizer(str(_speech_tokenizer_companion(d, d / f"stok_{outtype}.gguf", outtype)))
            tok.tokenize(x[:16000], n_threads)  # warm-up (page-in of the weights)
            (ids, _), t = _timed(lambda tok=tok: tok.tokenize(x, n_threads), reps)
            res[f"cpp_{outtype}_ms_per_audio_s"] = round(1e3 * t / seconds, 2)
            res[f"cpp_{outtype}_ids"] = ids
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n_threads
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

        def run_ort():
            mel = whisper_log_mel(x)
            return sess.run(None, {"feats": mel[None], "feats_length": np.array([mel.shape[1]], np.int32)})[0]

        run_ort()
        ort_ids, t = _timed(run_ort, reps)
        res["onnxruntime_ms_per_audio_s"] = round(1e3 * t / seconds, 2)
        ort_ids = np.asarray(ort_ids).reshape(-1)
        for outtype in ("f16", "f32"):
            res[f"cpp_{outtype}_agreement"] = round(float(np.mean(res.pop(f"cpp_{outtype}_ids") == ort_ids)), 4)
    return res


def _speaker_encoder_file() -> tuple[Path, Path]:
    """(omni-like file with only the speaker encoder, its ONNX), built once into the cache."""
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    from campplus_reference import export_onnx, random_campplus
    from gguf import GGUFValueType

    from convert.gguf_write import Writer, write_gguf
    from convert.omni_gguf import ARCH
    from convert.speaker_encoder_gguf import plan_speaker_encoder, speaker_encoder_component

    d = cache_dir() / "bench-speaker-encoder"
    d.mkdir(parents=True, exist_ok=True)
    onnx_path, gguf_path = d / "campplus.onnx", d / "speaker_encoder-F32.gguf"
    if not onnx_path.is_file():
        export_onnx(random_campplus(seed=0), onnx_path)
    if not gguf_path.is_file():
        w = Writer(None, ARCH)
        tensors = speaker_encoder_component(plan_speaker_encoder(onnx_path), w, "f32")
        w.add_typed_array("minicpmo.components", ["speaker_encoder"], GGUFValueType.STRING)
        write_gguf(w, gguf_path, tensors, None, quiet=True)
    return gguf_path, onnx_path


def _median_ms(fn, reps: int) -> float:
    fn()  # warm-up: first-touch of the weights, thread pool start
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_speaker_encoder(omni: Path | None = None, threads: int = 4, reps: int = 5) -> dict:
    from minicpmo_cpp import _testing

    sys.path.insert(0, str(REPO / "tests"))
    from campplus_reference import speech_like

    onnx_path = None
    if omni is None:
        omni, onnx_path = _speaker_encoder_file()
    enc = _testing.SpeakerEncoder(str(omni))
    sess = None
    if onnx_path is not None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    rows = []
    for seconds in SECONDS:
        pcm = speech_like(seconds, 1)
        feats = enc.features(pcm)
        row = {
            "audio_s": seconds,
            "fbank_ms": round(_median_ms(lambda: enc.features(pcm), reps), 2),
            "embed_ms": round(_median_ms(lambda: enc.embed(pcm, threads), reps), 2),
        }
        row["embed_ms_per_audio_s"] = round(row["embed_ms"] / seconds, 2)
        if sess is not None:
            name = sess.get_inputs()[0].name
            row["onnxruntime_ms"] = round(_median_ms(lambda: sess.run(None, {name: feats[None]}), reps), 2)
        rows.append(row)
    return {"bench": "speaker_encoder", "cpu": cpu_name(), "threads": threads, "model": str(omni),
            "cpu_kernels": cpu_kernels(), "rows": rows}


def _clone_companion() -> Path:
    """The tiny checkpoint with full-size random-weight voice encoders, converted to F16 once."""
    sys.path.insert(0, str(REPO / "tests"))
    from campplus_reference import export_onnx as export_campplus, random_campplus
    from s3tokenizer_export import export_onnx as export_tokenizer, make_model

    from minicpmo_cpp.convert import convert_checkpoint
    from minicpmo_cpp.convert.make_tiny import make_tiny_checkpoint

    d = cache_dir() / "bench-voice-clone"
    out = d / "out"
    done = list(out.glob("*omni*.gguf"))
    if done:
        return done[0]
    vocab = next(cache_dir().glob("llama_cpp_python-*/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf"))
    hf = Path(make_tiny_checkpoint(d / "hf", seed=0, vocab_gguf=vocab))
    t2w = hf / "assets" / "token2wav"
    export_tokenizer(make_model(width=1280, n_layer=6), t2w / "speech_tokenizer_v2_25hz.onnx")
    export_campplus(random_campplus(seed=0), t2w / "campplus.onnx")
    _, omni = convert_checkpoint(hf, out, outtype="f16", quiet=True)
    return Path(omni)


def bench_clone(n_threads: int = 1, reps: int = 3) -> dict:
    from minicpmo_cpp import _core

    omni = _clone_companion()
    from campplus_reference import speech_like  # (tests/ is on the path now)

    rate = 22050
    rows = []
    for seconds in SECONDS:
        x = speech_like(seconds, seed=2, sample_rate=rate).astype(np.float32)
        _core.clone_voice_prompt(str(omni), x, rate, n_threads)  # warm-up: loads and pages in the weights
        (tokens, _, _), t = _timed(lambda x=x: _core.clone_voice_prompt(str(omni), x, rate, n_threads), reps)
        rows.append({"audio_seconds": seconds, "prompt_tokens": int(tokens.size), "clone_s": round(t, 3),
                     "ms_per_audio_s": round(1e3 * t / seconds, 1)})
    return {"bench": "voice_clone", "cpu": cpu_name(), "threads": n_threads, "model": str(omni),
            "note": "includes loading the encoders from the file (clone_voice_prompt opens it per call)", "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="speech tokenizer: seconds of audio")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--omni", type=Path, default=None, help="speaker encoder: a companion with that component")
    ap.add_argument("--only", choices=("tokenizer", "speaker", "clone"), default=None)
    args = ap.parse_args()
    out = {"cpu": cpu_name()}
    if args.only in (None, "tokenizer"):
        out["speech_tokenizer"] = bench_speech_tokenizer(args.seconds, args.reps, args.threads)
    if args.only in (None, "speaker"):
        out["speaker_encoder"] = bench_speaker_encoder(args.omni, args.threads, args.reps)
    if args.only in (None, "clone"):
        out["clone"] = bench_clone(args.threads, args.reps)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
