"""Speed of a full-duplex conversation (spec §6): per 1-s unit, prefill, decision, speech, in both
speech modes, on a random-weight model with real-size audio, vision, TTS and Token2Wav.

The model (made once through the normal HF -> converter path, cached under the work directory):
  * LLM: Qwen3-0.6B's shape (28 x 1024, GQA 16/8, FFN 3072) with MiniCPM-o's vocabulary, NOT the
    8B: an 8B would not fit a benchmark's time on a 2-core machine; its per-token cost scales with
    the weights read (about 13x the 0.6B in F16);
  * Whisper-medium encoder (24 x 1024) + projector, SigLIP 26 x 1152 + resampler (8 heads for the
    1024-wide LLM), TTS 20 x 768, Token2Wav at real size (flow encoder 512, DiT 16 x 512, HiFT 512)
    with the duplex demo's 5 flow steps per window (``--t2w-steps``; the release file says 10).
The model files a user runs by default: the LLM quantized to Q4_K_M (``--llm-type``; F16 or any
minicpmo-quantize size), the companion converted with ``--outtype f16`` and the converter's default
Q8_0 TTS matrices (``--tts-type f16`` for F16 ones). The session's encoders (Whisper, SigLIP + resampler) and the
Token2Wav flow compute in ``--compute`` (bf16 by default: their matrix products through oneDNN in
BF16; int8: as 8-bit integer products through oneDNN; f32 the exact path), passed to OmniSession as
compute_type explicitly ("auto" follows the CPU); the LLM, TTS and HiFT are unaffected. The output
names it, with the CPU.

A random model decides randomly, so every unit's decision is scripted (``_scripted``): the same
conversation in both modes -- listen units, then a speaking turn (``--speak-units`` units of
``--speak-tokens`` text tokens each, the last one ending the turn), then listen units again.
Listening units still run the whole prefill; speaking units run the LLM over their text tokens and
the speech (TTS 25 speech tokens, streaming Token2Wav) on the session's speech thread.

Measured per unit: prefill (1 s of speech-like audio: streaming mel + Whisper with its cache + LLM),
generate (decision + spoken tokens; with wait_audio=True also the speech), time to audio (from the
unit's prefill start to its 24 kHz waveform in hand), whole unit. Modes:
  * wait:    streaming_generate(wait_audio=True): the speech is made before generate returns;
  * overlap: streaming_generate(wait_audio=False): the speech is made on the speech thread while the
             next unit is prefilled; take_audio() after that prefill fetches it.
Real-time factor = wall seconds / seconds of conversation (units). Frames (448x448, one slice) are
measured on ``--frame-units`` extra units (prefill with audio + frame), since the real-size vision
tower does not fit one second on this machine. Token2Wav alone (SpeechSynthesizer, same file) is
timed over random speech tokens, reported beside the pipeline's speech time (not subtracted).
Prints one JSON document on stdout; progress goes to stderr.

    python bench/duplex.py [--threads 2] [--listen-units 4] [--speak-units 4] [--speak-tokens 10]
                           [--frame-units 1] [--t2w-units 2] [--t2w-steps 5] [--compute bf16|f32|int8]
                           [--llm-type Q4_K_M] [--tts-type q8_0|f16] [--budget-s 600] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import COMPUTE_TYPES, cache_dir, cpu_name, proc_status_kib, require_onednn_build, speechlike

# Qwen3-0.6B's shape (as bench/llm.py) with MiniCPM-o's vocabulary
QWEN3_06B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=128, intermediate_size=3072)
# spec §3.2: Whisper-medium's encoder
AUDIO_MEDIUM = dict(d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096)
# spec §1/§2: SigLIP 27 configured (26 run); resampler heads = LLM width / 128
VISION_REAL = dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27,
                   resampler_num_heads=QWEN3_06B["hidden_size"] // 128)
# spec §5.1: the release's TTS backbone
TTS_DIMS = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_key_value_heads=12,
                num_hidden_layers=20)
# spec §5.2: the release's Token2Wav (n_timesteps set from --t2w-steps)
T2W_DIMS = dict(enc_dim=512, enc_heads=8, enc_ff=2048, enc_blocks=6, enc_up_blocks=4, dit_dim=512, dit_layers=16,
                dit_heads=8, dit_head_dim=64, hift_base=512, hift_f0_channels=512)
SEED = 0
SR = 16000
LISTEN, SPEAK, TURN_EOS, CHUNK_EOS = 151705, 151706, 151717, 151718
PREFIX = "<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>"
SUFFIX = "<|audio_end|><|im_end|>"
WORDS = ("well I think the weather today is rather nice so we could take a walk along the river and then "
         "have some tea in the little cafe near the old bridge where they bake fresh bread every morning ") * 8


def log(msg: str) -> None:
    print(f"[bench/duplex] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# ---------------------------------------------------------------------------------------------
# model and inputs
# ---------------------------------------------------------------------------------------------
def model_params(t2w_steps: int) -> dict:
    return {"llm": QWEN3_06B, "audio": AUDIO_MEDIUM, "vision": VISION_REAL, "tts": TTS_DIMS,
            "t2w": dict(T2W_DIMS, n_timesteps=t2w_steps), "seed": SEED, "dtype": "float16"}


def make_model(work: Path, t2w_steps: int, llm_type: str, tts_type: str) -> tuple[Path, Path]:
    """(LLM GGUF, omni GGUF), generated once per parameter set: the checkpoint converted to F16 with
    the TTS matrices in tts_type, the LLM then quantized to llm_type (unless F16)."""
    from minicpmo_cpp.convert import convert_checkpoint
    from minicpmo_cpp.convert.make_tiny import make_tiny_checkpoint
    from minicpmo_cpp.quantize import quantize_llm_file

    p = model_params(t2w_steps)
    key = hashlib.sha1(json.dumps(p, sort_keys=True).encode()).hexdigest()[:10]
    root = work / key
    hf = root / "hf"
    done = root / ".complete"  # written last: an interrupted generation is redone
    if not done.exists():
        log("writing a random-weight checkpoint (0.6B-shaped LLM, real audio/vision/TTS/Token2Wav; ~4 GB)")
        t0 = time.perf_counter()
        make_tiny_checkpoint(hf, seed=SEED, dtype="float16", llm_dims=p["llm"], vision_dims=p["vision"],
                             audio_dims=p["audio"], tts_dims=p["tts"], token2wav_dims=p["t2w"])
        log(f"  checkpoint in {time.perf_counter() - t0:.0f} s")
        done.write_text(json.dumps(p, sort_keys=True))
    # the F16 conversion with F16 TTS matrices keeps the folder name of earlier versions
    gguf = root / ("gguf-F16" if tts_type == "f16" else f"gguf-F16-tts-{tts_type}")
    llm, omni = gguf / "MiniCPM-o-4_5-F16.gguf", gguf / "MiniCPM-o-4_5-omni-F16.gguf"
    done = gguf / ".complete"
    if not done.exists():
        log(f"converting to GGUF F16 (TTS matrices {tts_type})")
        t0 = time.perf_counter()
        convert_checkpoint(hf, gguf, outtype="f16", tts_outtype=tts_type, quiet=True)
        log(f"  converted in {time.perf_counter() - t0:.0f} s")
        done.write_text(tts_type)
    if llm_type != "F16":
        quantized = gguf / f"MiniCPM-o-4_5-{llm_type}.gguf"
        if not quantized.exists():
            log(f"quantizing the LLM to {llm_type}")
            quantize_llm_file(str(llm), llm_type)
        llm = quantized
    return llm, omni


def frame_448(seed: int) -> np.ndarray:
    """A smooth 448x448 RGB picture (gradients + a few blobs): one slice, 1024 patches."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:448, 0:448] / 448.0
    img = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 4 * y)], -1)
    for _ in range(5):
        cx, cy, r = rng.uniform(0, 1, 3)
        img += 0.3 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.02 + 0.05 * r))[..., None] * rng.uniform(-1, 1, 3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def conversation(omni, n_listen: int, n_speak: int, n_tokens: int) -> list[list[int]]:
    """Scripted decisions: listen, one speaking turn, listen again."""
    ids = omni.tokenize(WORDS)
    assert len(ids) >= n_speak * n_tokens, "WORDS too short for the speaking turn"
    first = n_listen // 2
    script = [[LISTEN]] * first
    for k in range(n_speak):
        words = ids[k * n_tokens:(k + 1) * n_tokens]
        end = [TURN_EOS] if k == n_speak - 1 else []
        script.append([SPEAK] + words + end + [CHUNK_EOS])
    script += [[LISTEN]] * (n_listen - first)
    return script


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------
def run_conversation(omni, script: list[list[int]], wait_audio: bool, t2w_steps: int) -> dict:
    dx = omni.as_duplex(seed=SEED)
    assert dx.generate_audio, "the model file has no speech components"
    dx.prepare(PREFIX, SUFFIX)
    pcm = speechlike(len(script) + 1.1, SEED + 5)
    units = []
    pending = None  # the overlapped unit whose audio is still being made
    t_start = time.perf_counter()
    for k, decisions in enumerate(script):
        piece = pcm[:16560] if k == 0 else pcm[16560 + 16000 * (k - 1):16560 + 16000 * k]
        t0 = time.perf_counter()
        dx.streaming_prefill(audio_waveform=piece)
        t1 = time.perf_counter()
        if pending is not None:
            unit, audio, _ = dx.take_audio()
            assert unit == pending["unit"] and audio is not None
            pending["t_audio"] = time.perf_counter()
            pending["audio_samples"] = int(audio.size)
            pending = None
        t2 = time.perf_counter()
        r = dx.streaming_generate(decode_mode="greedy", _scripted=decisions, wait_audio=wait_audio)
        t3 = time.perf_counter()
        u = {"k": k, "speak": not r["is_listen"], "n_text_tokens": len(r["speak_token_ids"]),
             "end_of_turn": r["end_of_turn"], "unit": r["unit"], "t_prefill_start": t0,
             "prefill_s": t1 - t0, "take_wait_s": t2 - t1, "generate_s": t3 - t2, "unit_s": t3 - t0}
        if wait_audio:
            u["t_audio"] = t3
            u["audio_samples"] = int(r["audio_waveform"].size)
        else:
            pending = u
        units.append(u)
        log(f"  {'wait' if wait_audio else 'overlap'} unit {k:2d} {'speak' if u['speak'] else 'listen'}: "
            f"prefill {u['prefill_s']:.3f} s, generate {u['generate_s']:.3f} s, take {u['take_wait_s']:.3f} s "
            f"(load {loadavg()[0]:.2f})")
    if pending is not None:
        t0 = time.perf_counter()
        unit, audio, _ = dx.take_audio()
        pending["t_audio"] = time.perf_counter()
        pending["audio_samples"] = int(audio.size)
        units[-1]["tail_take_s"] = pending["t_audio"] - t0
    wall = time.perf_counter() - t_start
    for u in units:
        u["time_to_audio_s"] = u.pop("t_audio") - u.pop("t_prefill_start")
    return summarize_units(units, wall)


def stats(values: list[float]) -> dict:
    if not values:
        return {}
    return {"mean": round(statistics.mean(values), 4), "median": round(statistics.median(values), 4),
            "min": round(min(values), 4), "max": round(max(values), 4), "n": len(values)}


def summarize_units(units: list[dict], wall: float) -> dict:
    listen = [u for u in units if not u["speak"]]
    speak = [u for u in units if u["speak"]]
    first_speak = speak[0] if speak else None
    return {
        "units": len(units), "wall_s": round(wall, 3),
        "real_time_factor": round(wall / len(units), 3),  # compute seconds per second of conversation
        "prefill_s": stats([u["prefill_s"] for u in units]),
        "listen_decision_s": stats([u["generate_s"] for u in listen]),
        "speak_generate_s": stats([u["generate_s"] for u in speak]),
        "listen_unit_s": stats([u["unit_s"] for u in listen]),
        "speak_unit_s": stats([u["unit_s"] for u in speak]),
        "take_audio_wait_s": stats([u["take_wait_s"] for u in units[1:]]),
        "time_to_audio_speaking_s": stats([u["time_to_audio_s"] for u in speak]),
        "time_to_first_audio_of_turn_s": round(first_speak["time_to_audio_s"], 4) if first_speak else None,
        "per_unit": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in u.items()} for u in units],
    }


