"""Speech-output speed of minicpmo-cpp versus PyTorch on real-size random weights, same thread count;
the Token2Wav flow in F32 and in BF16 on both, and in int8 on ours.

Makes a random-weight checkpoint with the release's speech shapes (spec §5.1, §5.2): the TTS
speech-token LM (LLaMA backbone 768 wide, 20 layers, 12 heads, FFN 3072, 6562 codes) and Token2Wav
(flow encoder 512 wide with 6 + 4 conformer blocks, DiT 16 blocks x 512, HiFT with 512 base
channels), converts it with our converter and measures, each side in its own process with the same
number of threads and OpenMP wait policy, one process per side per item, back to back, the sides'
order rotating from item to item (run_interleaved), best of --rounds after a short warm-up call:

1. TTS speech codes per second, greedy, same condition (text ids + LLM hidden rows -> condition rows
   + text_eos + audio_bos) and the same number of codes. ours: OmniSession's TTS decoder
   (tts_forward_rows, then tts_forward_code per code); torch: transformers' LlamaModel (sdpa) with a
   DynamicCache + nn.Linear head (the weight-norm head folded once, in torch's favour). Both loops
   take the argmax over the non-EOS codes, so both make exactly --codes codes.
   Also ours through tts_generate_chat (the C++ chat loop; greedy, may stop at EOS after 50).
   Decoding a code reads every TTS weight a step uses once (the blocks' matrices and norms, the final
   norm and the code head; not the embedding tables, of which it reads one row): those bytes of the
   omni file over the machine's read bandwidth measured in the run (bench_common.read_bandwidth) is
   the bandwidth bound in codes/s, and ours is reported as a share of it.
2. Token2Wav real-time factor (compute seconds per second of audio) for each --steps value:
   whole utterance (flow.inference + HiFT over the whole mel) and streaming windows (28 tokens,
   stride 25, after the 3 silence look-ahead tokens; flow stream + HiFT 1.0.1 stream caches).
   ours: _testing.Flow / _testing.HiftVocoder; torch: the official stepaudio2 classes
   (CausalMaskedDiffWithXvec.inference / setup_cache + inference_chunk + Token2wav's cache trimming,
   HiFTGenerator with its weight-norm parametrizations as Token2wav loads it), built by
   tests/stepaudio2_oracle.py from the same flow.pt / hift.pt. Same tokens, same voice prompt.
   Sides, per --compute type c (f32 and bf16 by default; int8 too): minicpmo_cpp_<c> =
   Flow(compute_type=c) (passed explicitly: "auto" follows the CPU; bf16 = the flow's matrix products
   through oneDNN in BF16, int8 = as 8-bit integer products through oneDNN), torch_<c> = the official
   flow, for bf16 under torch.autocast("cpu", dtype=torch.bfloat16); no torch_int8: int8 is ours
   only, compared with torch_f32 and minicpmo_cpp_f32.
   HiFT computes in F32 on every side (ours in bf16 / int8: that session's vocoder, its products
   through oneDNN's F32 kernels instead of ggml's). The TTS (1.) is F32 on both sides.
Also: an F32 GEMM probe (torch.mm at the DiT / HiFT shapes, same threads), the FLOPs per second
of audio of the flow (encoder + DiT x 2 CFG branches x n_timesteps) and HiFT, from the dims, and the
GFLOP/s each side sustained in the whole-utterance flow and HiFT calls with its share of the
machine's F32 FMA peak measured in the run (bench_common.f32_fma_peak).

Prints one JSON document on stdout; progress goes to stderr.

    python bench/speech.py [--threads 2] [--type f32] [--cond 50] [--codes 100] [--tokens 100]
                           [--steps 10,5] [--rounds 1] [--no-stream] [--parts tts,t2w] [--compute f32,bf16,int8]
                           [--omp-wait-policy passive|default|active]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from worker_env import thread_env
from bench_common import (TORCH_COMPUTE_TYPES, cache_dir, cpu_kernels, cpu_name, f32_fma_peak, parse_compute,
                          ratio_pairs, read_bandwidth, require_onednn_build, round_order, throughput, torch_gemm_rates,
                          torch_precision)

REPO = Path(__file__).resolve().parent.parent
SEED = 0
# spec §5.1: the release's TTS backbone
TTS_DIMS = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_key_value_heads=12,
                num_hidden_layers=20)
# spec §5.2 / §8: the release's Token2Wav
T2W_DIMS = dict(enc_dim=512, enc_heads=8, enc_ff=2048, enc_blocks=6, enc_up_blocks=4, dit_dim=512, dit_layers=16,
                dit_heads=8, dit_head_dim=64, hift_base=512, hift_f0_channels=512, n_timesteps=10)
# The LLM only feeds hidden rows to the TTS projector (one matmul per condition row): a small one
# keeps the checkpoint light; the projector input width follows it.
LLM_SMALL = dict(hidden_size=256, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                 intermediate_size=256)
TEXT_EOS, AUDIO_BOS, N_CODES_NO_EOS = 151692, 151687, 6561
SILENCE = 4218
TOKEN_RATE = 25.0
WINDOW, STRIDE, LOOKAHEAD = 28, 25, 3
WARM_TOKENS = 10  # the untimed warm-up call of each Token2Wav setting (weights paged in, graphs built)
VOICE_TOKENS = 50  # the default voice prompt (tiny_token2wav.TINY_VOICE_TOKENS): 100 mel frames


def log(msg: str) -> None:
    print(f"[bench/speech] {msg}", file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------------------------------------
# models (cached, keyed by their parameters)
# ---------------------------------------------------------------------------------------------
def model_key() -> str:
    p = json.dumps({"tts": TTS_DIMS, "t2w": T2W_DIMS, "llm": LLM_SMALL, "seed": SEED}, sort_keys=True)
    return hashlib.sha1(p.encode()).hexdigest()[:10]


def make_models(work: Path, outtype: str) -> tuple[Path, Path, Path]:
    """(HF checkpoint dir, LLM GGUF, omni GGUF). The checkpoint is float32 and the Token2Wav assets
    are float32 torch zips: an F32 conversion holds exactly the numbers torch reads."""
    from minicpmo_cpp.convert import convert_checkpoint
    from minicpmo_cpp.convert.make_tiny import make_tiny_checkpoint

    hf = work / "hf"
    done = hf / ".complete"  # written last: an interrupted generation is redone
    if not done.exists():
        log("writing a random-weight checkpoint with the release's TTS + Token2Wav shapes (~2 GB)")
        make_tiny_checkpoint(hf, seed=SEED, dtype="float32", llm_dims=LLM_SMALL, components=("tts",),
                             tts_dims=TTS_DIMS, token2wav_dims=T2W_DIMS)
        done.write_text(model_key())
    out = work / f"gguf-{outtype}"
    done = out / ".complete"
    if not done.exists():
        log(f"converting to GGUF {outtype}")
        # --type is the TTS's type too (the converter's default would make f16 files' TTS Q8_0)
        llm, omni = convert_checkpoint(hf, out, outtype=outtype, tts_outtype=outtype, quiet=True)
        done.write_text(json.dumps([Path(llm).name, Path(omni).name]))
    llm, omni = json.loads(done.read_text())
    return hf, out / llm, out / omni


def tts_bytes_per_code(omni: Path) -> int:
    """Bytes of the omni file's TTS tensors one decode step reads in full: every tensor of the blocks,
    the final norm and the code head (the embedding tables are looked up, one row each)."""
    from gguf import GGUFReader

    step = ("tts.blk.", "tts.output_norm.", "tts.head_code.")
    return sum(int(t.n_bytes) for t in GGUFReader(str(omni)).tensors if t.name.startswith(step))


def inputs(args) -> dict:
    """Deterministic inputs, identical in both workers."""
    rng = np.random.default_rng(1234)
    return {
        "text_ids": rng.integers(0, 151000, args.cond).astype(np.int32),
        "hidden": rng.standard_normal((args.cond, LLM_SMALL["hidden_size"])).astype(np.float32),
        "speech": rng.integers(0, 6561, args.tokens).astype(np.int64),
    }


def stream_windows(speech) -> list[tuple[list[int], bool]]:
    """The caller protocol: 3 silence look-ahead tokens first, 28-token windows with stride 25, then the rest."""
    buf = [SILENCE] * LOOKAHEAD + [int(x) for x in speech]
    out = []
    while len(buf) >= WINDOW:
        out.append((buf[:WINDOW], False))
        buf = buf[STRIDE:]
    out.append((buf, True))
    return out


def best(times: list[float]) -> float:
    return float(min(times))


def timed_greedy_tts(side: str, args, prefill, step_code, pick) -> dict:
    """Greedy speech tokens, timed the same way on both sides: `prefill()` builds the condition rows and
    runs them from an empty cache -> (logits, n_rows); `step_code(code, position)` feeds one code ->
    logits; `pick(logits)` is the greedy (non-EOS) code. Round 0 warms up (weights paged in, graphs
    allocated) with 5 codes; of the timed rounds the fastest is kept.
    -> the fastest round's seconds (total, prefill, decode), rates and the codes of the last timed round"""
    runs, codes = [], None
    for r in range(args.rounds + 1):
        n_codes = args.codes if r > 0 else min(5, args.codes)
        t0 = time.perf_counter()
        logits, n_rows = prefill()
        t1 = time.perf_counter()
        out = [pick(logits)]
        for i in range(n_codes - 1):
            out.append(pick(step_code(out[-1], n_rows + i)))
        t2 = time.perf_counter()
        if r > 0:
            runs.append((t2 - t0, t1 - t0, t2 - t1))
            codes = out
        log(f"{side} tts round {r}: prefill {t1 - t0:.3f}s, {n_codes - 1} steps {t2 - t1:.2f}s")
    tot, pre, dec = min(runs, key=lambda v: v[0])
    return {"seconds": tot, "prefill_seconds": pre, "decode_seconds": dec,
            "codes_per_second": args.codes / tot, "decode_codes_per_second": (args.codes - 1) / dec, "codes": codes}


