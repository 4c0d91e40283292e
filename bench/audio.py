"""Audio-encoding speed of minicpmo-cpp versus PyTorch (transformers' WhisperEncoder modules),
same weights, same thread count, each in F32 and in BF16, and ours in int8.

Makes a random-weight checkpoint with the real audio shape (Whisper-medium encoder: d_model 1024,
24 layers, 16 heads, FFN 4096, 80 mels, 1500 positions; projector 1024 -> 4096 -> 4096) and a
1-layer 4096-wide LLM, converts it with our converter (F16, Q8_0). PyTorch runs the same weights,
read from the checkpoint as float32, through transformers' WhisperEncoder modules (conv stem,
position table, WhisperEncoderLayer with a DynamicCache or a 4-D additive mask, final LayerNorm)
plus nn.Linear/ReLU projector and AvgPool1d, the way MiniCPM-o's encoder drives them.

Sides (--compute f32,bf16,int8 picks the compute types, f32 and bf16 by default), each in its own process:
  * minicpmo_cpp_f32 / _bf16 / _int8: OmniSession(compute_type="f32" / "bf16" / "int8"), always passed
    explicitly ("auto" follows the CPU); bf16 = the encoder's matrix products through oneDNN in BF16,
    int8 = as 8-bit integer products through oneDNN;
  * torch_f32 / torch_bf16: the modules below, torch_bf16 under torch.autocast("cpu", dtype=torch.bfloat16);
    no torch_int8: int8 is ours only, compared with torch_f32 and minicpmo_cpp_f32.
Timed in rounds of back-to-back runs of all sides (chunk by chunk, clip by clip), the order
rotating from one to the next (bench_common.round_order):
  * streaming: consecutive 1-s chunks through the encoder's key/value cache (cache growing), per
    chunk: mel chunk in memory -> LLM tokens. simplex = 100 mel frames per chunk; duplex = 102/104
    frames (2 frames of conv context on each side, dropped after the stem).
    ours: _testing.hooks(session).audio_stream_chunk(mel, front, back) (minicpmo_cpp._testing).
  * 30-s clip (3000 mel frames, 1-s block-causal attention, the chat path):
    ours: _session.audio_encode_mel(mel, "block") and, end to end from float32 PCM,
    OmniSession.encode_audio(pcm) (our C++ log-mel included); torch: the same mel through the
    encoder with the block-causal 4-D mask, and end to end WhisperFeatureExtractor + the same.
Also reported: peak RSS of each side, the max relative difference of each side's tokens against
the reference side's (torch_f32 where it ran, else torch_bf16, else minicpmo_cpp_f32), the ratios of
each pair (a/b = a_ms / b_ms), and speed_limits: the FLOPs of each timed call, the GFLOP/s each side
sustained and its share of the machine's F32 FMA peak measured in the run, and the rate the >= 2x
target implies, next to torch's F32 GEMM rate at the encoder's shapes (gemm_probe).
Prints one JSON document on stdout; progress goes to stderr.

    python bench/audio.py [--threads 2] [--types F16,Q8_0] [--compute f32,bf16,int8] [--chunks 20] [--rounds 1]
                          [--rounds-30s 1]
                          [--omp-wait-policy default|passive|active] [--torch-attn sdpa|eager]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from worker_env import thread_env
from bench_common import (TORCH_COMPUTE_TYPES, LineWorker, cache_dir, cpu_kernels, cpu_name, f32_fma_peak,
                          paired_ratio, parse_compute, proc_status_kib, ratio_pairs, require_onednn_build, round_order,
                          throughput, torch_gemm_rates, torch_precision)

# the MiniCPM-o 4.5 audio tower: Whisper-medium's encoder
AUDIO_MEDIUM = dict(d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096)
# the LLM only has to exist: 4096 wide (the projector's output width) with 1 layer and a small FFN
LLM_4096 = dict(hidden_size=4096, num_hidden_layers=1, num_attention_heads=32, num_key_value_heads=8,
                head_dim=128, intermediate_size=256)
SEED = 0
SAMPLE_RATE = 16000
CLIP_SECONDS = 30
CHUNK_FRAMES = 100     # mel frames per 1-s streaming chunk
CONTEXT_FRAMES = 2     # duplex conv context on each side of a chunk
MODES = ("simplex", "duplex")


def log(msg: str) -> None:
    print(f"[bench/audio] {msg}", file=sys.stderr, flush=True)


def rss_fields() -> dict:
    return {"peak_rss_kib": proc_status_kib("VmHWM"), "rss_kib": proc_status_kib("VmRSS"),
            "rss_anon_kib": proc_status_kib("RssAnon"), "rss_file_kib": proc_status_kib("RssFile")}


# ---------------------------------------------------------------------------------------------
# models and inputs (cached in the work directory, keyed by their parameters)
# ---------------------------------------------------------------------------------------------
def model_key() -> str:
    params = json.dumps({"audio": AUDIO_MEDIUM, "llm": LLM_4096, "seed": SEED, "dtype": "float16"}, sort_keys=True)
    return hashlib.sha1(params.encode()).hexdigest()[:10]


def companion_components(omni: Path) -> list[str]:
    from gguf import GGUFReader

    field = GGUFReader(omni).get_field("minicpmo.components")
    return [] if field is None else [str(v) for v in field.contents()]


def make_models(work: Path, types: list[str]) -> tuple[Path, dict[str, Path]]:
    """(HF checkpoint dir, outtype label -> our LLM GGUF), generated once. The checkpoint is float16:
    F16 conversion keeps its weights exactly, and torch reads the same numbers as float32."""
    from minicpmo_cpp.convert import convert_checkpoint
    from minicpmo_cpp.convert.make_tiny import make_tiny_checkpoint

    hf = work / "hf"
    done = hf / ".complete"  # written last: an interrupted generation is redone
    if not done.exists():
        log("writing a random-weight checkpoint with the Whisper-medium audio shape (about 3 GB, a few minutes)")
        make_tiny_checkpoint(hf, seed=SEED, dtype="float16", llm_dims=LLM_4096, audio_dims=AUDIO_MEDIUM,
                             components=("audio",))
        done.write_text(model_key())
    models = {}
    for label in types:
        gguf_dir = work / f"gguf-{label}"
        llm = gguf_dir / f"MiniCPM-o-4_5-{label}.gguf"
        omni = gguf_dir / f"MiniCPM-o-4_5-omni-{label}.gguf"
        if not (llm.exists() and omni.exists() and "audio" in companion_components(omni)):
            log(f"converting to GGUF {label} (LLM + omni companion with the audio tower)")
            convert_checkpoint(hf, gguf_dir, outtype=label.lower(), quiet=True)
        models[label] = llm
    return hf, models


def speech_like_pcm(seconds: int, seed: int) -> np.ndarray:
    """float32 16 kHz mono: a voiced source (gliding pitch, 30 harmonics with two moving formant
    bumps) cut into 4-Hz syllables with random pauses, plus a little noise. Speech-shaped spectra keep
    the log-mel in its usual range rather than the flat picture of white noise."""
    rng = np.random.default_rng(seed)
    n = seconds * SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    f0 = 140.0 + 35.0 * np.sin(2 * np.pi * 0.37 * t) + 10.0 * np.sin(2 * np.pi * 2.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    f1 = 600.0 + 250.0 * np.sin(2 * np.pi * 1.3 * t + 1.0)
    f2 = 1700.0 + 500.0 * np.sin(2 * np.pi * 0.9 * t + 2.0)
    x = np.zeros(n)
    for h in range(1, 31):
        fh = h * f0
        gain = np.exp(-((fh - f1) / 300.0) ** 2) + 0.6 * np.exp(-((fh - f2) / 400.0) ** 2) + 0.05
        x += gain * np.sin(h * phase) / np.sqrt(h)
    syllable = np.sin(2 * np.pi * 4.0 * t) ** 2
    gate = np.repeat(rng.random(seconds * 4) > 0.25, SAMPLE_RATE // 4)  # some quarter seconds are silent
    x = x * syllable * gate + 0.02 * rng.standard_normal(n)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def make_inputs(work: Path) -> tuple[Path, Path]:
    """30 s of PCM and its log-mel by transformers' WhisperFeatureExtractor (80 x 3000): the
    streaming chunks are cut from this mel, the 30-s clip is all of it."""
    pcm_path, mel_path = work / "pcm-30s.npy", work / "mel-30s.npy"
    if not (pcm_path.exists() and mel_path.exists()):
        pcm = speech_like_pcm(CLIP_SECONDS, SEED + 1)
        np.save(pcm_path, pcm)
        np.save(mel_path, whisper_features(pcm))
    return pcm_path, mel_path


def whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE, hop_length=160,
                                   chunk_length=CLIP_SECONDS, n_fft=400)


def whisper_features(pcm: np.ndarray, fe=None) -> np.ndarray:
    """(80, 3000) log-mel of up to 30 s of PCM, as MiniCPM-o's processor computes it."""
    feats = (fe or whisper_feature_extractor())(pcm, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    return np.ascontiguousarray(feats, dtype=np.float32)


def stream_chunk(mel: np.ndarray, k: int, mode: str) -> tuple[np.ndarray, int, int]:
    """Mel frames of streaming chunk k as the streaming mel processor emits them, with the conv
    context frames in front / behind (duplex: 2 each, none in front of the first chunk)."""
    start = CHUNK_FRAMES * k
    if mode == "simplex":
        return np.ascontiguousarray(mel[:, start:start + CHUNK_FRAMES]), 0, 0
    front = min(CONTEXT_FRAMES, start)
    end = start + CHUNK_FRAMES + CONTEXT_FRAMES
    return np.ascontiguousarray(mel[:, start - front:end]), front, CONTEXT_FRAMES


# ---------------------------------------------------------------------------------------------
# the sides, each in a worker process
# ---------------------------------------------------------------------------------------------
class OursSide:
    def __init__(self, model: str, threads: int, compute: str):
        from minicpmo_cpp import OmniSession, _testing

        self.session = OmniSession(model, n_threads=threads, n_gpu_layers=0, n_ctx=512, compute_type=compute)
        self.native = _testing.hooks(self.session)
        self.info = {"system_info": _testing.system_info().strip(), "compute_type": compute}

    def reset_stream(self) -> None:
        self.native.audio_stream_reset()

    def stream_chunk(self, mel: np.ndarray, front: int, back: int) -> np.ndarray:
        return self.native.audio_stream_chunk(mel, front, back)[0]

    def encode_mel(self, mel: np.ndarray) -> np.ndarray:
        return self.native.audio_encode_mel(mel, "block")[0]

    def encode_pcm(self, pcm: np.ndarray) -> np.ndarray:
        return self.session.encode_audio(pcm)


class TorchSide:
    """MiniCPM-o's audio path in PyTorch on transformers' WhisperEncoder modules, float32 weights;
    compute "bf16": every forward under torch.autocast("cpu", dtype=torch.bfloat16)."""

    def __init__(self, hf_dir: str, threads: int, attn: str, compute: str):
        import torch
        from torch import nn
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        self.torch, self.nn, self.compute = torch, nn, compute
        cfg = json.loads((Path(hf_dir) / "config.json").read_text())
        a = cfg["audio_config"]
        wcfg = WhisperConfig(d_model=a["d_model"], encoder_layers=a["encoder_layers"],
                             encoder_attention_heads=a["encoder_attention_heads"], encoder_ffn_dim=a["encoder_ffn_dim"],
                             num_mel_bins=a["num_mel_bins"], max_source_positions=a["max_source_positions"],
                             activation_function=a["activation_function"], dropout=0.0, attention_dropout=0.0,
                             activation_dropout=0.0)
        wcfg._attn_implementation = attn
        state = self._load_state(Path(hf_dir))
        with torch.device("meta"):  # no random init of 300 M parameters: the checkpoint's are assigned
            enc = WhisperEncoder(wcfg)
            d_out = state["audio_projection_layer.linear1.weight"].shape[0]
            proj = nn.Module()
            proj.linear1 = nn.Linear(a["d_model"], d_out)
            proj.linear2 = nn.Linear(d_out, d_out)
        enc.load_state_dict({k[len("apm."):]: v for k, v in state.items() if k.startswith("apm.")},
                            strict=True, assign=True)
        proj.load_state_dict({k[len("audio_projection_layer."):]: v for k, v in state.items()
                              if k.startswith("audio_projection_layer.")}, strict=True, assign=True)
        for m in (enc, proj):
            m.eval()
            left = [n for n, t in list(m.named_parameters()) + list(m.named_buffers()) if t.is_meta]
            if left:
                raise RuntimeError(f"torch modules left without weights: {left[:5]}")
        for i, layer in enumerate(enc.layers):
            layer.self_attn.layer_idx = i  # the DynamicCache is indexed by layer, as MiniCPM-o's encoder does
        self.enc, self.proj = enc, proj
        self.pool_step = int(cfg["audio_pool_step"])
        # encoder frames per attention block: chunk seconds * 100 mel frames/s / conv stride 2
        self.block = int(round(cfg["audio_chunk_length"] * SAMPLE_RATE / 160 / 2))
        self.n_positions = a["max_source_positions"]
        self.cache = None
        self.features = whisper_feature_extractor()  # made once: its mel filter bank is not part of the timing
        self.info = {"torch": torch.__version__, "attn_implementation": attn, "torch_threads": torch.get_num_threads(),
                     "compute_type": compute,
                     "autocast": "torch.autocast('cpu', dtype=torch.bfloat16)" if compute == "bf16" else None,
                     "torch_config": torch.__config__.parallel_info().splitlines()[:8]}
        import transformers

        self.info["transformers"] = transformers.__version__

    def _load_state(self, hf: Path) -> dict:
        from safetensors.torch import load_file

        files = sorted(hf.glob("model*.safetensors"))
        state = {}
        for f in files:
            for k, v in load_file(str(f)).items():
                if k.startswith(("apm.", "audio_projection_layer.")):
                    state[k] = v.float()
        return state

    # -- pieces of MiniCPM-o's audio path --
    def _stem(self, mel: np.ndarray):
        gelu = self.nn.functional.gelu
        x = self.torch.from_numpy(mel)[None]
        h = gelu(self.enc.conv2(gelu(self.enc.conv1(x))))
        return h.transpose(1, 2)  # (1, T', D)

    def _layers(self, x, mask, cache):
        for layer in self.enc.layers:
            x = layer(x, mask, cache=cache) if cache is not None else layer(x, mask)
        return self.enc.layer_norm(x)

    def _tokens(self, h):
        e = self.proj.linear2(self.nn.functional.relu(self.proj.linear1(h)))
        e = self.nn.functional.avg_pool1d(e.transpose(1, 2), self.pool_step, self.pool_step).transpose(1, 2)
        return e[0].float().numpy()

    # -- the commands --
    def reset_stream(self) -> None:
        from transformers.cache_utils import DynamicCache

        self.cache = DynamicCache()

    def stream_chunk(self, mel: np.ndarray, front: int, back: int) -> np.ndarray:
        with self.torch.inference_mode(), torch_precision(self.torch, self.compute):
            x = self._stem(mel)
            n_stem = x.shape[1]
            x = x[:, (front + 1) // 2:n_stem - (back + 1) // 2]
            off = self.cache.get_seq_length(0)
            if off > 0 and off + n_stem >= self.n_positions:  # the position table restarts (not reached here)
                self.reset_stream()
                off = 0
            x = x + self.enc.embed_positions.weight[off:off + x.shape[1]]
            return self._tokens(self._layers(x, None, self.cache))

    def encode_mel(self, mel: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode(), torch_precision(torch, self.compute):
            x = self._stem(mel)
            n = x.shape[1]
            x = x + self.enc.embed_positions.weight[:n]
            i = torch.arange(n)[:, None]
            keep = torch.arange(n)[None, :] < (i // self.block + 1) * self.block  # 1-s block-causal
            mask = torch.zeros(n, n).masked_fill_(~keep, float("-inf"))[None, None]
            return self._tokens(self._layers(x, mask, None))

    def encode_pcm(self, pcm: np.ndarray) -> np.ndarray:
        return self.encode_mel(whisper_features(pcm, self.features))


def serve(side) -> int:
    """Answers one JSON command per stdin line with one JSON line on stdout:
    {"cmd": "chunk", "mel": F, "mode": simplex|duplex, "k": K} runs streaming chunk K (K = 0 resets
    the stream); {"cmd": "save_stream", "out": F} saves the tokens of the chunks since the reset;
    {"cmd": "encode_mel", "mel": F, "out": F|null} / {"cmd": "encode_pcm", "pcm": F, "out": ...}.
    Replies carry wall and process CPU milliseconds of the timed call and this process's memory."""
    mels: dict[str, np.ndarray] = {}
    stream_tokens: list[np.ndarray] = []
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        try:
            out = None
            if req["cmd"] == "chunk":
                if req["mel"] not in mels:
                    mels[req["mel"]] = np.load(req["mel"])
                mel = mels[req["mel"]]
                chunk, front, back = stream_chunk(mel, req["k"], req["mode"])
                if req["k"] == 0:
                    side.reset_stream()
                    stream_tokens = []
                fn = lambda: side.stream_chunk(chunk, front, back)  # noqa: E731
            elif req["cmd"] == "save_stream":
                np.save(req["out"], np.concatenate(stream_tokens).astype(np.float32))
                print(json.dumps({"saved": len(stream_tokens)}), flush=True)
                continue
            elif req["cmd"] in ("encode_mel", "encode_pcm"):
                x = np.load(req["mel"] if req["cmd"] == "encode_mel" else req["pcm"])
                fn = (lambda: side.encode_mel(x)) if req["cmd"] == "encode_mel" else (lambda: side.encode_pcm(x))
            else:
                raise ValueError(f"unknown command {req['cmd']!r}")
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            reply = {"ms": (time.perf_counter() - t0) * 1e3, "cpu_ms": (time.process_time() - c0) * 1e3}
            if req["cmd"] == "chunk":
                stream_tokens.append(out)
            elif req.get("out"):
                np.save(req["out"], np.ascontiguousarray(out, dtype=np.float32))
            reply.update(n_tokens=int(out.shape[0]), n_embd=int(out.shape[1]), **rss_fields())
        except Exception as e:  # reported to the parent as a protocol error, not a traceback
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    return 0


def worker_main(kind: str, model: str, threads: int, attn: str, compute: str) -> int:
    rss_start = proc_status_kib("VmRSS")
    t0 = time.perf_counter()
    try:
        side = OursSide(model, threads, compute) if kind == "ours" else TorchSide(model, threads, attn, compute)
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps({"ready": True, "load_ms": (time.perf_counter() - t0) * 1e3, "rss_start_kib": rss_start,
                      "rss_after_load_kib": proc_status_kib("VmRSS"), **side.info}), flush=True)
    return serve(side)


class Worker(LineWorker):
    """The parent's handle on one side's process: JSON requests, JSON answers."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path):
        super().__init__(name, argv, log_path, json.dumps({"cmd": "quit"}), env)

    def ask(self, **req) -> dict:
        return self.request(json.dumps(req))


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
def agreement(ours: Path, ref: Path) -> dict:
    """max|ours - torch| / max|torch| over all tokens (the tests' metric), the relative L2 error and
    the worst per-token cosine similarity."""
    a, b = np.load(ours).astype(np.float64), np.load(ref).astype(np.float64)
    if a.shape != b.shape:
        raise RuntimeError(f"token shapes differ: ours {a.shape}, torch {b.shape}")
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"max_rel": float(f"{np.max(np.abs(a - b)) / np.max(np.abs(b)):.3e}"),
            "rel_l2": float(f"{np.linalg.norm(a - b) / np.linalg.norm(b):.3e}"),
            "min_cosine": round(float(cos.min()), 6), "n_tokens": int(a.shape[0])}


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


def r1(x: float) -> float:
    return round(float(x), 1)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# FLOP model (multiply-add = 2 FLOPs) and the machine's F32 GEMM rate through torch (MKL)
# ---------------------------------------------------------------------------------------------
AUDIO_OUT = LLM_4096["hidden_size"]  # projector output width


def audio_flops(n_mel: int, keys_per_query: list[int]) -> float:
    """FLOPs of one encoder call on n_mel mel frames: conv stem, 24 layers (projections, FFN and the
    two attention products over the keys each query frame sees), projector. Pooling and norms are
    not counted."""
    D, F_, L = AUDIO_MEDIUM["d_model"], AUDIO_MEDIUM["encoder_ffn_dim"], AUDIO_MEDIUM["encoder_layers"]
    T = (n_mel - 1) // 2 + 1
    stem = 2 * (80 * 3 * D * n_mel + D * 3 * D * T)
    layers = L * (2 * T * (4 * D * D + 2 * D * F_) + 2 * 2 * D * sum(keys_per_query))
    proj = 2 * T * (D * AUDIO_OUT + AUDIO_OUT * AUDIO_OUT)
    return float(stem + layers + proj)


def streaming_flops(chunks: int) -> float:
    """Mean FLOPs of a simplex chunk (100 mel frames, 50 queries) over `chunks` chunks from an empty cache."""
    return sum(audio_flops(CHUNK_FRAMES, [50 * (k + 1)] * 50) for k in range(chunks)) / chunks


def clip_flops() -> float:
    """The 30-s clip with 1-s block-causal attention: query i sees the keys up to the end of its block."""
    frames = 50
    return audio_flops(CLIP_SECONDS * 100, [(i // frames + 1) * frames for i in range(CLIP_SECONDS * 50)])


def gemm_probe(threads: int) -> dict:
    """torch F32 GEMM throughput (MKL) at the encoder's shapes: a 1-s chunk's FFN up/down products
    (50 x 1024 -> 4096, 50 x 4096 -> 1024) and the 30-s clip's FFN up product (1500 x 1024 -> 4096)."""
    import torch

    torch.set_num_threads(threads)
    return torch_gemm_rates({"chunk_ffn_up_50x1024x4096": (50, 1024, 4096),
                             "chunk_ffn_down_50x4096x1024": (50, 4096, 1024),
                             "clip_ffn_up_1500x1024x4096": (1500, 1024, 4096)})


def speed_limits(res: dict, probe: dict, chunks: int, peak: dict, names: list[str]) -> dict:
    """What the ≥ 2x target asks of the machine: the GFLOP/s it implies against torch's GEMM rate, and
    what each side sustained, also as a fraction of the measured F32 FMA peak (bench_common.throughput)."""
    best = max(v["gflops"] for v in probe.values())
    out = {}
    for name, flops, ms in (
            ("streaming_simplex_chunk", streaming_flops(chunks),
             {s: res["streaming"]["simplex"][s]["median_ms"] for s in names}),
            ("clip_30s_from_mel", clip_flops(), {s: res["clip_30s"]["encoder_from_mel"][s]["ms"] for s in names})):
        ent = {"gflop": round(flops / 1e9, 2), "ms_at_torch_best_gemm_rate": round(flops / best / 1e6, 1)}
        if "torch_f32" in ms:
            ent["gflops_needed_for_2x_torch_f32"] = round(2 * flops / ms["torch_f32"] / 1e6, 1)
        ent.update({s: throughput(flops, ms[s], peak) for s in names})
        out[name] = ent
    return out


def bench_type(label: str, llm: Path, hf: Path, mel: Path, pcm: Path, args, work: Path) -> dict:
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    me = str(Path(__file__).resolve())
    env = thread_env(args.threads, args.omp_wait_policy)
    # fresh processes per type: the peak RSS belongs to this type's run
    argv = {}
    for c in args.compute:
        argv[f"minicpmo_cpp_{c}"] = [sys.executable, me, "--worker", "ours", str(llm), "--threads", str(args.threads),
                                     "--compute", c]
        if c in TORCH_COMPUTE_TYPES:  # int8: ours only
            argv[f"torch_{c}"] = [sys.executable, me, "--worker", "torch", str(hf), "--threads", str(args.threads),
                                  "--torch-attn", args.torch_attn, "--compute", c]
    sides: dict[str, Worker] = {}
    try:
        for name, cmd in argv.items():
            sides[name] = Worker(name, cmd, env, logs / f"{name}-{label}.log")
    except BaseException:
        for w in sides.values():
            w.close()
        raise
    names = list(sides)
    ref = next(n for n in ("torch_f32", "torch_bf16", "minicpmo_cpp_f32", names[0]) if n in names)
    out = {s: work / f"tokens-{s}-{label}" for s in sides}
    for d in out.values():
        d.mkdir(exist_ok=True)
    # runs[side][what] = replies; streaming replies are per chunk, in order, all rounds
    runs: dict[str, dict[str, list]] = {s: {m: [] for m in (*MODES, "clip_mel", "clip_pcm")} for s in sides}

    def brief(values: dict) -> str:
        return ", ".join(f"{s} {v:.0f} ms" for s, v in values.items())

    try:
        log(f"{label}: warm-up (2 duplex chunks each)")
        for w in sides.values():
            for k in range(2):
                w.ask(cmd="chunk", mel=str(mel), mode="duplex", k=k)
        for r in range(args.rounds):
            for mode in MODES:
                for k in range(args.chunks):
                    # all sides run chunk k back to back, the order rotating from chunk to chunk, so
                    # drifting load on a shared machine hits all alike and every chunk gives paired ratios
                    for s in round_order(names, k + r):
                        runs[s][mode].append(sides[s].ask(cmd="chunk", mel=str(mel), mode=mode, k=k))
                if r == 0:
                    for s in sides:
                        sides[s].ask(cmd="save_stream", out=str(out[s] / f"stream-{mode}.npy"))
                log(f"{label} {mode} round {r + 1}/{args.rounds}: per-chunk median " + brief(
                    {s: statistics.median(x["ms"] for x in runs[s][mode][-args.chunks:]) for s in names}))
        peak_stream = {s: runs[s]["duplex"][-1]["peak_rss_kib"] for s in sides}
        for r in range(args.rounds_30s):
            for i, what in enumerate(("clip_mel", "clip_pcm")):
                key = "mel" if what == "clip_mel" else "pcm"
                for s in round_order(names, r + i + 1):
                    dump = str(out[s] / f"{what}.npy") if r == 0 else None
                    runs[s][what].append(sides[s].ask(cmd="encode_" + key, **{key: str(mel if key == "mel" else pcm)},
                                                      out=dump))
                log(f"{label} 30-s {key} round {r + 1}/{args.rounds_30s}: " + brief(
                    {s: runs[s][what][-1]["ms"] for s in names}))
    finally:
        for w in sides.values():
            w.close()

    def ratios(what: str, key: str) -> dict:
        return {f"{a}/{b}": paired_ratio([x[key] for x in runs[a][what]], [x[key] for x in runs[b][what]])
                for a, b in ratio_pairs(names)}

    res: dict = {"type": label, "streaming": {}, "clip_30s": {}}
    for mode in MODES:
        entry = {}
        for s in sides:
            ms = [x["ms"] for x in runs[s][mode]]
            by_k = [ms[i::args.chunks] for i in range(args.chunks)]  # chunk index -> one value per round
            entry[s] = {"median_ms": r1(statistics.median(ms)), "max_ms": r1(max(ms)), "mean_ms": r1(statistics.mean(ms)),
                        "cpu_median_ms": r1(statistics.median(x["cpu_ms"] for x in runs[s][mode])),
                        "first_chunk_ms": r1(statistics.median(by_k[0])),
                        "last_chunk_ms": r1(statistics.median(by_k[-1])),
                        "per_chunk_ms": [r1(statistics.median(v)) for v in by_k]}
            if s.startswith("minicpmo_cpp"):
                # what is left of a 1-s duplex unit for the LLM (and TTS) after our median chunk
                entry[s]["share_of_1s_unit"] = round(entry[s]["median_ms"] / 1000, 3)
        entry["ratios"] = ratios(mode, "ms")
        entry["ratios_cpu"] = {k: v["ratio"] for k, v in ratios(mode, "cpu_ms").items()}
        entry["chunk_mel_frames"] = "100" if mode == "simplex" else "102 first, then 104"
        entry["tokens_per_chunk"] = runs[names[0]][mode][0]["n_tokens"]
        entry["agreement"] = {"reference": ref, **{s: agreement(out[s] / f"stream-{mode}.npy", out[ref] / f"stream-{mode}.npy")
                                                   for s in names if s != ref}}
        res["streaming"][mode] = entry
    for what, name in (("clip_mel", "encoder_from_mel"), ("clip_pcm", "end_to_end_from_pcm")):
        entry = {s: {"ms": r1(statistics.median(x["ms"] for x in runs[s][what])),
                     "cpu_ms": r1(statistics.median(x["cpu_ms"] for x in runs[s][what])),
                     "ms_runs": [r1(x["ms"]) for x in runs[s][what]]} for s in sides}
        entry["ratios"] = ratios(what, "ms")
        entry["ratios_cpu"] = {k: v["ratio"] for k, v in ratios(what, "cpu_ms").items()}
        entry["n_tokens"] = runs[names[0]][what][0]["n_tokens"]
        entry["agreement"] = {"reference": ref, **{s: agreement(out[s] / f"{what}.npy", out[ref] / f"{what}.npy")
                                                   for s in names if s != ref}}
        res["clip_30s"][name] = entry
    res["clip_30s"]["end_to_end_from_pcm"]["note"] = (
        "ours: float32 PCM -> our C++ log-mel -> encoder; torch: WhisperFeatureExtractor (numpy) -> encoder; "
        "agreement includes the two mel front ends")
    res["memory"] = {}
    for s, w in sides.items():
        last = runs[s]["clip_pcm"][-1]
        res["memory"][s] = {"rss_before_load_mib": mib(w.ready["rss_start_kib"]),
                            "rss_after_load_mib": mib(w.ready["rss_after_load_kib"]),
                            "peak_rss_streaming_mib": mib(peak_stream[s]),
                            "peak_rss_mib": mib(last["peak_rss_kib"]),
                            # heap versus mapped file pages after the last run (ours maps the GGUFs:
                            # the 1-layer LLM's pages count in RssFile, not in the audio path's heap)
                            "rss_anon_mib": mib(last["rss_anon_kib"]), "rss_file_mib": mib(last["rss_file_kib"]),
                            # the peak less the mapped file pages (constant after loading): about the
                            # peak of weights read into memory + caches + compute buffers + interpreter
                            "peak_rss_less_mapped_files_mib": mib(last["peak_rss_kib"] - last["rss_file_kib"]),
                            "load_ms": r1(w.ready["load_ms"])}
    omni = llm.with_name(llm.name.replace("MiniCPM-o-4_5-", "MiniCPM-o-4_5-omni-"))
    res["files"] = {"llm_size_mib": round(llm.stat().st_size / 2**20, 1),
                    "omni_size_mib": round(omni.stat().st_size / 2**20, 1)}
    res["_info"] = {s: {k: v for k, v in w.ready.items() if not k.endswith(("_kib", "_ms")) and k != "ready"}
                    for s, w in sides.items()}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default="F16,Q8_0", help="omni outtypes, comma separated: F16, Q8_0, F32")
    ap.add_argument("--compute", default="f32,bf16",
                    help="compute types of our side and of the torch side (bf16: torch.autocast), comma separated: "
                         "f32, bf16, int8 (int8: ours only)")
    ap.add_argument("--chunks", type=int, default=20, help="consecutive 1-s streaming chunks per round")
    ap.add_argument("--rounds", type=int, default=1, help="streaming rounds (each: simplex + duplex, all chunks)")
    ap.add_argument("--rounds-30s", type=int, default=1, help="rounds of the 30-s clip (each: from mel + from PCM)")
    ap.add_argument("--omp-wait-policy", default="default", choices=("default", "passive", "active"),
                    help="OMP_WAIT_POLICY for both sides (default: leave it unset, what users get)")
    ap.add_argument("--torch-attn", default="sdpa", choices=("sdpa", "eager"),
                    help="transformers attention implementation of the torch side")
    ap.add_argument("--work", default=None, help="cache directory for the models and inputs")
    ap.add_argument("--worker", choices=("ours", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("model", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads <= 0:
        ap.error("--threads must be positive")
    try:
        args.compute = parse_compute(args.compute)
    except ValueError as e:
        ap.error(str(e))
    if args.worker:
        sys.exit(worker_main(args.worker, args.model, args.threads, args.torch_attn, args.compute[0]))
    if args.chunks <= 0 or args.rounds <= 0 or args.rounds_30s <= 0:
        ap.error("--chunks, --rounds and --rounds-30s must be positive")
    # duplex chunk k reads mel frames up to 100k + 102; the cache must not restart inside the run
    if CHUNK_FRAMES * args.chunks + CONTEXT_FRAMES > CLIP_SECONDS * 100 or args.chunks > 28:
        ap.error("--chunks must be at most 28 (the streaming chunks are cut from the 30-s mel)")
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    for t in types:
        if t not in ("F16", "Q8_0", "F32"):
            ap.error(f"unknown type {t}: choose from F16, Q8_0, F32")

    require_onednn_build(args.compute)
    work = Path(args.work) if args.work else cache_dir() / "bench-audio" / model_key()
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load_start = loadavg()
    hf, models = make_models(work, types)
    pcm, mel = make_inputs(work)
    results, info = [], {}
    probe = gemm_probe(args.threads)
    log("torch F32 GEMM probe: " + ", ".join(f"{k} {v['gflops']} GFLOP/s" for k, v in probe.items()))
    peak = f32_fma_peak(args.threads)
    log(f"F32 FMA peak: {peak['derivation']}")
    for label in types:
        res = bench_type(label, models[label], hf, mel, pcm, args, work)
        info = info or res["_info"]
        del res["_info"]
        names = list(res["memory"])
        res["speed_limits"] = speed_limits(res, probe, args.chunks, peak, names)
        results.append(res)
        for k, v in res["speed_limits"].items():
            log(f"{label} {k}: share of the F32 FMA peak: " + ", ".join(
                f"{n} {v[n]['share_of_f32_peak']:.0%}" for n in names))
        for k, v in (*res["streaming"].items(), *res["clip_30s"].items()):
            log(f"{label} {k}: " + ", ".join(f"{p} {r['ratio']}" for p, r in v["ratios"].items()))
    print(json.dumps({
        "benchmark": "audio",
        "shape": "MiniCPM-o 4.5 audio (random weights): Whisper-medium encoder 1024 wide, 24 layers, 16 heads, "
                 "FFN 4096, 80 mels, 1500 positions; projector 1024 -> 4096 -> 4096; AvgPool1d 5",
        "timed": {"streaming": "per 1-s chunk: mel frames in memory -> 10 LLM tokens, through the growing K/V cache",
                  "clip_30s": "3000 mel frames (or 480000 PCM samples) -> 300 LLM tokens, 1-s block-causal attention"},
        "sides": {"minicpmo_cpp_<c>": "OmniSession(compute_type=<c>) (int8: ours only, no torch_int8)",
                  "torch_f32": "transformers' WhisperEncoder modules + nn.Linear projector, float32 weights",
                  "torch_bf16": "the same forward under torch.autocast('cpu', dtype=torch.bfloat16)"},
        "compute": args.compute,
        "ratio_meaning": "ratios a/b: a_ms / b_ms, median of per-round ratios (>1: b is faster)",
        "agreement_meaning": "each side's tokens vs the reference side's (torch_f32 where it ran, else torch_bf16, "
                             "else minicpmo_cpp_f32) on the same "
                             "checkpoint weights: max|side - ref| / max|ref|, relative L2, worst per-token cosine",
        "threads": args.threads, "chunks": args.chunks, "rounds": args.rounds, "rounds_30s": args.rounds_30s,
        "omp_wait_policy": args.omp_wait_policy,
        # the machine's load average (1, 5, 15 min) before and after: above the thread count, other
        # processes competed for the cores and wall times are inflated
        "loadavg_start": load_start, "loadavg_end": loadavg(), "cores": os.cpu_count(),
        "torch_gemm_f32": probe, "f32_fma_peak": peak,
        "speed_limits_meaning": "gflop: FLOPs of the timed call (mean chunk of the run; audio_flops: conv "
                                "stem + 24 x (2T(4D^2 + 2DF) + 4D x keys per query summed) + projector); "
                                "<side>.gflops: what each side sustained; <side>.share_of_f32_peak: that over "
                                "f32_fma_peak.gflops (measured in this run; BF16 and int8 sides against the same F32 "
                                "peak); gflops_needed_for_2x_torch_f32: the rate the target implies; "
                                "ms_at_torch_best_gemm_rate: the call's time at torch's best probed F32 GEMM "
                                "rate (a floor for kernels of MKL's class)",
        **cpu_kernels(), "machine": platform.machine(), "cpu": cpu_name(),
        "minicpmo_cpp_system_info": next(v["system_info"] for k, v in info.items() if k.startswith("minicpmo_cpp")),
        "torch_info": next((v for k, v in info.items() if k.startswith("torch_")), None),  # None: int8 alone
        "wall_s": round(time.perf_counter() - t_start, 1), "work": str(work), "results": results,
    }, indent=2))



if __name__ == "__main__":
    main()