def run_frames(omni, n: int) -> dict:
    """Units whose prefill carries a 448x448 frame as well as 1 s of audio (decisions: listen)."""
    dx = omni.as_duplex(seed=SEED, generate_audio=False)
    t0 = time.perf_counter()
    dx.prepare(PREFIX, SUFFIX, frame_size=(448, 448))  # the vision tower packed here, not at frame 0
    prepare_s = time.perf_counter() - t0
    log(f"  prepare with frame_size 448x448: {prepare_s:.3f} s")
    pcm = speechlike(n + 1.1, SEED + 6)
    with_frame = []
    for k in range(n):
        piece = pcm[:16560] if k == 0 else pcm[16560 + 16000 * (k - 1):16560 + 16000 * k]
        t0 = time.perf_counter()
        dx.streaming_prefill(audio_waveform=piece, frame_list=[frame_448(k)])
        with_frame.append(time.perf_counter() - t0)
        dx.streaming_generate(decode_mode="greedy", _scripted=[LISTEN])
        log(f"  frame unit {k}: prefill (audio + 448x448 frame) {with_frame[-1]:.3f} s (load {loadavg()[0]:.2f})")
    return {"prepare_with_frame_size_s": round(prepare_s, 4), "prefill_audio_plus_frame_s": stats(with_frame),
            "note": "frame units decide listen; one 448x448 frame, max_slice_nums 1 (64 query tokens)"}


