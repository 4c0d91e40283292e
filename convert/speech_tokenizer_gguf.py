"""The S3 speech tokenizer v2 (25 Hz, spec §5.2.1) from the release's ONNX file into the companion.

The release's `speech_tokenizer_v2_25hz.onnx` stores its weights as initializers with generated
names (`onnx::Conv_2216`, `onnx::MatMul_2536`, ...), so the weights are found by the graph's
structure: the nodes that consume a constant float tensor (an initializer, a Constant node, or an
Identity of either), in node order, must read

    Conv (D, n_mel, K) + bias            conv1, GELU
    Conv (D, D, K) + bias                conv2, GELU
    per layer: LayerNormalization (D) x2 params   attn_ln
               MatMul (D, D), Add (D)    query
               MatMul (D, D)             key (no bias)
               MatMul (D, D), Add (D)    value
               Conv (D, 1, K_fsmn)       FSMN memory (depthwise, no bias)
               MatMul (D, D), Add (D)    out
               LayerNormalization (D)    mlp_ln
               MatMul (D, F), Add (F)    mlp.0, GELU
               MatMul (F, D), Add (D)    mlp.2
    Gemm (C, D) + bias | MatMul (D, C), Add (C)   FSQ project_down (C = 8 codes of 3 levels)

(the layout s3tokenizer's `onnx2torch` reads from the release by name, and the one torch.onnx gives
for s3tokenizer's S3TokenizerV2). The first node that does not fit is named in a ConversionError.
Hyper-parameters come from the shapes and node attributes; the few the graph does not state in one
place (rotary head width and base, FSQ levels) are s3tokenizer v2's constants, written as keys so the
C++ side hard-codes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType

from .errors import ConversionError
from .gguf_write import PlannedTensor, Writer
from .mel_filters import mel_filter_bank
from .outtypes import table_type
from .voice_gguf import TOKENIZER_ONNX

KEY = "minicpmo.speech_tokenizer."

# The front end (spec §5.2.1, Whisper's recipe at 16 kHz) and the facts of s3tokenizer v2 the graph
# holds only as computed constants: rotary over 64-wide heads with base 10000 on 2048 positions,
# FSQ of 3 levels per code, and the 30-s window s3tokenizer encodes in one pass.
SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
LOG_RANGE = 8.0  # lower clip: max - 8 (log10 units)
ROPE_HEAD_DIM = 64
ROPE_THETA = 10000.0
ROPE_POSITIONS = 2048
FSQ_LEVELS = 3
MAX_MEL_FRAMES = 3000


@dataclass
class _Param:
    """A constant float tensor one node reads, in the layout the graph stores it."""

    node: Any
    index: int  # position of the node in the graph
    proto: Any  # onnx TensorProto

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.proto.dims)

    def where(self) -> str:
        return f"node #{self.index} '{self.node.name or '(unnamed)'}' ({self.node.op_type})"


@dataclass
class _Tensor:
    gguf: str
    param: _Param
    transform: str = ""  # "T": transpose a MatMul's (in, out) to PyTorch's (out, in); "flat": (out, in*K)
    kind: str = "matrix"  # "matrix" | "f32"


@dataclass
class SpeechTokenizerPlan:
    path: Path
    n_mel: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_codes: int
    conv_kernel: tuple[int, int]
    conv_stride: tuple[int, int]
    conv_pad: tuple[int, int]
    fsmn_kernel: int
    ln_eps: float
    fsq_scale: float
    tensors: list[_Tensor] = field(default_factory=list)


class _OnnxSource:
    """The SafetensorsSource queries encode_tensor needs, over the tensors of one ONNX graph, each
    under the name `label(t)` (the file, the node and the gguf tensor, so errors say where)."""

    def __init__(self, path: Path, tensors: list[_Tensor]):
        self.path = path
        self._by_name = {self.label(t): t for t in tensors}

    def label(self, t: _Tensor) -> str:
        return f"{self.path.name}: {t.param.where()} -> {t.gguf}"

    def shape(self, name: str) -> tuple[int, ...]:
        t = self._by_name[name]
        s = t.param.shape
        if t.transform == "T":
            return (s[1], s[0])
        if t.transform == "flat":
            return (s[0], int(np.prod(s[1:])))
        if t.transform == "fsmn":
            return (s[0], s[2])
        return s

    def float32(self, name: str, rows: slice | None = None) -> np.ndarray:
        from onnx import numpy_helper

        t = self._by_name[name]
        a = numpy_helper.to_array(t.param.proto).astype(np.float32).reshape(t.param.shape)
        if t.transform == "T":
            a = a.T
        a = np.ascontiguousarray(a.reshape(self.shape(name)))
        return a if rows is None else a[rows]


def _constants(graph: Any) -> dict[str, Any]:
    """value name -> TensorProto for initializers, Constant nodes' values, and Identity copies of them."""
    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t is not None and node.output:
                    out[node.output[0]] = a.t
        elif node.op_type == "Identity" and node.input and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
    return out


