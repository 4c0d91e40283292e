"""Speed of the voice-cloning encoders per second of reference audio, at full size with random
weights (speed does not depend on the values).

bench_speech_tokenizer(): the S3 speech tokenizer v2 (csrc/voice/speech_tokenizer; 1280 wide, 6
layers, 20 heads: the release's shape) built from PyPI s3tokenizer, exported to ONNX and converted by
convert/speech_tokenizer_gguf.py into a companion holding only that component (F16 matrices, the
default file type), timed on 10 s of speech-like audio against onnxruntime on the same ONNX.

    python bench/voice_encoders.py [--seconds 10] [--reps 3] [--threads N]

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

from bench_common import cpu_name, speechlike

REPO = Path(__file__).resolve().parents[1]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    print(json.dumps({"cpu": cpu_name(), "speech_tokenizer": bench_speech_tokenizer(args.seconds, args.reps,
                                                                                     args.threads)}, indent=1))


if __name__ == "__main__":
    main()