def timed_token2wav(side: str, steps: int, args, speech, to_mel, to_wav):
    """Whole-utterance Token2Wav timed the same way on both sides: `to_mel(tokens)` (flow) then
    `to_wav(mel)` (HiFT). Round 0 warms up on the first WARM_TOKENS tokens; of the timed rounds each
    stage's best time counts. -> (mel, waveform of the last round, timing entry)"""
    tf, th = [], []
    for r in range(args.rounds + 1):
        sp = speech if r > 0 else speech[:WARM_TOKENS]
        t0 = time.perf_counter()
        mel = to_mel(sp)
        t1 = time.perf_counter()
        wav = to_wav(mel)
        t2 = time.perf_counter()
        if r > 0:
            tf.append(t1 - t0)
            th.append(t2 - t1)
        log(f"{side} t2w steps={steps} round {r}: flow {t1 - t0:.2f}s hift {t2 - t1:.2f}s")
    audio_s = len(speech) / TOKEN_RATE
    return mel, wav, {"flow_seconds": best(tf), "hift_seconds": best(th), "seconds": best(tf) + best(th),
                      "audio_seconds": audio_s, "rtf": (best(tf) + best(th)) / audio_s}


# ---------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------
def worker_ours(args, hf: Path, llm: Path, omni: Path) -> dict:
    from minicpmo_cpp import OmniSession, _testing
    from minicpmo_cpp._testing import Flow, HiftVocoder

    x = inputs(args)
    res: dict = {}
    if "tts" in args.parts:
        # the TTS stays F32: compute_type names it explicitly (it governs the encoders, not the TTS)
        s = _testing.hooks(OmniSession(str(llm), n_threads=args.threads, n_gpu_layers=0, n_ctx=512,
                                       compute_type="f32"))

        def prefill():
            rows = np.concatenate([s.tts_condition_rows(x["text_ids"].tolist(), x["hidden"]),
                                   s.tts_text_rows([TEXT_EOS, AUDIO_BOS])])
            s.tts_reset()
            return s.tts_forward_rows(rows, list(range(rows.shape[0]))), rows.shape[0]

        timed = timed_greedy_tts(
            "ours", args, prefill, s.tts_forward_code, lambda logits: int(np.argmax(logits[0, :N_CODES_NO_EOS])))
        t0 = time.perf_counter()
        chat, finished = s.tts_generate_chat(x["text_ids"].tolist(), x["hidden"], max_new_tokens=args.codes)
        tc = time.perf_counter() - t0
        log(f"ours tts_generate_chat: {len(chat)} codes in {tc:.2f}s (finished={finished})")
        res["tts"] = {**timed,
                      "generate_chat": {"n_codes": len(chat), "eos": bool(finished), "seconds": tc,
                                        "codes_per_second": len(chat) / tc}}
        del s
    if "t2w" in args.parts:
        flow = Flow(str(omni), n_threads=args.threads, compute_type=args.compute[0])
        # F32 arithmetic either way; a BF16 or int8 session's vocoder runs its products through oneDNN's F32 kernels
        hift = HiftVocoder(str(omni), n_threads=args.threads, compute_type=args.compute[0])
        speech = x["speech"].tolist()
        audio_s = len(speech) / TOKEN_RATE
        res["t2w"] = {}
        for steps in args.steps:
            ent: dict = {}
            mel, wav, ent["whole"] = timed_token2wav(
                "ours", steps, args, speech, lambda sp: flow.inference(sp, n_timesteps=steps), hift.synthesize)
            assert np.isfinite(mel).all() and np.isfinite(wav).all(), "non-finite ours output"
            ent["whole"].update(mel_absmax=float(np.abs(mel).max()), wav_rms=float(np.sqrt(np.mean(wav ** 2))))
            if args.stream:
                ts, lat = [], []
                for r in range(1, args.rounds + 1):  # the whole-utterance runs warmed up
                    flow.stream_start(n_timesteps=steps)
                    hift.reset_stream()
                    per, t0 = [], time.perf_counter()
                    n_samples = 0
                    for tokens, last in stream_windows(speech):
                        w0 = time.perf_counter()
                        wav = hift.stream(flow.stream_chunk(tokens, last), last)
                        n_samples += wav.shape[0]
                        per.append(time.perf_counter() - w0)
                    ts.append(time.perf_counter() - t0)
                    lat.append(per)
                    log(f"ours stream steps={steps} round {r}: {time.perf_counter() - t0:.2f}s, "
                        f"{len(per)} windows, {n_samples} samples")
                i = int(np.argmin(ts))
                ent["stream"] = {"seconds": ts[i], "rtf": ts[i] / audio_s, "windows": len(lat[i]),
                                 "first_window_seconds": lat[i][0], "window_seconds": lat[i]}
            res["t2w"][str(steps)] = ent
    res["peak_rss_mib"] = peak_rss_mib()
    return res