_WEIGHT_OPS = ("Conv", "MatMul", "Gemm", "Add", "LayerNormalization")


def _param_uses(graph: Any) -> list[list[_Param]]:
    """Per weight-reading node, in node order: the float tensors of 2+ values it reads as constants."""
    from onnx import TensorProto

    consts = _constants(graph)
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    uses = []
    for i, node in enumerate(graph.node):
        if node.op_type not in _WEIGHT_OPS:
            continue
        params = []
        for name in node.input:
            p = consts.get(name)
            if p is not None and p.data_type in floats and int(np.prod(p.dims, dtype=np.int64)) >= 2:
                params.append(_Param(node, i, p))
        if params:
            uses.append(params)
    return uses


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Cursor:
    """Walks the weight-reading nodes; each expect() takes the next one or names it in the error."""

    def __init__(self, path: Path, uses: list[list[_Param]]):
        self.path, self.uses, self.i = path, uses, 0

    def peek(self) -> list[_Param] | None:
        return self.uses[self.i] if self.i < len(self.uses) else None

    def fail(self, expected: str) -> ConversionError:
        got = self.peek()
        if got is None:
            return ConversionError(f"{self.path}: the graph ends where {expected} was expected")
        shapes = ", ".join(str(p.shape) for p in got)
        return ConversionError(f"{self.path}: {got[0].where()} reading constants {shapes} does not fit: "
                               f"expected {expected}")

    def expect(self, op: str, shapes: list[tuple[int, ...] | None], what: str) -> list[_Param]:
        """shapes: the constants' expected shapes in input order (None: any shape, checked by the caller)."""
        got = self.peek()
        want = f"{what}: {op} reading {', '.join(str(s) for s in shapes)}"
        if got is None or got[0].node.op_type != op or len(got) != len(shapes):
            raise self.fail(want)
        for p, s in zip(got, shapes):
            if s is not None and p.shape != s:
                raise self.fail(want)
        self.i += 1
        return got


def _check_gelu(path: Path, graph: Any, n_layer: int) -> None:
    """GELU is the exact (erf) form: one Erf per activation (2 stem + 1 per layer), or Gelu ops without tanh."""
    n_erf = sum(1 for n in graph.node if n.op_type == "Erf")
    gelus = [n for n in graph.node if n.op_type == "Gelu"]
    for n in gelus:
        if _attr(n, "approximate", b"none") not in (b"none", "none"):
            raise ConversionError(f"{path}: node '{n.name}' is the tanh-approximated GELU; "
                                  "the tokenizer uses the erf form")
    if n_erf + len(gelus) != 2 + n_layer:
        raise ConversionError(f"{path}: found {n_erf} Erf and {len(gelus)} Gelu nodes, expected {2 + n_layer} "
                              "exact GELUs (2 convolutions + 1 per layer)")


