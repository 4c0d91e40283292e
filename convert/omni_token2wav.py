"""Token2Wav of the official llama.cpp-omni set (token2wav-gguf/) -> our Token2Wav plan.

No published script writes these files; their tensor names are those llama.cpp-omni's loader
(tools/omni/token2wav/token2wav-impl.cpp) binds, which are the release's flow.pt / hift.pt names
with the module prefix dropped per file and HiFT's weight norms folded:
  encoder.gguf       flow.pt `encoder.*` without `encoder.` (embed.out.*, pre_lookahead_layer.*,
                     encoders.N.*, up_layer.conv, up_embed.out.*, up_encoders.N.*, after_norm)
  flow_matching.gguf flow.pt `decoder.estimator.*` without `decoder.` (estimator.*)
  flow_extra.gguf    input_embedding, spk_embed_affine_layer, encoder_proj
  hifigan2.gguf      hift.pt without `generator.` (f0_predictor.*, m_source.l_linear, conv_pre,
                     ups.N, source_downs.N, source_resblocks.N.*, resblocks.N.*, conv_post)
  prompt_cache.gguf  keys mtmd.prompt_cache.{n_timesteps,temperature,...} and the precomputed caches
                     of the reference voice (not a voice we can use; only n_timesteps is read)
The official runtime reads no hyper-parameters from them (it hard-codes the release's): ours are
taken from tensor shapes, the rest from the release's flow.yaml / HiFTGenerator defaults.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Mapping

from .errors import ConversionError
from .omni_names import OfficialSource
from .omni_set import GGUFTensors, OmniSet
from .token2wav_gguf import HIFT_DEFAULTS, SILENCE_TOKEN, F0_DEFAULTS, FlowConfig, HiftConfig, Token2WavPlan, _AssetFile, \
    flow_tensors, hift_tensors

RELEASE_CFG_RATE = 0.7  # flow.yaml decoder.inference_cfg_rate of the release
_FILE_OF = (("encoder.", "encoder"), ("decoder.", "flow_matching"))  # flow.pt prefix -> file


def _count(f: GGUFTensors, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for n in f.by_name if (m := pat.match(n))}
    return len(idx)


def _flow_config(enc: GGUFTensors, fm: GGUFTensors, extra: GGUFTensors) -> FlowConfig:
    vocab, input_size = extra.shape("input_embedding.weight")
    n_mel, spk = extra.shape("spk_embed_affine_layer.weight")
    d = enc.shape("embed.out.0.weight")[0]
    heads = enc.shape("encoders.0.self_attn.pos_bias_u")[0]
    up_k = enc.shape("up_layer.conv.weight")[-1]
    head_dim = fm.shape("estimator.blocks.0.attn.q_norm.weight")[0]
    dit_dim, dit_in = fm.shape("estimator.in_proj.weight")
    return FlowConfig(
        input_size=input_size, n_mel=n_mel, spk_dim=spk, vocab=vocab, enc_dim=d, enc_heads=heads,
        enc_ff=enc.shape("encoders.0.feed_forward.w_1.weight")[0], enc_blocks=_count(enc, "encoders."),
        enc_up_blocks=_count(enc, "up_encoders."),
        pre_lookahead=enc.shape("pre_lookahead_layer.conv1.weight")[-1] - 1,
        up_stride=(up_k - 1) // 2, up_scale=float((up_k - 1) // 2),
        key_bias="encoders.0.self_attn.linear_k.bias" in enc, cfg_rate=RELEASE_CFG_RATE,
        dit_in=dit_in, dit_out=fm.shape("estimator.final_layer.linear.weight")[0], dit_dim=dit_dim,
        dit_layers=_count(fm, "estimator.blocks."), dit_heads=fm.shape("estimator.blocks.0.attn.to_q.weight")[0] // head_dim,
        dit_head_dim=head_dim, dit_ff=fm.shape("estimator.blocks.0.mlp.fc1.weight")[0],
    )


def _hift_config(h: GGUFTensors) -> HiftConfig:
    d = HIFT_DEFAULTS
    n_up = _count(h, "ups.")
    if n_up != len(d["upsample_rates"]):
        raise ConversionError(f"{h.path}: {n_up} upsampling stages, the release's HiFT has {len(d['upsample_rates'])}")
    base, in_ch, _ = h.shape("conv_pre.weight")
    n_fft = h.shape("conv_post.weight")[0] - 2
    return HiftConfig(
        in_channels=in_ch, base=base, harmonics=h.shape("m_source.l_linear.weight")[1] - 1,
        sample_rate=d["sampling_rate"], nsf_alpha=d["nsf_alpha"], nsf_sigma=d["nsf_sigma"],
        voiced_threshold=d["nsf_voiced_threshold"], up_rates=list(d["upsample_rates"]),
        up_kernels=[h.shape(f"ups.{i}.weight")[-1] for i in range(n_up)], n_fft=n_fft,
        hop=d["istft_params"]["hop_len"], res_kernels=list(d["resblock_kernel_sizes"]),
        res_dilations=[list(r) for r in d["resblock_dilation_sizes"]],
        src_kernels=[h.shape(f"source_resblocks.{i}.convs1.0.weight")[-1] for i in range(n_up)],
        src_dilations=[list(r) for r in d["source_resblock_dilation_sizes"]],
        lrelu_slope=d["lrelu_slope"], audio_limit=d["audio_limit"],
        f0_channels=h.shape("f0_predictor.condnet.0.weight")[0] if "f0_predictor.condnet.0.weight" in h
        else F0_DEFAULTS["cond_channels"],
    )


def _flow_file(name: str, files: Mapping[str, GGUFTensors]) -> tuple[GGUFTensors, str]:
    """flow.pt name -> (official file, name in it)."""
    for prefix, stem in _FILE_OF:
        if name.startswith(prefix):
            return files[stem], name[len(prefix):]
    return files["flow_extra"], name


def check_official_token2wav(s: OmniSet, src: OfficialSource, tts_config: Mapping[str, Any]
                             ) -> tuple[Token2WavPlan | None, list[str]]:
    """The Token2Wav plan, or None with a note when the set lacks any of its four weight files."""
    need = ("encoder", "flow_matching", "flow_extra", "hifigan2")
    missing = [f"{stem}.gguf" for stem in need if stem not in s.token2wav]
    if missing:
        return None, [f"note: token2wav-gguf/ lacks {', '.join(missing)}: the companion gets the TTS but no "
                      "vocoder (no speech audio)"]
    files = {stem: s.open(s.token2wav[stem]) for stem in need}
    flow = _flow_config(files["encoder"], files["flow_matching"], files["flow_extra"])
    hift = _hift_config(files["hifigan2"])
    if SILENCE_TOKEN >= flow.vocab:
        raise ConversionError(f"{files['flow_extra'].path}: input_embedding has {flow.vocab} rows, "
                              f"without the silence token {SILENCE_TOKEN}")
    n_steps = int(tts_config.get("s3_stream_n_timesteps", 10))
    if "prompt_cache" in s.token2wav:
        cache = s.open(s.token2wav["prompt_cache"])
        n_steps = int(cache.info.kv.get("mtmd.prompt_cache.n_timesteps", n_steps))
    resolved = []
    used: dict[str, set[str]] = {stem: set() for stem in files}
    for label, wants, locate in (
        ("flow", flow_tensors(flow), lambda n: _flow_file(n, files)),
        ("hift", hift_tensors(hift), lambda n: (files["hifigan2"], n)),
    ):
        for want in wants:
            f, official = locate(want.name)
            key = f"{label}:{want.name}"  # flow.pt and hift.pt names kept apart in the one source
            src.add(key, f, official, tuple(want.shape) if len(want.shape) == 1 else None)
            used[f.path.stem].add(official)
            resolved.append(_AssetFile(f.path, src).take(replace(want, name=key)))
    for stem, f in files.items():
        extra = [n for n in f.by_name if n not in used[stem]]
        if extra:
            raise ConversionError(f"{f.path}: unexpected tensor {extra[0]} ({len(extra)} unknown: the layout derived "
                                  "from the tensor shapes describes no such tensor)")
    plan = Token2WavPlan(s.dir / "token2wav-gguf", flow, hift, n_steps, int(tts_config.get("s3_stream_chunk_size", 25)),
                         resolved)
    return plan, []
