"""The CAM++ speaker encoder (the release's campplus.onnx, spec §5.2.1) as companion tensors `spk_enc.*`
with its hyper-parameters as keys `minicpmo.speaker_encoder.*`, so the runtime makes a voice's 192-d
x-vector natively (csrc/voice/speaker_encoder.*).

The ONNX initializers carry generated names, so they are mapped by the graph's structure: the
parametric nodes (Conv, BatchNorm as a BatchNormalization node or as a per-channel Mul then Add) in
node order, each BatchNorm that directly follows a Conv folded into it (exact up to rounding: done in
float64), the rest kept as per-channel scale and shift. That sequence must read as CAM++:

    head   2-D conv (1 -> m channels), residual blocks (conv, conv, optional 1x1 shortcut; the block's
           Add tells where one ends), a last 2-D conv; frequency strides from the nodes
    tdnn   1-D conv (m * F' -> C0, stride 2)
    blocks per dense layer: BN(C), 1x1 conv (C -> B), the context-aware masking layer: a dilated
           conv (B -> G) and the mask MLP 1x1 (B -> B/r) -> 1x1 (B/r -> G), segment pooling length from
           its AveragePool; then a transit: BN(C), 1x1 conv (C -> C'), where the next node tells
           another dense layer (its conv after the BN takes C') from the next block
    out    the output BN (folded into the last transit by most exporters) + ReLU, mean and unbiased
           standard deviation over time, a 1x1 conv (2C -> E) and its BatchNorm (folded).

Every conv kernel is stored tap-major, (taps, C_out, C_in). The first node that does not fit raises
ConversionError naming it. Storage: vectors F32, matrices F32 in f32 files and F16 otherwise (never
block-quantized: the encoder is small, its output a cosine-compared embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from .errors import ConversionError
from .gguf_write import PlannedTensor, Writer

KEY = "minicpmo.speaker_encoder."
PREFIX = "spk_enc."
SPEAKER_ONNX = "campplus.onnx"

# The front end the release's CAM++ was trained with (spec §5.2.1); not in the ONNX graph, which
# starts at the fbank: Kaldi fbank, 25/10 ms povey frames, pre-emphasis 0.97, mel bins from 20 Hz to
# Nyquist, dither 0, minus the per-utterance mean.
FBANK_SAMPLE_RATE = 16000
FBANK_FRAME_MS = 25.0
FBANK_SHIFT_MS = 10.0
FBANK_LOW_HZ = 20.0
FBANK_PREEMPH = 0.97

_PASSTHROUGH = {"Identity", "Squeeze", "Unsqueeze", "Reshape"}  # ops a folded BatchNorm may sit behind


@dataclass
class _Op:
    """One parametric step after folding: a Conv (weight, bias) or a free-standing BatchNorm (scale, shift)."""

    kind: str  # "conv" or "bn"
    where: str  # the ONNX node, for errors
    index: int  # its node index
    inp: str  # the value it reads
    out: str  # the value it gives (after a folded BatchNorm: the BatchNorm's output)
    w: np.ndarray  # conv kernel (float64) or bn scale
    b: np.ndarray  # conv bias (zeros when the node has none) or bn shift
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()

    @property
    def c_out(self) -> int:
        return int(self.w.shape[0])

    @property
    def c_in(self) -> int:
        return int(self.w.shape[1]) if self.kind == "conv" else int(self.w.shape[0])

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(int(k) for k in self.w.shape[2:])


@dataclass
class SpeakerEncoderPlan:
    path: Path
    keys: dict[str, Any] = field(default_factory=dict)  # key suffix -> int, float or list of ints
    tensors: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (gguf name, float64 array, torch order)

    @property
    def n_params(self) -> int:
        return sum(a.size for _, a in self.tensors)


class _Graph:
    """Constants, producers and consumers of an ONNX graph, with node descriptions for errors."""

    def __init__(self, model: Any, path: Path):
        from onnx import numpy_helper

        self.path = path
        g = model.graph
        self.nodes = list(g.node)
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = numpy_helper.to_array(a.t)
            elif n.op_type == "Identity" and n.input[0] in self.consts:
                self.consts[n.output[0]] = self.consts[n.input[0]]
            for name in n.input:
                self.consumers.setdefault(name, []).append(i)
        self.inputs = [v for v in g.input if v.name not in self.consts]

    def where(self, i: int) -> str:
        n = self.nodes[i]
        label = f" {n.name!r}" if n.name else ""
        return f"{self.path.name}: node {i} ({n.op_type}{label})"

    def fail(self, i: int | None, msg: str) -> ConversionError:
        return ConversionError(f"{self.where(i) if i is not None else self.path.name}: {msg}")

    def const(self, i: int, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise self.fail(i, f"its {what} is not a constant of the graph")
        return self.consts[name].astype(np.float64)

    def attrs(self, i: int) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in self.nodes[i].attribute}

    def sole_consumer(self, value: str) -> int | None:
        c = self.consumers.get(value, [])
        return c[0] if len(c) == 1 else None


def _bn_affine(g: _Graph, i: int) -> tuple[np.ndarray, np.ndarray]:
    n = g.nodes[i]
    if len(n.input) < 5:
        raise g.fail(i, "BatchNormalization needs scale, bias, mean and variance inputs")
    gamma, beta, mean, var = (g.const(i, n.input[k], w) for k, w in
                              zip(range(1, 5), ("scale", "bias", "running mean", "running variance")))
    eps = float(g.attrs(i).get("epsilon", 1e-5))
    if not (gamma.ndim == beta.ndim == mean.ndim == var.ndim == 1) or \
            not (gamma.size == beta.size == mean.size == var.size) or np.any(var + eps <= 0):
        raise g.fail(i, "BatchNormalization parameters must be 1-D of one length with variance + epsilon > 0")
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _channel_const(g: _Graph, n: Any) -> tuple[str, np.ndarray] | None:
    """(the other input, the per-channel values) when node n combines a value with a constant that
    broadcasts along the channel axis only ((C, 1), (1, C, 1), (1, C, 1, 1), C > 1)."""
    if len(n.input) != 2:
        return None
    for k in (0, 1):
        c, other = n.input[k], n.input[1 - k]
        if c in g.consts and other not in g.consts:
            v = g.consts[c]
            squeezed = [d for d in v.shape if d != 1]
            lead = list(v.shape).index(squeezed[0]) if len(squeezed) == 1 else -1
            if len(squeezed) == 1 and squeezed[0] > 1 and lead in (0, 1) and v.ndim - lead >= 2:
                return other, v.astype(np.float64).reshape(-1)
    return None


def _mul_add_affine(g: _Graph, i: int) -> tuple[int, np.ndarray, np.ndarray] | None:
    """A BatchNorm an optimizer rewrote as Mul by a per-channel constant then Add of one:
    (the Add's index, scale, shift), or None when node i does not start one."""
    mul = _channel_const(g, g.nodes[i])
    j = g.sole_consumer(g.nodes[i].output[0])
    if mul is None or j is None or g.nodes[j].op_type != "Add":
        return None
    add = _channel_const(g, g.nodes[j])
    if add is None or add[0] != g.nodes[i].output[0] or add[1].size != mul[1].size:
        return None
    return j, mul[1], add[1]


def _parametric_ops(g: _Graph) -> list[_Op]:
    """Conv and BatchNorm nodes in node order (a BatchNorm as a BatchNormalization node, or rewritten as
    a per-channel Mul then Add), each BatchNorm fed by a Conv (only through reshapes) folded into it."""
    ops: list[_Op] = []
    folded: set[int] = set()
    for i, n in enumerate(g.nodes):
        if n.op_type == "Mul" and i not in folded:
            affine = _mul_add_affine(g, i)
            if affine is not None:
                j, scale, shift = affine
                ops.append(_Op("bn", g.where(i), i, _channel_const(g, n)[0], g.nodes[j].output[0], scale, shift))
                folded.add(j)
        elif n.op_type == "BatchNormalization":
            if i in folded:
                continue
            scale, shift = _bn_affine(g, i)
            ops.append(_Op("bn", g.where(i), i, n.input[0], n.output[0], scale, shift))
        elif n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu", "LayerNormalization"):
            if n.op_type != "Conv":
                raise g.fail(i, "CAM++ has no such layer (expected Conv and BatchNormalization only)")
            a = g.attrs(i)
            if int(a.get("group", 1)) != 1:
                raise g.fail(i, "grouped convolution is not CAM++")
            auto_pad = a.get("auto_pad", b"NOTSET")
            if (auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)) not in ("NOTSET", ""):
                raise g.fail(i, "auto_pad convolutions are not supported (explicit pads expected)")
            w = g.const(i, n.input[1], "weight")
            if w.ndim not in (3, 4):
                raise g.fail(i, f"expected a 1-D or 2-D convolution, weight shape {list(w.shape)}")
            b = g.const(i, n.input[2], "bias") if len(n.input) > 2 and n.input[2] else np.zeros(w.shape[0])
            if b.shape != (w.shape[0],):
                raise g.fail(i, f"bias shape {list(b.shape)} does not fit weight {list(w.shape)}")
            nd = w.ndim - 2
            strides = tuple(int(s) for s in a.get("strides", [1] * nd))
            pads = tuple(int(p) for p in a.get("pads", [0] * 2 * nd))
            dil = tuple(int(d) for d in a.get("dilations", [1] * nd))
            # a BatchNorm that is the conv's only reader (through reshapes) folds into it
            out, j = n.output[0], g.sole_consumer(n.output[0])
            while j is not None and g.nodes[j].op_type in _PASSTHROUGH:
                out = g.nodes[j].output[0]
                j = g.sole_consumer(out)
            following = None
            if j is not None and g.nodes[j].op_type == "BatchNormalization" and g.nodes[j].input[0] == out:
                following = (j, j, *_bn_affine(g, j))
            elif j is not None and g.nodes[j].op_type == "Mul" and _mul_add_affine(g, j) is not None:
                following = (j, *_mul_add_affine(g, j))
            if following is not None:
                first, last, scale, shift = following
                if scale.size != w.shape[0]:
                    raise g.fail(first, f"{scale.size} channels after a convolution of {w.shape[0]}")
                w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
                b = b * scale + shift
                folded.update((first, last))
                out = g.nodes[last].output[0]
            else:
                out = n.output[0]
            ops.append(_Op("conv", g.where(i), i, n.input[0], out, w, b, strides, pads, dil))
    return ops