def _fsq_scale(path: Path, graph: Any) -> float:
    """The factor after tanh (0.999 in s3tokenizer v2): the scalar constant of the Mul reading the Tanh."""
    from onnx import numpy_helper

    consts = _constants(graph)
    tanh = [n for n in graph.node if n.op_type == "Tanh"]
    if len(tanh) != 1:
        raise ConversionError(f"{path}: expected one Tanh node (the FSQ bound), found {len(tanh)}")
    for n in graph.node:
        if n.op_type == "Mul" and tanh[0].output[0] in n.input:
            other = [consts.get(x) for x in n.input if x != tanh[0].output[0]]
            if len(other) == 1 and other[0] is not None:
                v = numpy_helper.to_array(other[0]).astype(np.float64).reshape(-1)
                if v.size == 1 and 0.0 < v[0] <= 1.0:
                    return float(v[0])
            raise ConversionError(f"{path}: node '{n.name}' scales the FSQ tanh by a non-scalar or out-of-range value")
    raise ConversionError(f"{path}: no Mul reads the FSQ tanh '{tanh[0].name}' (expected its 0.999 scale)")


def _conv_geometry(path: Path, p: _Param, what: str) -> tuple[int, int, int]:
    """(kernel, stride, symmetric pad) of a 1-D Conv; anything else is refused."""
    node = p.node
    k = p.shape[-1]
    stride = list(_attr(node, "strides", [1]))
    pads = list(_attr(node, "pads", [0, 0]))
    dil = list(_attr(node, "dilations", [1]))
    group = int(_attr(node, "group", 1))
    expect_group = p.shape[0] if what == "fsmn" else 1
    if len(stride) != 1 or len(pads) != 2 or pads[0] != pads[1] or dil != [1] or group != expect_group:
        raise ConversionError(f"{path}: {p.where()} ({what}): expected a 1-D convolution with symmetric padding, "
                              f"dilation 1, group {expect_group}; got strides {stride}, pads {pads}, dilations {dil}, "
                              f"group {group}")
    return k, int(stride[0]), int(pads[0])


