"""Write the LLM file: a stock llama.cpp `qwen3` GGUF with MiniCPM-o's tokenizer and template.

Upstream libllama loads it unchanged; the only extra keys: `minicpmo.omni_file` names the companion,
`minicpmo.llm_fingerprint` (llm_fingerprint.py) ties the two files together.

End of generation: eos = <|im_end|> (tokenizer_config's eos_token). libllama adds every token whose
text is <|im_end|> or <|endoftext|> (and Qwen's FIM pad/repo/file-sep markers) to its EOG set by
text match, so generation stops on both reference terminators without further keys.
"""

from __future__ import annotations

from pathlib import Path

import gguf

from .checkpoint import Checkpoint
from .llm_fingerprint import FINGERPRINT_KEY
from .gguf_write import PlannedTensor, Writer, write_gguf
from .outtypes import OUTTYPES, tensor_type

ARCH = "qwen3"

# HF names inside llm.model.layers.{i}. -> llama.cpp qwen3 names inside blk.{i}.
_LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP_MAP = {
    "llm.model.embed_tokens.weight": "token_embd.weight",
    "llm.model.norm.weight": "output_norm.weight",
    "llm.lm_head.weight": "output.weight",
}
_LAYER_PREFIX = "llm.model.layers."


def gguf_tensor_name(hf_name: str) -> str:
    if hf_name in _TOP_MAP:
        return _TOP_MAP[hf_name]
    if hf_name.startswith(_LAYER_PREFIX):
        idx, rest = hf_name[len(_LAYER_PREFIX):].split(".", 1)
        return f"blk.{int(idx)}.{_LAYER_MAP[rest]}"
    raise KeyError(hf_name)


def llm_tensor_plan(ckpt: Checkpoint, outtype: str) -> list[PlannedTensor]:
    # layout.llm_shapes already yields llama.cpp's usual order: embeddings, blocks, head.
    return [PlannedTensor(gguf_tensor_name(n), n, tensor_type(outtype, s), s)
            for n, s in ckpt.llm_tensor_shapes.items()]


def write_llm_gguf(ckpt: Checkpoint, path: Path, outtype: str, name: str, omni_basename: str,
                   quiet: bool = False, fingerprint: str = "") -> Path:
    d, tok = ckpt.llm, ckpt.tokenizer
    w = Writer(None, ARCH)
    w.add_name(name)
    w.add_type("model")
    w.add_file_type(int(OUTTYPES[outtype][1]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.add_context_length(d.context)
    w.add_embedding_length(d.hidden)
    w.add_block_count(d.layers)
    w.add_feed_forward_length(d.ffn)
    w.add_head_count(d.heads)
    w.add_head_count_kv(d.kv_heads)
    w.add_key_length(d.head_dim)
    w.add_value_length(d.head_dim)
    w.add_layer_norm_rms_eps(d.rms_eps)
    w.add_rope_freq_base(d.rope_theta)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tok.tokens)
    w.add_token_types(tok.token_types)
    w.add_token_merges(tok.merges)
    w.add_eos_token_id(tok.eos_id)
    if tok.bos_id is not None:
        w.add_bos_token_id(int(tok.bos_id))
    if tok.pad_id is not None:
        w.add_pad_token_id(tok.pad_id)
    if tok.unk_id is not None:
        w.add_unk_token_id(tok.unk_id)
    w.add_add_bos_token(tok.add_bos)
    if tok.chat_template:
        w.add_chat_template(tok.chat_template)

    w.add_string("minicpmo.omni_file", omni_basename)
    if fingerprint:
        w.add_string(FINGERPRINT_KEY, fingerprint)  # the companion holds the same value
    return write_gguf(w, path, llm_tensor_plan(ckpt, outtype), ckpt.weights, quiet)