class _Reader:
    """Walks the parametric ops, checking each against what CAM++ needs next."""

    def __init__(self, g: _Graph, ops: list[_Op]):
        self.g, self.ops, self.i = g, ops, 0

    def peek(self, k: int = 0) -> _Op | None:
        return self.ops[self.i + k] if self.i + k < len(self.ops) else None

    def take(self, what: str, kind: str, c_in: int | None = None, ndim: int | None = None,
             kernel: tuple[int, ...] | None = None, c_out: int | None = None) -> _Op:
        op = self.peek()
        if op is None:
            raise ConversionError(f"{self.g.path.name}: the graph ends where CAM++ needs {what}")
        if op.kind != kind:
            raise ConversionError(f"{op.where}: expected {what} ({'Conv' if kind == 'conv' else 'BatchNormalization'})")
        if ndim is not None and op.w.ndim != ndim + 2:
            raise ConversionError(f"{op.where}: expected {what} as a {ndim}-D convolution, weight {list(op.w.shape)}")
        if c_in is not None and op.c_in != c_in:
            raise ConversionError(f"{op.where}: {what} should read {c_in} channels, it reads {op.c_in}")
        if c_out is not None and op.c_out != c_out:
            raise ConversionError(f"{op.where}: {what} should give {c_out} channels, it gives {op.c_out}")
        if kernel is not None and op.kernel != kernel:
            raise ConversionError(f"{op.where}: {what} should have kernel {list(kernel)}, it has {list(op.kernel)}")
        self.i += 1
        return op