def map_speech_tokenizer(path: Path, model: Any) -> SpeechTokenizerPlan:
    """Structure-map an ONNX ModelProto (see the module docstring); raises ConversionError."""
    graph = model.graph
    cur = _Cursor(path, _param_uses(graph))
    first = cur.peek()
    if first is None or first[0].node.op_type != "Conv" or len(first[0].shape) != 3:
        raise cur.fail("conv1: Conv reading (D, n_mel, K), (D,)")
    D, n_mel, k1 = first[0].shape
    c1 = cur.expect("Conv", [(D, n_mel, k1), (D,)], "conv1")
    nxt = cur.peek()
    if nxt is None or nxt[0].node.op_type != "Conv" or len(nxt[0].shape) != 3 or nxt[0].shape[:2] != (D, D):
        raise cur.fail(f"conv2: Conv reading ({D}, {D}, K), ({D},)")
    c2 = cur.expect("Conv", [nxt[0].shape, (D,)], "conv2")
    g1 = _conv_geometry(path, c1[0], "conv1")
    g2 = _conv_geometry(path, c2[0], "conv2")
    tensors = [_Tensor("stok.conv1.weight", c1[0], "flat"), _Tensor("stok.conv1.bias", c1[1]),
               _Tensor("stok.conv2.weight", c2[0], "flat"), _Tensor("stok.conv2.bias", c2[1])]

    n_ff = 0
    fsmn_k = 0
    eps: float | None = None
    layer = 0
    while (nxt := cur.peek()) is not None and nxt[0].node.op_type == "LayerNormalization":
        pre = f"stok.blk.{layer}."
        w = f"layer {layer}"

        def ln(name: str) -> None:
            nonlocal eps
            p = cur.expect("LayerNormalization", [(D,), (D,)], f"{w} {name}")
            e = float(_attr(p[0].node, "epsilon", 1e-5))
            if int(_attr(p[0].node, "axis", -1)) != -1:
                raise ConversionError(f"{path}: {p[0].where()}: LayerNormalization must normalise the last axis")
            if eps is not None and abs(e - eps) > 1e-12:
                raise ConversionError(f"{path}: {p[0].where()}: epsilon {e} differs from the other norms' {eps}")
            eps = e
            tensors.extend([_Tensor(pre + name + ".weight", p[0]), _Tensor(pre + name + ".bias", p[1])])

        def lin(name: str, n_in: int, n_out: int, bias: bool = True) -> None:
            p = cur.expect("MatMul", [(n_in, n_out)], f"{w} {name} weight")
            tensors.append(_Tensor(pre + name + ".weight", p[0], "T"))
            if bias:
                b = cur.expect("Add", [(n_out,)], f"{w} {name} bias")
                tensors.append(_Tensor(pre + name + ".bias", b[0]))

        ln("attn_ln")
        lin("attn_q", D, D)
        lin("attn_k", D, D, bias=False)
        lin("attn_v", D, D)
        nf = cur.peek()
        if nf is None or nf[0].node.op_type != "Conv" or len(nf) != 1 or len(nf[0].shape) != 3 \
                or nf[0].shape[:2] != (D, 1) or (fsmn_k and nf[0].shape[2] != fsmn_k):
            raise cur.fail(f"{w} FSMN memory: Conv reading ({D}, 1, K) without bias")
        f = cur.expect("Conv", [nf[0].shape], f"{w} fsmn")
        fk, fs, fpad = _conv_geometry(path, f[0], "fsmn")
        # "same" padding, (K-1)/2 left and the rest right (an external Pad node, or the Conv's own for odd K)
        if fs != 1 or fpad not in (0, (fk - 1) // 2) or (fpad and fk % 2 == 0):
            raise ConversionError(f"{path}: {f[0].where()}: the FSMN convolution must have stride 1 and "
                                  f"'same' padding, got stride {fs}, pad {fpad} for kernel {fk}")
        fsmn_k = fk
        tensors.append(_Tensor(pre + "fsmn.weight", f[0], "fsmn", kind="f32"))
        lin("attn_out", D, D)
        ln("mlp_ln")
        nm = cur.peek()
        if nm is None or nm[0].node.op_type != "MatMul" or len(nm[0].shape) != 2 or nm[0].shape[0] != D \
                or (n_ff and nm[0].shape[1] != n_ff):
            raise cur.fail(f"{w} mlp.0: MatMul reading ({D}, F)")
        n_ff = nm[0].shape[1]
        lin("mlp_0", D, n_ff)
        lin("mlp_2", n_ff, D)
        layer += 1
    if layer == 0:
        raise cur.fail("layer 0 attn_ln: LayerNormalization")

    proj = cur.peek()
    if proj is not None and proj[0].node.op_type == "Gemm" and len(proj) == 2:
        trans_b = int(_attr(proj[0].node, "transB", 0))
        if int(_attr(proj[0].node, "transA", 0)) or float(_attr(proj[0].node, "alpha", 1.0)) != 1.0 \
                or float(_attr(proj[0].node, "beta", 1.0)) != 1.0 or len(proj[0].shape) != 2:
            raise cur.fail("FSQ project_down: Gemm without transA, alpha = beta = 1")
        n_codes = proj[0].shape[0] if trans_b else proj[0].shape[1]
        shape = (n_codes, D) if trans_b else (D, n_codes)
        g = cur.expect("Gemm", [shape, (n_codes,)], "FSQ project_down")
        tensors += [_Tensor("stok.fsq.proj.weight", g[0], "" if trans_b else "T"), _Tensor("stok.fsq.proj.bias", g[1])]
    elif proj is not None and proj[0].node.op_type == "MatMul" and len(proj[0].shape) == 2 and proj[0].shape[0] == D:
        n_codes = proj[0].shape[1]
        m = cur.expect("MatMul", [(D, n_codes)], "FSQ project_down weight")
        b = cur.expect("Add", [(n_codes,)], "FSQ project_down bias")
        tensors += [_Tensor("stok.fsq.proj.weight", m[0], "T"), _Tensor("stok.fsq.proj.bias", b[0])]
    else:
        raise cur.fail(f"the next layer's LayerNormalization or the FSQ project_down (Gemm or MatMul reading ({D}, C))")
    if cur.peek() is not None:
        raise cur.fail("nothing after the FSQ projection")
    if D % ROPE_HEAD_DIM:
        raise ConversionError(f"{path}: width {D} is not a multiple of the {ROPE_HEAD_DIM}-wide rotary heads")
    _check_gelu(path, graph, layer)
    return SpeechTokenizerPlan(path, n_mel, D, n_ff, layer, n_codes, (g1[0], g2[0]), (g1[1], g2[1]), (g1[2], g2[2]),
                               fsmn_k, float(eps if eps is not None else 1e-5), _fsq_scale(path, graph), tensors)


def check_speech_tokenizer(t2w_dir: Path) -> SpeechTokenizerPlan | None:
    """The plan of the token2wav folder's speech tokenizer, or None when it has no such file."""
    path = Path(t2w_dir) / TOKENIZER_ONNX
    if not path.is_file():
        return None
    try:
        import onnx
    except ImportError as e:
        raise ConversionError(f"{path}: reading it needs the `onnx` package (pip install onnx)") from e
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and others for a corrupt file
        raise ConversionError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    return map_speech_tokenizer(path, model)


def speech_tokenizer_component(plan: SpeechTokenizerPlan | None, w: Writer, outtype: str) -> list[PlannedTensor]:
    """omni_gguf hook: keys + tensors `stok.*` ([] without the ONNX file). Vectors and the FSMN kernels
    (per-channel filters applied element-wise) are F32; matrices F32 in an f32 file, else F16 (never
    block-quantized: a code flips where a projection crosses an FSQ boundary)."""
    if plan is None:
        return []
    _add_keys(w, plan)
    src = _OnnxSource(plan.path, plan.tensors)
    out = []
    for t in plan.tensors:
        name = src.label(t)
        shape = src.shape(name)
        qtype = GGMLQuantizationType.F32 if t.kind == "f32" or len(shape) == 1 else table_type(outtype)
        out.append(PlannedTensor(t.gguf, name, qtype, shape, source=src))
    mel = mel_filter_bank(plan.n_mel, N_FFT, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2.0).astype(np.float32)
    out.append(PlannedTensor("stok.mel_filters", "(mel filter bank)", GGMLQuantizationType.F32, mel.shape,
                             values=mel))
    return out


def _add_keys(w: Writer, p: SpeechTokenizerPlan) -> None:
    u = lambda k, v: w.add_uint32(KEY + k, int(v))  # noqa: E731
    fl = lambda k, v: w.add_float32(KEY + k, float(v))  # noqa: E731
    u("sample_rate", SAMPLE_RATE)
    u("n_fft", N_FFT)
    u("hop_length", HOP)
    u("n_mel", p.n_mel)
    fl("log_range", LOG_RANGE)
    u("max_mel_frames", MAX_MEL_FRAMES)
    u("n_embd", p.n_embd)
    u("n_ff", p.n_ff)
    u("n_layer", p.n_layer)
    u("n_head", p.n_embd // ROPE_HEAD_DIM)
    fl("layer_norm_eps", p.ln_eps)
    for i in range(2):
        u(f"conv{i + 1}.kernel", p.conv_kernel[i])
        u(f"conv{i + 1}.stride", p.conv_stride[i])
        u(f"conv{i + 1}.pad", p.conv_pad[i])
    u("fsmn_kernel", p.fsmn_kernel)
    u("rope_dim", ROPE_HEAD_DIM)
    fl("rope_theta", ROPE_THETA)
    u("rope_positions", ROPE_POSITIONS)
    u("fsq_dim", p.n_codes)
    u("fsq_levels", FSQ_LEVELS)
    fl("fsq_scale", p.fsq_scale)
