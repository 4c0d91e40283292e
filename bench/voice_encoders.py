"""Speed of the voice-cloning encoders (issue 18): time per second of reference audio.

bench_speaker_encoder(): the CAM++ speaker x-vector (csrc/voice/speaker_encoder.*), Kaldi fbank +
network, on a companion file given with --omni, or else on the tests' random-weight CAM++ at the
release's size (tests/campplus_reference.py, converted by the converter's own speaker-encoder module
into a file holding only that component); onnxruntime on the same ONNX model beside it when no --omni
is given. Prints one JSON document naming the CPU.

    python bench/voice_encoders.py [--omni FILE] [--threads 4] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench_common import cache_dir, cpu_kernels, cpu_name

REPO = Path(__file__).resolve().parent.parent
SECONDS = (3.0, 10.0, 15.0)


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--omni", type=Path, default=None, help="a companion file with the speaker_encoder component")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    print(json.dumps(bench_speaker_encoder(args.omni, args.threads, args.reps), indent=1))


if __name__ == "__main__":
    main()