def run_llm_text_prefill(omni, n: int) -> dict:
    """The LLM's share of a unit's prefill: a unit of 11 text tokens (<unit> + 10, the same count
    of LLM positions as 10 audio embeddings) without any audio."""
    dx = omni.as_duplex(seed=SEED, generate_audio=False)
    dx.prepare(PREFIX, SUFFIX)
    words = WORDS.split()
    times = []
    for k in range(n):
        text = " ".join(words[10 * k:10 * k + 10])  # about 10 tokens
        t0 = time.perf_counter()
        dx.streaming_prefill(text_list=[text])
        times.append(time.perf_counter() - t0)
        dx.streaming_generate(decode_mode="greedy", _scripted=[LISTEN])
    return stats(times)


def synthesizer_takes_compute() -> bool:
    """Whether this build's _testing.SpeechSynthesizer accepts compute_type (pybind11 signature)."""
    from minicpmo_cpp import _testing

    return "compute_type" in (_testing.SpeechSynthesizer.__init__.__doc__ or "")


def run_token2wav_alone(omni_path: Path, threads: int, n_units: int, compute: str) -> dict:
    """Token2Wav alone over 25 speech tokens per unit, one turn of n_units units (the last ends it);
    the flow in `compute` where the binding takes it, else in F32 (what its constructor does)."""
    from minicpmo_cpp import _testing

    t0 = time.perf_counter()
    extra = {"compute_type": compute} if synthesizer_takes_compute() else {}
    synth = _testing.SpeechSynthesizer(str(omni_path), n_threads=threads, device="cpu", seed=0, **extra)
    synth.stream_begin("")
    log(f"  synthesizer loaded and voice primed in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(SEED + 9)
    times = []
    for k in range(n_units):
        tokens = rng.integers(0, 6561, size=25).tolist()
        t0 = time.perf_counter()
        synth.stream_push_duplex(tokens, turn_end=k == n_units - 1)
        times.append(time.perf_counter() - t0)
        log(f"  token2wav alone unit {k}: {times[-1]:.3f} s")
    return stats(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--listen-units", type=int, default=4)
    ap.add_argument("--speak-units", type=int, default=4)
    ap.add_argument("--speak-tokens", type=int, default=10, help="text tokens per speaking unit (at most 18)")
    ap.add_argument("--frame-units", type=int, default=1)
    ap.add_argument("--t2w-units", type=int, default=2, help="units of Token2Wav timed alone")
    ap.add_argument("--budget-s", type=float, default=600.0,
                    help="stages not started within this many seconds are skipped (and listed)")
    ap.add_argument("--t2w-steps", type=int, default=5, help="flow-matching steps per Token2Wav window")
    ap.add_argument("--compute", default="bf16", choices=COMPUTE_TYPES,
                    help="compute_type of the session (encoders and the Token2Wav flow): f32, bf16 or int8")
    ap.add_argument("--modes", default="wait,overlap")
    ap.add_argument("--llm-type", default="Q4_K_M",
                    help="the LLM file's type: the README's model file by default (F16, or any minicpmo-quantize size)")
    ap.add_argument("--tts-type", default="q8_0", choices=("q8_0", "f16"),
                    help="the TTS matrices in the companion (q8_0: the converter's default for f16 files)")
    ap.add_argument("--work", default=str(cache_dir() / "bench-duplex"))
    args = ap.parse_args()
    if not 1 <= args.speak_tokens <= 17:
        ap.error("--speak-tokens must be 1..17 (a unit holds <|speak|>, the tokens, <|turn_eos|>, <|chunk_eos|>)")

    require_onednn_build([args.compute])
    from minicpmo_cpp import OmniSession, _testing

    load_before = loadavg()
    t_begin = time.perf_counter()
    skipped = []

    def in_budget(stage: str) -> bool:
        if time.perf_counter() - t_begin < args.budget_s:
            return True
        log(f"skipping {stage}: over the time budget")
        skipped.append(stage)
        return False

    llm, omni_path = make_model(Path(args.work), args.t2w_steps, args.llm_type.upper(), args.tts_type)
    log(f"loading {llm.name} (threads {args.threads}, compute_type {args.compute}, CPU {cpu_name()})")
    omni = OmniSession(str(llm), n_threads=args.threads, n_gpu_layers=0, n_ctx=8192, seed=SEED,
                       compute_type=args.compute)
    script = conversation(omni, args.listen_units, args.speak_units, args.speak_tokens)

    # warm-up: one listening unit and one speaking unit (first-call graph allocation, page-in)
    log("warm-up")
    run_conversation(omni, [[LISTEN], script[args.listen_units // 2]], True, args.t2w_steps)

    results: dict = {}
    for mode in args.modes.split(","):
        log(f"conversation, mode {mode}: {len(script)} units")
        results[mode] = run_conversation(omni, script, mode == "wait", args.t2w_steps)
        results[mode]["load_after"] = loadavg()
    log("LLM share of a prefill (10 text tokens instead of audio)")
    llm_prefill = run_llm_text_prefill(omni, 4)
    t2w = {}
    if args.t2w_units > 0 and in_budget("token2wav_alone"):
        log("Token2Wav alone")
        t2w = run_token2wav_alone(omni_path, args.threads, args.t2w_units, args.compute)
    frames = {}
    if args.frame_units > 0 and in_budget("frames"):
        log(f"frames: {args.frame_units} units with a 448x448 frame")
        frames = run_frames(omni, args.frame_units)

    # stage split of a speaking unit (wait mode): prefill = audio encoder + LLM (the LLM part timed
    # with 10 text tokens instead of the audio) | LLM generate (overlap mode's generate, the speech
    # is queued) | speech = wait-mode generate - overlap-mode generate (TTS + Token2Wav on the
    # speech thread). Token2Wav alone is reported beside it, not subtracted: a separate synthesizer
    # under a different load is no exact share of the pipeline's speech time.
    stages = {}
    if "wait" in results:
        w = results["wait"]
        stages["prefill_audio_s"] = w["prefill_s"]["mean"]
        stages["prefill_llm_part_s"] = llm_prefill["mean"]
        stages["prefill_audio_encoder_part_s"] = round(w["prefill_s"]["mean"] - llm_prefill["mean"], 4)
        if "overlap" in results and w["speak_generate_s"]:
            llm_gen = results["overlap"]["speak_generate_s"]["mean"]
            stages["llm_speak_generate_s"] = llm_gen
            stages["speech_tts_plus_token2wav_s"] = round(w["speak_generate_s"]["mean"] - llm_gen, 4)
        if frames:
            stages["vision_frame_s"] = round(frames["prefill_audio_plus_frame_s"]["mean"] - w["prefill_s"]["mean"], 4)
    per_unit_stages = {k: v for k, v in stages.items() if k != "prefill_audio_s"}
    slowest = max(per_unit_stages, key=per_unit_stages.get) if per_unit_stages else None
    no_frame = {k: v for k, v in per_unit_stages.items() if k != "vision_frame_s"}
    slowest_no_frame = max(no_frame, key=no_frame.get) if no_frame else None

    out = {
        "bench": "duplex",
        "model": {"llm": f"Qwen3-0.6B shape (NOT the 8B), random weights, {args.llm_type.upper()}",
                  "tts_matrices": args.tts_type, **model_params(args.t2w_steps), "gguf": str(llm)},
        "threads": args.threads, "cpu": cpu_name(),
        # the session's compute_type (encoders + Token2Wav flow); Token2Wav alone uses its own synthesizer
        "compute_type": args.compute,
        "token2wav_alone_compute_type": args.compute if synthesizer_takes_compute() else "f32",
        "system_info": _testing.system_info().strip(),
        "script": {"listen_units": args.listen_units, "speak_units": args.speak_units,
                   "speak_text_tokens_per_unit": args.speak_tokens, "decisions": "scripted (_scripted)"},
        "results": results, "llm_text_prefill_s": llm_prefill, "frames": frames, "token2wav_alone_s": t2w,
        "stages_mean_s": stages, "slowest_stage": slowest, "slowest_stage_without_frames": slowest_no_frame,
        "peak_rss_mib": round(proc_status_kib("VmHWM") / 1024, 1), "skipped_stages": skipped,
        "bench_wall_s": round(time.perf_counter() - t_begin, 1),
        "loadavg_before": load_before, "loadavg_after": loadavg(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