def _same_pads(op: _Op, what: str) -> None:
    """Every conv of CAM++ pads dilation * (k - 1) / 2 on both sides (length-keeping)."""
    want = tuple(d * (k - 1) // 2 for k, d in zip(op.kernel, op.dilations))
    if any(k % 2 == 0 for k in op.kernel) or op.pads != want + want:
        raise ConversionError(f"{op.where}: {what} should pad {list(want + want)} (odd kernel, same length), "
                              f"has pads {list(op.pads)}")


def _taps(w: np.ndarray) -> np.ndarray:
    """(C_out, C_in, K) or (C_out, C_in, KH, KW) conv kernel -> (taps, C_out, C_in), tap kh * KW + kw: the
    runtime multiplies each shifted input by its tap's (C_in -> C_out) matrix and sums."""
    return np.ascontiguousarray(w.reshape(w.shape[0], w.shape[1], -1).transpose(2, 0, 1))


def _add_conv(plan: SpeakerEncoderPlan, name: str, op: _Op) -> None:
    plan.tensors.append((f"{PREFIX}{name}.weight", _taps(op.w)))
    plan.tensors.append((f"{PREFIX}{name}.bias", op.b))


def _add_bn(plan: SpeakerEncoderPlan, name: str, op: _Op) -> None:
    plan.tensors.append((f"{PREFIX}{name}.scale", op.w))
    plan.tensors.append((f"{PREFIX}{name}.shift", op.b))


def _input_mels(g: _Graph) -> int:
    if len(g.inputs) != 1:
        raise g.fail(None, f"expected one input (1, T, n_mel fbank), found {len(g.inputs)}")
    dims = g.inputs[0].type.tensor_type.shape.dim
    if len(dims) != 3 or not dims[2].HasField("dim_value"):
        raise g.fail(None, "the input must be (batch, T, n_mel) with a fixed n_mel")
    return int(dims[2].dim_value)


def _read_head(r: _Reader, plan: SpeakerEncoderPlan, n_mel: int) -> int:
    """The 2-D convolutional front (FCM); returns the channels it hands the TDNN (m x frequency bins)."""
    g = r.g
    stem = r.take("the first 2-D convolution of the head", "conv", c_in=1, ndim=2)
    _same_pads(stem, "the head's first convolution")
    m = stem.c_out
    kernel = stem.kernel
    if stem.strides != (1, 1):
        raise ConversionError(f"{stem.where}: the head's first convolution should have stride 1")
    _add_conv(plan, "head.conv_in", stem)
    freq = n_mel
    strides, shortcuts = [], []
    while True:
        first, second = r.peek(), r.peek(1)
        if first is None or first.kind != "conv" or first.w.ndim != 4:
            raise ConversionError(f"{first.where if first else g.path.name}: expected a 2-D convolution of the head")
        # a residual block's second conv feeds the block's Add; the head's last conv does not
        add = g.sole_consumer(second.out) if second is not None and second.kind == "conv" \
            and second.w.ndim == 4 else None
        if add is None or g.nodes[add].op_type != "Add":
            break
        k = len(strides)
        c1 = r.take(f"head residual block {k} conv1", "conv", c_in=m, c_out=m, ndim=2, kernel=kernel)
        c2 = r.take(f"head residual block {k} conv2", "conv", c_in=m, c_out=m, ndim=2, kernel=kernel)
        for op, what in ((c1, "conv1"), (c2, "conv2")):
            _same_pads(op, f"head residual block {k} {what}")
        if c1.strides[1] != 1 or c2.strides != (1, 1):
            raise ConversionError(f"{c1.where}: a head residual block strides only frequency, in its first conv")
        stride = c1.strides[0]
        _add_conv(plan, f"head.res.{k}.conv1", c1)
        _add_conv(plan, f"head.res.{k}.conv2", c2)
        nxt = r.peek()
        other = [x for x in g.nodes[add].input if x != second.out]
        has_shortcut = nxt is not None and nxt.kind == "conv" and nxt.w.ndim == 4 and \
            nxt.out in other
        if has_shortcut:
            sc = r.take(f"head residual block {k} shortcut", "conv", c_in=m, c_out=m, ndim=2, kernel=(1, 1))
            if sc.strides != (stride, 1) or sc.pads != (0, 0, 0, 0):
                raise ConversionError(f"{sc.where}: the shortcut should stride ({stride}, 1) without padding")
            _add_conv(plan, f"head.res.{k}.shortcut", sc)
        elif stride != 1:
            raise ConversionError(f"{c1.where}: a strided residual block needs a 1x1 shortcut convolution")
        strides.append(stride)
        shortcuts.append(int(has_shortcut))
        freq = (freq - 1) // stride + 1
    last = r.take("the head's last 2-D convolution", "conv", c_in=m, c_out=m, ndim=2, kernel=kernel)
    _same_pads(last, "the head's last convolution")
    if last.strides[1] != 1:
        raise ConversionError(f"{last.where}: the head's last convolution strides only frequency")
    _add_conv(plan, "head.conv_out", last)
    freq = (freq - 1) // last.strides[0] + 1
    plan.keys.update({"head.channels": m, "head.kernel": kernel[0], "head.res_strides": strides,
                      "head.res_shortcuts": shortcuts, "head.out_stride": last.strides[0], "head.freq_bins": freq})
    if kernel[0] != kernel[1]:
        raise ConversionError(f"{stem.where}: the head's kernels should be square, got {list(kernel)}")
    return m * freq


def _seg_len(g: _Graph, local: _Op) -> int:
    """The segment length of the masking layer's average pooling, found beside its dilated conv."""
    for j in g.consumers.get(local.inp, []):
        n = g.nodes[j]
        if n.op_type == "AveragePool":
            a = g.attrs(j)
            k, s = list(a.get("kernel_shape", [])), list(a.get("strides", []))
            if len(k) != 1 or s != k or int(a.get("ceil_mode", 0)) != 1 or any(int(p) for p in a.get("pads", [])):
                raise g.fail(j, "segment pooling should be a 1-D AveragePool with stride = kernel, ceil_mode 1, no pads")
            return int(k[0])
    raise ConversionError(f"{local.where}: no segment AveragePool reads the masking layer's input")


def plan_speaker_encoder(path: Path) -> SpeakerEncoderPlan:
    """Reads and checks campplus.onnx; raises ConversionError naming the first node that is not CAM++."""
    try:
        import onnx
    except ImportError as e:  # the caller says what is missing before calling
        raise ConversionError(f"{path}: reading the speaker encoder needs the `onnx` package") from e
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - onnx raises several types for a corrupt file
        raise ConversionError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    g = _Graph(model, Path(path))
    n_mel = _input_mels(g)
    ops = _parametric_ops(g)
    r = _Reader(g, ops)
    plan = SpeakerEncoderPlan(Path(path))
    channels = _read_head(r, plan, n_mel)

    tdnn = r.take("the TDNN layer", "conv", c_in=channels, ndim=1)
    _same_pads(tdnn, "the TDNN layer")
    if tdnn.dilations != (1,):
        raise ConversionError(f"{tdnn.where}: the TDNN layer should not be dilated")
    _add_conv(plan, "tdnn", tdnn)
    c = tdnn.c_out
    plan.keys.update({"tdnn.channels": c, "tdnn.kernel": tdnn.kernel[0], "tdnn.stride": tdnn.strides[0]})

    n_layers, kernels, dilations, transits = [], [], [], []
    growth = bn_ch = cam_ch = seg = None
    while True:
        b = len(n_layers)
        count = 0
        kernel = dilation = None
        while True:  # dense layers until the transit
            after = r.peek(2)
            if after is None or not (after.kind == "conv" and after.w.ndim == 3 and after.kernel[0] > 1):
                break
            pre = f"block {b} layer {count}"
            bn = r.take(f"{pre}: input BatchNorm", "bn", c_in=c)
            fc = r.take(f"{pre}: 1x1 bottleneck conv", "conv", c_in=c, ndim=1, kernel=(1,), c_out=bn_ch)
            bn_ch = fc.c_out
            local = r.take(f"{pre}: dilated conv of the masking layer", "conv", c_in=bn_ch, ndim=1, c_out=growth)
            growth = local.c_out
            _same_pads(local, f"{pre}: the dilated conv")
            if local.strides != (1,) or (kernel is not None and
                                         (local.kernel[0], local.dilations[0]) != (kernel, dilation)):
                raise ConversionError(f"{local.where}: {pre}: stride 1 and one kernel / dilation per block expected")
            kernel, dilation = local.kernel[0], local.dilations[0]
            ctx1 = r.take(f"{pre}: first mask conv", "conv", c_in=bn_ch, ndim=1, kernel=(1,), c_out=cam_ch)
            cam_ch = ctx1.c_out
            ctx2 = r.take(f"{pre}: second mask conv", "conv", c_in=cam_ch, ndim=1, kernel=(1,), c_out=growth)
            if not any(g.nodes[j].op_type == "Sigmoid" for j in g.consumers.get(ctx2.out, [])):
                raise ConversionError(f"{ctx2.where}: {pre}: the mask conv should feed a Sigmoid")
            s = _seg_len(g, local)
            if seg is not None and s != seg:
                raise ConversionError(f"{local.where}: segment length {s} differs from the first layer's {seg}")
            seg = s
            name = f"block.{b}.layer.{count}"
            _add_bn(plan, f"{name}.bn_in", bn)
            _add_conv(plan, f"{name}.fc_in", fc)
            _add_conv(plan, f"{name}.local", local)
            _add_conv(plan, f"{name}.ctx1", ctx1)
            _add_conv(plan, f"{name}.ctx2", ctx2)
            c += growth
            count += 1
        if count == 0:
            op = r.peek(2) or r.peek()
            raise ConversionError(f"{op.where if op else g.path.name}: expected a CAM dense layer of block {b}")
        bn = r.take(f"transit {b}: BatchNorm", "bn", c_in=c)
        tr = r.take(f"transit {b}: 1x1 conv", "conv", c_in=c, ndim=1, kernel=(1,))
        _add_bn(plan, f"transit.{b}.bn", bn)
        _add_conv(plan, f"transit.{b}", tr)
        n_layers.append(count)
        kernels.append(kernel)
        dilations.append(dilation)
        transits.append(tr.c_out)
        c = tr.c_out
        # another block starts with a BatchNorm whose following conv reads c channels
        nxt, nxt_conv = r.peek(), r.peek(1)
        if not (nxt is not None and nxt.kind == "bn" and nxt_conv is not None and nxt_conv.kind == "conv"
                and nxt_conv.c_in == c):
            break

    out_bn = r.peek()
    if out_bn is not None and out_bn.kind == "bn":
        r.take("the output BatchNorm", "bn", c_in=c)
        scale, shift = out_bn.w, out_bn.b
    else:  # folded into the last transit by the exporter
        scale, shift = np.ones(c), np.zeros(c)
    plan.tensors.append((f"{PREFIX}out_bn.scale", scale))
    plan.tensors.append((f"{PREFIX}out_bn.shift", shift))
    if not any(n.op_type == "Sqrt" for n in g.nodes[ops[r.i - 1].index:]):
        raise ConversionError(f"{ops[r.i - 1].where}: no statistics pooling (Sqrt of the variance) follows")
    dense = r.take("the embedding layer (1x1 conv over mean and std)", "conv", c_in=2 * c, kernel=(1,))
    _add_conv(plan, "dense", dense)
    if r.peek() is not None:
        raise ConversionError(f"{r.peek().where}: unexpected layer after the embedding layer")
    plan.keys.update({
        "fbank.sample_rate": FBANK_SAMPLE_RATE, "fbank.n_mel": n_mel, "fbank.frame_ms": FBANK_FRAME_MS,
        "fbank.shift_ms": FBANK_SHIFT_MS, "fbank.low_hz": FBANK_LOW_HZ, "fbank.preemph": FBANK_PREEMPH,
        "block.n_layers": n_layers, "block.kernels": kernels, "block.dilations": dilations,
        "block.transit_channels": transits, "growth": growth, "bottleneck_channels": bn_ch,
        "mask_channels": cam_ch, "seg_len": seg, "embedding_length": dense.c_out,
    })
    return plan


def speaker_encoder_component(plan: SpeakerEncoderPlan | None, w: Writer, outtype: str) -> list[PlannedTensor]:
    """omni_gguf hook: the keys and tensors ([] without campplus.onnx)."""
    if plan is None:
        return []
    for k, v in plan.keys.items():
        if isinstance(v, list):
            w.add_typed_array(KEY + k, [int(x) for x in v], GGUFValueType.UINT32)
        elif isinstance(v, float):
            w.add_float32(KEY + k, v)
        else:
            w.add_uint32(KEY + k, int(v))
    Q = GGMLQuantizationType
    matrix_type = Q.F32 if outtype == "f32" else Q.F16
    return [PlannedTensor(name, "(campplus.onnx)", Q.F32 if a.ndim == 1 else matrix_type, a.shape,
                          values=a.astype(np.float32)) for name, a in plan.tensors]