# ---------------------------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------------------------
def torch_tts_modules(hf: Path):
    import torch
    from safetensors.numpy import load_file
    from torch import nn
    from transformers import LlamaConfig, LlamaModel

    cfg = json.loads((hf / "config.json").read_text())
    t = cfg["tts_config"]
    w = {k: v for k, v in load_file(str(hf / "model.safetensors")).items() if k.startswith("tts.")}
    lc = LlamaConfig(hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
                     num_attention_heads=t["num_attention_heads"], num_key_value_heads=t["num_key_value_heads"],
                     num_hidden_layers=t["num_hidden_layers"], max_position_embeddings=t["max_position_embeddings"],
                     rms_norm_eps=1e-6, rope_theta=10000.0, attn_implementation="sdpa")
    model = LlamaModel(lc).eval()
    model.load_state_dict({k[len("tts.model."):]: torch.from_numpy(v) for k, v in w.items()
                           if k.startswith("tts.model.")}, strict=True)
    E = t["hidden_size"]
    g = w["tts.head_code.0.parametrizations.weight.original0"].astype(np.float64)
    v = w["tts.head_code.0.parametrizations.weight.original1"].astype(np.float64)
    head = nn.Linear(E, v.shape[0], bias=False)
    head.weight.data = torch.from_numpy((g * v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    proj = nn.Sequential(nn.Linear(t["llm_dim"], E), nn.ReLU(), nn.Linear(E, E))
    proj.load_state_dict({f"{i}.{p}": torch.from_numpy(w[f"tts.projector_semantic.linear{j}.{p}"])
                          for i, j in ((0, 1), (2, 2)) for p in ("weight", "bias")})
    emb_text = nn.Embedding.from_pretrained(torch.from_numpy(w["tts.emb_text.weight"]))
    emb_code = nn.Embedding.from_pretrained(torch.from_numpy(w["tts.emb_code.0.weight"]))
    return lc, model, head, proj, emb_text, emb_code


def worker_torch(args, hf: Path, llm: Path, omni: Path) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    x = inputs(args)
    res: dict = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if "tts" in args.parts:
        import inspect

        from transformers import LlamaModel
        from transformers.cache_utils import DynamicCache

        lc, model, head, proj, emb_text, emb_code = torch_tts_modules(hf)
        cache_kw = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"

        def new_cache():
            try:
                return DynamicCache(config=lc)
            except TypeError:
                return DynamicCache()

        def step(cache, rows, pos):
            out = model(inputs_embeds=rows[None], position_ids=torch.as_tensor(pos)[None], use_cache=True,
                        **{cache_kw: cache})
            return head(out.last_hidden_state[0, -1])

        caches = []  # the current round's KV cache, made by prefill, extended by each code step

        def prefill():
            cond = emb_text(torch.from_numpy(x["text_ids"]).long()) + F.normalize(
                proj(torch.from_numpy(x["hidden"])), p=2, dim=-1)
            rows = torch.cat([cond, emb_text(torch.tensor([TEXT_EOS, AUDIO_BOS]))])
            caches[:] = [new_cache()]
            return step(caches[0], rows, list(range(rows.shape[0]))), rows.shape[0]

        def step_code(code, pos):
            return step(caches[0], emb_code(torch.tensor([code])), [pos])

        with torch.inference_mode():
            res["tts"] = timed_greedy_tts(
                "torch", args, prefill, step_code, lambda logits: int(torch.argmax(logits[:N_CODES_NO_EOS])))
        del model, head, proj, emb_text, emb_code
    if "t2w" in args.parts:
        res["t2w"] = torch_t2w(args, hf, x)
    res["gemm"] = gemm_probe()
    res["peak_rss_mib"] = peak_rss_mib()
    return res


def torch_t2w(args, hf: Path, x: dict) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from minicpmo_cpp.convert.asset_yaml import load_plain_yaml
    from minicpmo_cpp.convert.torch_zip import TorchZipSource
    from reference.token2wav import FlowConfig, HiFTConfig
    from stepaudio2_oracle import official_flow, official_hift, stepaudio2

    assets = hf / "assets" / "token2wav"
    fsrc, hsrc = TorchZipSource.open(assets / "flow.pt"), TorchZipSource.open(assets / "hift.pt")
    fstate = {n: fsrc.float32(n) for n in fsrc.names()}
    hstate = {n: hsrc.float32(n) for n in hsrc.names()}
    fcfg = FlowConfig.from_yaml_dict(load_plain_yaml(assets / "flow.yaml")["flow"])
    h = load_plain_yaml(assets / "hift.yaml")["hift"]
    hcfg = HiFTConfig(base_channels=h["base_channels"], f0_cond_channels=h["f0_predictor"]["cond_channels"])
    noise = np.random.default_rng(3).standard_normal((80, 15000)).astype(np.float32)
    flow = official_flow(fstate, fcfg, noise)
    hift = official_hift(hstate, hcfg)
    voice = np.load(assets / "default_voice.npz")
    ptok, pmel, xvec = voice["tokens"].astype(np.int64), voice["mel"].astype(np.float32), voice["spk"]
    speech = x["speech"]
    audio_s = len(speech) / TOKEN_RATE
    out: dict = {}
    compute = args.compute[0]  # the flow's precision; HiFT stays F32 as ours does
    with torch.compiler.set_stance("force_eager"), torch.inference_mode():
        # the official encoder.forward_chunk is torch.compile(backend="eager"): force_eager runs the
        # same ops without the dynamo tracing, which would otherwise be timed
        for steps in args.steps:
            ent: dict = {}
            def official_mel(sp):
                with torch_precision(torch, compute):
                    mel = flow.inference(torch.from_numpy(sp)[None], torch.tensor([len(sp)]),
                                         torch.from_numpy(ptok)[None], torch.tensor([len(ptok)]),
                                         torch.from_numpy(pmel)[None], torch.tensor([pmel.shape[0]]),
                                         torch.from_numpy(xvec)[None], steps)
                return mel.float()

            mel, wav, ent["whole"] = timed_token2wav(
                "torch", steps, args, speech, official_mel, lambda mel: hift(speech_feat=mel.float())[0])
            ent["whole"].update(mel_absmax=float(mel.abs().max()), wav_rms=float(wav.pow(2).mean().sqrt()))
            if args.stream:
                ts, lat = [], []
                for r in range(1, args.rounds + 1):  # the whole-utterance runs warmed up
                    st = OfficialStream(flow, hift, ptok, pmel, xvec, steps, stepaudio2().Token2wavCacheTrim(),
                                        lambda: torch_precision(torch, compute))
                    per, t0 = [], time.perf_counter()
                    for tokens, last in stream_windows(speech):
                        w0 = time.perf_counter()
                        st.window(tokens, last)
                        per.append(time.perf_counter() - w0)
                    ts.append(time.perf_counter() - t0)
                    lat.append(per)
                    log(f"torch stream steps={steps} round {r}: {time.perf_counter() - t0:.2f}s, {len(per)} windows")
                i = int(np.argmin(ts))
                ent["stream"] = {"seconds": ts[i], "rtf": ts[i] / audio_s, "windows": len(lat[i]),
                                 "first_window_seconds": lat[i][0], "window_seconds": lat[i]}
            out[str(steps)] = ent
    return out


class OfficialStream:
    """Token2wav's streaming sequence on the official modules (as tests/test_token2wav_reference_vs_
    stepaudio2.py drives it): setup_cache over prompt + silence look-ahead in the constructor
    (untimed, like our stream_start), per window flow.inference_chunk + the 1.0.7 cache trimming,
    and the 1.0.1 HiFT caches (8 mel frames, 3840 source / speech samples, Hamming cross-fade).
    precision(): the context the flow's calls run in (bench_common.torch_precision); HiFT runs outside it."""

    def __init__(self, flow, hift, ptok, pmel, xvec, steps, trim, precision):
        import torch

        self.flow, self.hift, self.steps, self.trim, self.precision = flow, hift, steps, trim, precision
        self.spk = torch.from_numpy(np.ascontiguousarray(xvec, np.float32))[None]
        self.P = pmel.shape[0]
        trim.flow = flow
        with precision():
            trim.stream_cache = flow.setup_cache(torch.tensor([list(ptok) + [SILENCE] * LOOKAHEAD]),
                                                 torch.from_numpy(pmel)[None], self.spk, n_timesteps=steps)
        self.n = 8 * 480
        self.fade = torch.from_numpy(np.hamming(2 * self.n).astype(np.float32))
        self.hc = dict(mel=torch.zeros(1, 80, 0), source=torch.zeros(1, 1, 0), speech=torch.zeros(1, 0))

    def window(self, tokens, last):
        import torch

        with self.precision():
            mel, self.trim.stream_cache = self.flow.inference_chunk(torch.tensor([tokens]), self.spk,
                                                                    self.trim.stream_cache, last_chunk=last,
                                                                    n_timesteps=self.steps)
        mel = mel.float()
        self.trim._trim_estimator_cache(self.P)
        self.trim._trim_conformer_cache(self.P)
        self.trim.stream_cache = {k: v.clone() for k, v in self.trim.stream_cache.items()}
        n, hc = self.n, self.hc
        mel = torch.cat([hc["mel"], mel], 2)
        speech, source = self.hift(mel, hc["source"])
        if hc["speech"].shape[-1] != 0:
            speech = speech.clone()
            speech[..., :n] = speech[..., :n] * self.fade[:n] + hc["speech"][..., -n:] * self.fade[n:]
        self.hc = dict(mel=mel[..., -8:], source=source[:, :, -n:], speech=speech[:, -n:])
        return speech if last else speech[:, :-n]


def gemm_probe() -> dict:
    """F32 GEMM throughput of torch at the shapes the models run: the DiT FFN (both CFG branches of
    a 10-s utterance with a 2-s prompt: 1200 frames x 512 -> 2048), the TTS decode step (1 x 768 ->
    3072, memory bound) and a HiFT stage-1 resblock conv as im2col GEMM (2000 samples x 128*7 -> 128)."""
    return torch_gemm_rates({"dit_ffn_1200x512x2048": (1200, 512, 2048), "tts_step_1x768x3072": (1, 768, 3072),
                             "hift_conv_2000x896x128": (2000, 896, 128)})


# ---------------------------------------------------------------------------------------------
# FLOP model (multiply-add = 2 FLOPs)
# ---------------------------------------------------------------------------------------------
def flops_per_audio_second(steps: int, total_frames: int) -> dict:
    """Per second of generated audio. total_frames: mel frames the attention sees (prompt + utterance)."""
    D, F_, nb, nub = T2W_DIMS["enc_dim"], T2W_DIMS["enc_ff"], T2W_DIMS["enc_blocks"], T2W_DIMS["enc_up_blocks"]
    H, NL = T2W_DIMS["dit_dim"], T2W_DIMS["dit_layers"]
    tok, frm = 25, 50
    T_tok, T_frm = total_frames // 2, total_frames

    def conformer(rate, T):  # q, k, v, out, pos linears + FFN; scores (ac + bd) and AV over T keys
        return rate * (2 * (5 * D * D + 2 * D * F_) + 2 * 3 * T * D)

    enc = (tok * 2 * (512 * D + D * D * 4 + D * D * 3)  # embed + lookahead convs (k=4, 3)
           + nb * conformer(tok, T_tok) + frm * 2 * D * D * 5 + nub * conformer(frm, T_frm) + frm * 2 * D * 80)
    # DiT per frame per evaluation: in_proj, per block q/k/v/out + 2 causal convs (k=3) + MLP 4x,
    # attention scores + AV over T keys, final projection; adaLN is per utterance (negligible)
    dit_frame = 2 * (320 * H + NL * (4 * H * H + 2 * 3 * H * H + 2 * 4 * H * H) + H * 80) + NL * 4 * T_frm * H
    dit = frm * dit_frame * 2 * steps
    # HiFT: stages at 400 / 2000 / 6000 Hz with 256 / 128 / 64 channels
    C0, rates, upk = T2W_DIMS["hift_base"], (8, 5, 3), (16, 11, 7)
    hift = 50 * 2 * (80 * 512 * 3 + 4 * 512 * 512 * 3 + 80 * C0 * 7)  # f0 predictor + conv_pre
    n_in, C = 50, C0
    cum = [1]
    for u in reversed(rates):
        cum.append(cum[-1] * u)
    for i, u in enumerate(rates):
        n_out, Co = n_in * u, C // 2
        hift += 2 * n_in * C * Co * upk[i]  # transposed conv: each input sample x kernel
        hift += 2 * n_out * 6 * Co * Co * sum((3, 7, 11))  # 3 resblocks x 3 dilations x 2 convs
        hift += 2 * n_out * 6 * Co * Co * (7, 7, 11)[i]  # source resblock
        hift += 2 * n_out * 18 * Co * (2 * cum[len(rates) - 1 - i] if i < len(rates) - 1 else 1)  # source_downs
        n_in, C = n_out, Co
    hift += 2 * n_in * C * 18 * 7  # conv_post
    return {"flow_encoder": enc, "dit": dit, "flow": enc + dit, "hift": hift, "total": enc + dit + hift}


# ---------------------------------------------------------------------------------------------
def flow_call_flops(steps: int, n_tokens: int) -> float:
    """FLOPs of one whole-utterance flow call (flow.inference): the encoder runs over the prompt's and
    the utterance's tokens and the DiT over their mel frames (the prompt's are conditioning, computed
    all the same), so it is the per-second rate of flops_per_audio_second with attention over all
    frames, times the seconds of prompt + utterance:
        flow(steps, N) = flops_per_audio_second(steps, F)["flow"] * (P + N) / 25,  F = 2 (P + N)
    with P = 50 prompt tokens. HiFT runs over the utterance's mel only:
        hift(N) = flops_per_audio_second(...)["hift"] * N / 25."""
    frames = 2 * (VOICE_TOKENS + n_tokens)
    return flops_per_audio_second(steps, frames)["flow"] * (VOICE_TOKENS + n_tokens) / TOKEN_RATE


def hift_call_flops(n_tokens: int) -> float:
    return flops_per_audio_second(1, 2 * n_tokens)["hift"] * n_tokens / TOKEN_RATE  # see flow_call_flops


# ---------------------------------------------------------------------------------------------
def run_worker(side: str, args, work: Path, parts: list[str], steps: list[int]) -> dict:
    """One worker process: side = <impl>_<compute> (minicpmo_cpp_f32, torch_bf16, ...)."""
    impl, compute = side.rsplit("_", 1)
    cmd = [sys.executable, __file__, "--worker", "ours" if impl == "minicpmo_cpp" else "torch", "--work", str(work),
           "--threads", str(args.threads), "--compute", compute,
           "--type", args.type, "--cond", str(args.cond), "--codes", str(args.codes), "--tokens", str(args.tokens),
           "--steps", ",".join(map(str, steps)), "--rounds", str(args.rounds), "--parts", ",".join(parts)]
    if not args.stream:
        cmd.append("--no-stream")
    log(f"running the {side} worker: {','.join(parts)} steps {steps}")
    p = subprocess.run(cmd, env=thread_env(args.threads, args.omp_wait_policy), stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{side} worker failed with exit code {p.returncode}")
    return json.loads(p.stdout)


def run_interleaved(args, work: Path) -> tuple[dict, list]:
    """One worker per side per measured item (TTS: minicpmo_cpp_f32 and torch_f32; Token2Wav per step
    count: minicpmo_cpp_<c> for each --compute type c, torch_<c> for each but int8), back to back, the
    sides' order rotating from item to item: the load other processes put on a shared machine drifts
    over minutes, so each ratio compares runs made close together.
    -> ({side: {"tts": ..., "t2w": {steps: ...}, "peak_rss_mib": ..., "gemm_runs": [...]}}, load averages)"""
    items = ([("tts", None)] if "tts" in args.parts else []) + \
            ([("t2w", s) for s in args.steps] if "t2w" in args.parts else [])
    t2w_sides = [f"{impl}_{c}" for c in args.compute for impl in ("minicpmo_cpp", "torch")
                 if impl == "minicpmo_cpp" or c in TORCH_COMPUTE_TYPES]  # int8: ours only
    res: dict[str, dict] = {}
    loads = []
    for i, (part, steps) in enumerate(items):
        sides = ["minicpmo_cpp_f32", "torch_f32"] if part == "tts" else t2w_sides
        for side in round_order(sides, i):
            r = run_worker(side, args, work, [part], [steps] if steps else args.steps[:1])
            dst = res.setdefault(side, {"t2w": {}, "peak_rss_mib": 0.0})
            if part == "tts":
                dst["tts"] = r["tts"]
            else:
                dst["t2w"].update(r["t2w"])
            dst["peak_rss_mib"] = max(dst["peak_rss_mib"], r.get("peak_rss_mib", 0.0))
            if "gemm" in r:
                dst.setdefault("gemm_runs", []).append(r["gemm"])
            loads.append(os.getloadavg()[0])
    return res, loads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--type", default="f32", choices=("f32", "f16", "q8_0"),
                    help="our GGUF outtype (torch always runs the float32 checkpoint)")
    ap.add_argument("--cond", type=int, default=50, help="TTS condition length (text tokens)")
    ap.add_argument("--codes", type=int, default=100, help="speech codes generated per TTS run")
    ap.add_argument("--tokens", type=int, default=100, help="speech tokens vocoded (25 per second of audio)")
    ap.add_argument("--steps", type=lambda s: [int(v) for v in s.split(",")], default=[10, 5])
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds (after a short untimed warm-up call)")
    ap.add_argument("--parts", type=lambda s: [v.strip() for v in s.split(",") if v.strip()], default=["tts", "t2w"])
    ap.add_argument("--compute", default="f32,bf16",
                    help="compute types of the Token2Wav flow, ours and torch's (bf16: torch.autocast), comma "
                         "separated: f32, bf16, int8 (int8: ours only); the TTS and HiFT run in F32")
    ap.add_argument("--no-stream", dest="stream", action="store_false")
    ap.add_argument("--omp-wait-policy", choices=("default", "passive", "active"), default="passive",
                    help="OMP_WAIT_POLICY of both workers (passive: see worker_env.thread_env)")
    ap.add_argument("--work", default=None, help=f"model cache (default {cache_dir()})")
    ap.add_argument("--worker", choices=("ours", "torch"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work) if args.work else cache_dir() / model_key()
    if args.tokens < WARM_TOKENS or args.codes < 1 or args.cond < 1 or args.rounds < 1:
        ap.error(f"need --tokens >= {WARM_TOKENS}, --codes >= 1, --cond >= 1 and --rounds >= 1")
    try:
        args.compute = parse_compute(args.compute)
    except ValueError as e:
        ap.error(str(e))

    if args.worker:
        out = work / f"gguf-{args.type}"
        llm, omni = (out / n for n in json.loads((out / ".complete").read_text()))
        hf = work / "hf"
        fn = worker_ours if args.worker == "ours" else worker_torch
        print(json.dumps(fn(args, hf, llm, omni)))
        return 0

    if "t2w" in args.parts:
        require_onednn_build(args.compute)
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    _, _, omni = make_models(work, args.type)
    log(f"models ready in {time.perf_counter() - t0:.0f}s")
    peak = f32_fma_peak(args.threads)
    log(f"F32 FMA peak: {peak['derivation']}")
    bandwidth = None  # the TTS decode's bound only
    if "tts" in args.parts:
        bandwidth = read_bandwidth(args.threads)
        log(f"memory read bandwidth: {bandwidth['gb_per_s']} GB/s ({args.threads} threads)")
    res, loads = run_interleaved(args, work)

    frames = 2 * (VOICE_TOKENS + args.tokens)
    from minicpmo_cpp import _testing

    gemm_runs = [g for side in res.values() for g in side.pop("gemm_runs", [])]
    # the best probe; none where no torch worker ran (--parts t2w --compute int8)
    gemm = {k: max((g[k] for g in gemm_runs), key=lambda v: v["gflops"]) for k in gemm_runs[0]} if gemm_runs else {}
    result: dict = {
        "machine": {"cpu": cpu_name(), "threads": args.threads,
                    # which ggml CPU kernels ran (DESIGN: every benchmark states the CPU variant)
                    **cpu_kernels(),
                    "minicpmo_cpp_system_info": _testing.system_info().strip(),
                    "omp_wait_policy": args.omp_wait_policy, "loadavg_at_start": load_start,
                    "loadavg_1min_after_each_worker": loads,
                    "loadavg_at_end": os.getloadavg(), "torch_gemm_f32": gemm,
                    # this machine's F32 FMA peak, measured in this run, with its derivation
                    "f32_fma_peak": peak,
                    # the memory read bandwidth, measured in this run with --parts tts: the TTS decode's bound
                    "read_bandwidth": bandwidth},
        "config": {"type": args.type, "cond": args.cond, "codes": args.codes, "tokens": args.tokens,
                   "audio_seconds": args.tokens / TOKEN_RATE, "voice_prompt_tokens": VOICE_TOKENS,
                   "steps": args.steps, "rounds": args.rounds, "tts_dims": TTS_DIMS, "t2w_dims": T2W_DIMS,
                   "compute": {"tts": "f32", "token2wav_flow": args.compute, "hift": "f32"}},
    }
    if "tts" in args.parts:
        o, t = res["minicpmo_cpp_f32"]["tts"], res["torch_f32"]["tts"]
        agree = sum(a == b for a, b in zip(o.pop("codes"), t.pop("codes")))
        per_code = tts_bytes_per_code(omni)
        bound = bandwidth["gb_per_s"] * 1e9 / per_code
        result["tts"] = {"compute_type": "f32", "ours": o, "torch": t, "ratio": t["seconds"] / o["seconds"],
                         "decode_ratio": t["decode_seconds"] / o["decode_seconds"],
                         "greedy_codes_equal_prefix": agree,
                         # ours against what the memory allows: weight bytes per code over read GB/s
                         "bandwidth_bound": {"weight_bytes_per_code": per_code, "read_gb_per_s": bandwidth["gb_per_s"],
                                             "codes_per_second": bound,
                                             "ours_decode_share": o["decode_codes_per_second"] / bound}}
        log(f"TTS decode: ours {o['decode_codes_per_second']:.1f} codes/s, torch {t['decode_codes_per_second']:.1f}; "
            f"bandwidth bound {bound:.1f} codes/s ({per_code / 1e6:.1f} MB a code at {bandwidth['gb_per_s']} GB/s): "
            f"ours {o['decode_codes_per_second'] / bound:.0%} of it")
    if "t2w" in args.parts:
        result["t2w"] = {}
        names = [n for n in res if str(args.steps[0]) in res[n]["t2w"]]
        pairs = ratio_pairs(names)
        for steps in args.steps:
            side = {n: res[n]["t2w"][str(steps)] for n in names}
            ent: dict = {}
            for mode in ("whole", "stream"):
                if all(mode in v for v in side.values()):
                    ent[mode] = {**{n: v[mode] for n, v in side.items()},
                                 # a/b = a's seconds / b's seconds (best of --rounds each; >1: b is faster)
                                 "ratios": {f"{a}/{b}": side[a][mode]["seconds"] / side[b][mode]["seconds"]
                                            for a, b in pairs},
                                 "rtf": {n: v[mode]["rtf"] for n, v in side.items()}}
            if "whole" in ent:
                ent["whole"]["flow_ratios"] = {f"{a}/{b}": side[a]["whole"]["flow_seconds"] /
                                               side[b]["whole"]["flow_seconds"] for a, b in pairs}
                # sustained rate of the whole-utterance calls (flow_call_flops / hift_call_flops)
                fl, hf_ = flow_call_flops(steps, args.tokens), hift_call_flops(args.tokens)
                ent["whole"]["throughput"] = {
                    "flow_gflop": round(fl / 1e9, 2), "hift_gflop": round(hf_ / 1e9, 2),
                    **{n: {"flow": throughput(fl, v["whole"]["flow_seconds"] * 1e3, peak),
                           "hift_f32": throughput(hf_, v["whole"]["hift_seconds"] * 1e3, peak)}
                       for n, v in side.items()}}
            fl = flops_per_audio_second(steps, frames)
            ent["gflop_per_audio_second"] = {k: v / 1e9 for k, v in fl.items()}
            if gemm:
                ent["rtf_floor_at_torch_peak_gemm"] = fl["total"] / 1e9 / max(v["gflops"] for v in gemm.values())
            result["t2w"][str(steps)] = ent
        result["t2w_meaning"] = (
            "sides minicpmo_cpp_<c> / torch_<c>: the flow at compute type c (torch bf16: torch.autocast('cpu', "
            "dtype=torch.bfloat16) around the official flow's calls; int8: ours only, no torch_int8), HiFT F32 "
            "everywhere; ratios a/b: a's "
            "seconds over b's; whole.throughput: GFLOP/s sustained by the whole-utterance flow call "
            "(flow_gflop = flops_per_audio_second(steps, 2(P+N))['flow'] x (P+N)/25, P = 50 prompt tokens, "
            "N = --tokens) and HiFT call (hift_gflop, over N/25 s), share_of_f32_peak = that over "
            "machine.f32_fma_peak.gflops")
    result["peak_rss_mib"] = {n: v.get("peak_rss_mib") for n, v in res.items()}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
