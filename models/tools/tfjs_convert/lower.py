"""Lowers the tfjs graph IR to a short list of layout-explicit primitives that both back ends (ONNX, PyTorch) map 1:1.

tfjs graphs are NHWC; ONNX and PyTorch convolve NCHW. The lowering transposes the input once and keeps every 4-D
tensor in the layout its producer wrote, transposing (once per tensor, memoised) only where an op needs the other:
convolutions and pooling read NCHW; Reshape, Softmax and the outputs read NHWC because their meaning depends on the
element order. Element-wise ops, Pad, Concat and Mean follow their input's layout, with constants and axes
re-arranged to match. Filters are re-laid out here (HWIO -> OIHW; depthwise HWCM -> (C*M)1HW) and SAME / VALID /
EXPLICIT padding becomes explicit [top, left, bottom, right] pads computed from static shapes (TensorFlow's rule:
SAME puts the odd pixel at the end).

Shapes are tracked in tfjs (NHWC) terms; None is the dynamic batch, -1 a dimension that is unknown otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BAD_MODEL, UNSUPPORTED_ATTR, UNSUPPORTED_DTYPE, UNSUPPORTED_OP, ConvertError
from .graph import Graph, Node

Shape = list  # list[int | None]
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)
NCHW_POS = (0, 2, 3, 1)  # where NHWC axis a sits in NCHW
FUSED_ACTIVATIONS = ("Relu", "Relu6", "Prelu")


@dataclass
class Prim:
    """One primitive: kind in conv, convtranspose, maxpool, avgpool, resize, pad, transpose, reshape, concat, mean,
    reducesum, gemm, add, sub, sum, mul, min, max, abs, square, rsqrt, relu, clip, prelu, sigmoid, softmax, identity.
    Inputs and output are tensor names; params are named in Lowered.params."""

    kind: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Lowered:
    input_name: str  # the NHWC graph input ("input")
    input_nchw: str  # its NCHW transpose (the first prim)
    input_shape: Shape
    prims: list[Prim]
    params: dict[str, np.ndarray]  # float32 constants by tensor name, in first-use order
    outputs: list[tuple[str, Shape]]  # (name, NHWC shape); each is the output of an identity prim
    # tfjs node name -> {"nhwc": tensor, "nchw": tensor}, whichever exist after the whole list ran.
    activations: dict[str, dict[str, str]]
    shapes: dict[str, Shape]  # tfjs node name -> NHWC shape


def conv_out_pads(size: int, k: int, stride: int, dilation: int, padding: str,
                  explicit: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one spatial axis, as TensorFlow computes them."""
    eff = (k - 1) * dilation + 1
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + eff - size, 0)
        return out, total // 2, total - total // 2
    before, after = explicit if padding == "EXPLICIT" else (0, 0)
    if padding not in ("VALID", "EXPLICIT"):
        raise ConvertError(UNSUPPORTED_ATTR, f"padding '{padding}' (supported: SAME, VALID, EXPLICIT)")
    out = (size + before + after - eff) // stride + 1
    if out < 1:
        raise ConvertError(BAD_MODEL, f"window {eff} does not fit input size {size} with pads ({before}, {after})")
    return out, before, after


def transpose_pads(out_size: int, in_size: int, k: int, stride: int, padding: str,
                   explicit: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    """(pad before, pad after, output padding) of the transposed convolution that TensorFlow's Conv2DBackpropInput
    computes along one axis: the gradient of a convolution from `out_size` (the shape input) to `in_size` (the
    data input). Its full result ((in_size - 1) * stride + k) is cropped by the forward convolution's pads; where
    that convolution left trailing pixels unread (VALID), the result is extended with zeros (ONNX output_padding)."""
    got, before, _ = conv_out_pads(out_size, k, stride, 1, padding, explicit)
    if got != in_size:
        raise ConvertError(BAD_MODEL, f"a {k}-wide {padding} convolution of stride {stride} maps {out_size} to {got}, "
                                      f"not to the data input's {in_size}")
    trailing = (in_size - 1) * stride + k - before - out_size
    return before, max(trailing, 0), max(-trailing, 0)


def broadcast(a: Shape, b: Shape, at: str) -> Shape:
    out: Shape = []
    for x, y in zip([1] * (len(b) - len(a)) + list(a), [1] * (len(a) - len(b)) + list(b)):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif x in (None, -1) or y in (None, -1):
            out.append(x if y in (None, -1, 1) else y)
        else:
            raise ConvertError(BAD_MODEL, f"node '{at}': shapes {a} and {b} do not broadcast")
    return out


class _Lowerer:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.prims: list[Prim] = []
        self.params: dict[str, np.ndarray] = {}
        self.vals: dict[str, dict[str, str]] = {}
        self.shape: dict[str, Shape] = {}
        self.used: set[str] = {"input"} | {name for name, _ in g.outputs}
        self.const_cache: dict[tuple[str, str], str] = {}
        self.consts = dict(g.consts)  # Identity of a constant adds a name here, never to the graph

    # -- names, params, layouts -------------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}__{i}", i + 1
        self.used.add(name)
        return name

    def emit(self, kind: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = self.fresh(base)
        self.prims.append(Prim(kind, inputs, out, attrs))
        return out

    def const(self, node: str, what: str, at: Node) -> np.ndarray:
        if node not in self.consts:
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{at.name}' ({at.op}): its {what} must be a constant")
        return self.consts[node]

    def param(self, node: str, layout: str, array: np.ndarray) -> str:
        key = (node, layout)
        if key not in self.const_cache:
            name = self.fresh(node if layout == "nhwc" else f"{node}__{layout}")
            self.params[name] = np.ascontiguousarray(array, dtype=np.float32)
            self.const_cache[key] = name
        return self.const_cache[key]

    def operand(self, node: str, layout: str, at: Node) -> str:
        """A data input in `layout`; constants are re-laid out (rank <= 4, NHWC-broadcast) into parameters."""
        if node in self.consts:
            arr = self.consts[node]
            if arr.dtype != np.float32:
                raise ConvertError(UNSUPPORTED_DTYPE, f"node '{at.name}' ({at.op}) reads {arr.dtype} constant '{node}'")
            if layout == "nchw" and arr.ndim > 0:
                if arr.ndim > 4:
                    raise ConvertError(UNSUPPORTED_ATTR, f"node '{at.name}': constant '{node}' has rank {arr.ndim}")
                arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape).transpose(TO_NCHW)
            return self.param(node, layout if arr.ndim else "nhwc", arr)
        return self.nchw(node) if layout == "nchw" else self.nhwc(node)

    def nhwc(self, node: str) -> str:
        v = self.vals[node]
        if "nhwc" not in v:
            v["nhwc"] = self.emit("transpose", [v["nchw"]], f"{node}__nhwc", perm=list(TO_NHWC))
        return v["nhwc"]

    def nchw(self, node: str) -> str:
        v = self.vals[node]
        if "nchw" not in v:
            if len(self.shape[node]) != 4:
                raise ConvertError(BAD_MODEL, f"'{node}' has shape {self.shape[node]}; a 4-D NHWC tensor is needed")
            v["nchw"] = self.emit("transpose", [v["nhwc"]], f"{node}__nchw", perm=list(TO_NCHW))
        return v["nchw"]

    def shape_of(self, node: str) -> Shape:
        return list(self.consts[node].shape) if node in self.consts else self.shape[node]

    def set(self, node: Node, layout: str, tensor: str, shape: Shape) -> None:
        self.vals[node.name] = {layout: tensor}
        self.shape[node.name] = shape

    # -- ops ---------------------------------------------------------------------------------------------------------
    def run(self) -> Lowered:
        g = self.g
        self.vals[g.input_node] = {"nhwc": "input"}
        self.shape[g.input_node] = list(g.input_shape)
        input_nchw = self.nchw(g.input_node)
        for node in g.nodes:
            if node.attrs.get("T", "DT_FLOAT") != "DT_FLOAT":
                raise ConvertError(UNSUPPORTED_DTYPE, f"node '{node.name}' ({node.op}) computes {node.attrs['T']}")
            handler = getattr(self, "op_" + node.op.lstrip("_"), None)
            if handler is None:
                raise ConvertError(UNSUPPORTED_OP, f"unsupported op '{node.op}' at node '{node.name}'")
            handler(node)
        outputs = []
        for name, out_node in g.outputs:
            src = self.operand(out_node, "nhwc", g.by_name[out_node])
            self.used.discard(name)
            outputs.append((self.emit("identity", [src], name), self.shape_of(out_node)))
        return Lowered("input", input_nchw, list(g.input_shape), self.prims, self.params, outputs, self.vals,
                       self.shape)

    def _window(self, node: Node, kh: int, kw: int) -> tuple[list[int], list[int], list[int], Shape]:
        """strides, dilations, pads [t, l, b, r] and the NHWC output shape (channels to be set by the caller)."""
        a = node.attrs
        if a.get("data_format", "NHWC") != "NHWC":
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}' ({node.op}): data_format "
                                                 f"{a['data_format']} (supported: NHWC)")
        strides = a.get("strides", [1, 1, 1, 1])
        dil = a.get("dilations", [1, 1, 1, 1])
        if strides[0] != 1 or strides[3] != 1 or dil[0] != 1 or dil[3] != 1:
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': strides {strides} / dilations {dil} over batch "
                                                 "or channels")
        ex = a.get("explicit_paddings") or [0] * 8
        if a.get("padding") == "EXPLICIT" and (len(ex) != 8 or any(ex[i] for i in (0, 1, 6, 7))):
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': explicit_paddings {ex}")
        n, h, w, _ = self.shape[node.inputs[0]]
        oh, t, b = conv_out_pads(h, kh, strides[1], dil[1], a.get("padding", "VALID"), (ex[2], ex[3]))
        ow, l, r = conv_out_pads(w, kw, strides[2], dil[2], a.get("padding", "VALID"), (ex[4], ex[5]))
        return [strides[1], strides[2]], [dil[1], dil[2]], [t, l, b, r], [n, oh, ow, -1]

    def _conv(self, node: Node, depthwise: bool) -> str:
        x, f = node.inputs[0], node.inputs[1]
        if len(self.shape[x]) != 4:
            raise ConvertError(BAD_MODEL, f"node '{node.name}': input shape {self.shape[x]} is not NHWC")
        w = self.const(f, "filter", node).astype(np.float32)
        kh, kw, cin, cout = w.shape
        c = self.shape[x][3]
        if depthwise:
            if cin != c:
                raise ConvertError(BAD_MODEL, f"node '{node.name}': depthwise filter {w.shape} for {c} channels")
            weight, groups, cout = w.reshape(kh, kw, cin * cout).transpose(2, 0, 1)[:, None], cin, cin * cout
        else:
            if c % cin:
                raise ConvertError(BAD_MODEL, f"node '{node.name}': filter {w.shape} for {c} channels")
            weight, groups = w.transpose(3, 2, 0, 1), c // cin
        strides, dil, pads, shape = self._window(node, kh, kw)
        shape[3] = cout
        inputs = [self.nchw(x), self.param(f, "oihw", weight)]
        return self._fused_tail(node, "conv", inputs, shape, dict(strides=strides, dilations=dil, pads=pads,
                                                                   groups=groups, kernel=[kh, kw]))

    def _fused_tail(self, node: Node, kind: str, inputs: list[str], shape: Shape, attrs: dict[str, Any]) -> str:
        """Emits `kind` plus the fused BiasAdd / activation of a _Fused* node; returns the last tensor."""
        layout = "nchw" if kind == "conv" else "nhwc"
        fused = node.attrs.get("fused_ops", []) if node.op.lstrip("_").startswith("Fused") else []
        args = list(node.inputs[2:])
        if fused and (fused[0] != "BiasAdd" or len(fused) > 2 or (len(fused) == 2 and fused[1] not in
                                                                   FUSED_ACTIVATIONS)):
            raise ConvertError(UNSUPPORTED_OP, f"unsupported fused ops {fused} in {node.op} at node '{node.name}' "
                                               f"(supported: BiasAdd, optionally followed by one of "
                                               f"{', '.join(FUSED_ACTIVATIONS)})")
        need = len(fused) if fused[1:] == ["Prelu"] else min(len(fused), 1)
        if len(args) != need or node.attrs.get("num_args", need) != need:
            raise ConvertError(BAD_MODEL, f"node '{node.name}': fused ops {fused} with {len(args)} args")
        if fused:
            bias = self.const(args[0], "bias", node)
            if bias.shape != (shape[-1],):
                raise ConvertError(BAD_MODEL, f"node '{node.name}': bias {bias.shape} for {shape[-1]} channels")
            inputs.append(self.param(args[0], "nhwc", bias))
        act = fused[1] if len(fused) == 2 else None
        out = self.emit(kind, inputs, node.name if act is None else f"{node.name}__{kind}", **attrs)
        if act == "Relu":
            out = self.emit("relu", [out], node.name)
        elif act == "Relu6":
            out = self.emit("clip", [out], node.name, min=0.0, max=6.0)
        elif act == "Prelu":
            alpha = self.operand(args[1], layout, node)
            out = self.emit("prelu", [out, alpha], node.name)
        self.set(node, layout, out, shape)
        return out

    def op_FusedConv2D(self, node: Node) -> None:
        self._conv(node, depthwise=False)

    def op_Conv2D(self, node: Node) -> None:
        self._conv(node, depthwise=False)

    def op_DepthwiseConv2dNative(self, node: Node) -> None:
        self._conv(node, depthwise=True)

    def op_FusedDepthwiseConv2dNative(self, node: Node) -> None:
        self._conv(node, depthwise=True)

    def op_MaxPool(self, node: Node) -> None:
        k = node.attrs.get("ksize", [1, 1, 1, 1])
        if k[0] != 1 or k[3] != 1:
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': ksize {k} pools over batch or channels")
        strides, _, pads, shape = self._window(node, k[1], k[2])
        shape[3] = self.shape[node.inputs[0]][3]
        out = self.emit("maxpool", [self.nchw(node.inputs[0])], node.name, kernel=[k[1], k[2]], strides=strides,
                        pads=pads)
        self.set(node, "nchw", out, shape)

    def op_AvgPool(self, node: Node) -> None:
        # TensorFlow averages over the window's pixels inside the input only (SAME pads are not counted).
        k = node.attrs.get("ksize", [1, 1, 1, 1])
        if k[0] != 1 or k[3] != 1:
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': ksize {k} pools over batch or channels")
        strides, _, pads, shape = self._window(node, k[1], k[2])
        shape[3] = self.shape[node.inputs[0]][3]
        out = self.emit("avgpool", [self.nchw(node.inputs[0])], node.name, kernel=[k[1], k[2]], strides=strides,
                        pads=pads)
        self.set(node, "nchw", out, shape)

    def op_Conv2DBackpropInput(self, node: Node) -> None:
        sizes, f, x = node.inputs
        a = node.attrs
        target = [int(d) for d in self.const(sizes, "output shape (input_sizes)", node).reshape(-1)]
        w = self.const(f, "filter", node).astype(np.float32)  # [h, w, out, in]: the forward convolution's HWIO
        src = self.shape[x]
        if len(target) != 4 or len(src) != 4 or w.ndim != 4 or w.shape[3] != src[3] or w.shape[2] != target[3]:
            raise ConvertError(BAD_MODEL, f"node '{node.name}': filter {list(w.shape)} from {src} to {target}")
        if a.get("data_format", "NHWC") != "NHWC":
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}' ({node.op}): data_format "
                                                 f"{a['data_format']} (supported: NHWC)")
        strides = a.get("strides", [1, 1, 1, 1])
        if strides[0] != 1 or strides[3] != 1 or any(d != 1 for d in a.get("dilations", [1, 1, 1, 1])):
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': strides {strides} / dilations "
                                                 f"{a.get('dilations')} (supported: spatial strides, no dilation)")
        ex = a.get("explicit_paddings") or [0] * 8
        padding = a.get("padding", "VALID")
        if padding == "EXPLICIT" and (len(ex) != 8 or any(ex[i] for i in (0, 1, 6, 7))):
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': explicit_paddings {ex}")
        kh, kw = w.shape[:2]
        try:
            t, b, oph = transpose_pads(target[1], src[1], kh, strides[1], padding, (ex[2], ex[3]))
            l, r, opw = transpose_pads(target[2], src[2], kw, strides[2], padding, (ex[4], ex[5]))
        except ConvertError as err:
            raise ConvertError(err.code, f"node '{node.name}': {err.message}") from err
        # ONNX ConvTranspose and torch conv_transpose2d take (in, out, h, w), the same transpose as Conv's OIHW.
        weight = w.transpose(3, 2, 0, 1)
        out = self.emit("convtranspose", [self.nchw(x), self.param(f, "iohw", weight)], node.name,
                        kernel=[kh, kw], strides=[strides[1], strides[2]], pads=[t, l, b, r],
                        output_padding=[oph, opw])
        self.set(node, "nchw", out, [src[0], target[1], target[2], target[3]])

    def op_ResizeBilinear(self, node: Node) -> None:
        x = node.inputs[0]
        size = [int(d) for d in self.const(node.inputs[1], "size", node).reshape(-1)]
        align, half = bool(node.attrs.get("align_corners")), bool(node.attrs.get("half_pixel_centers"))
        if len(size) != 2 or min(size) < 1 or len(self.shape[x]) != 4:
            raise ConvertError(BAD_MODEL, f"node '{node.name}': resize {self.shape[x]} to {size}")
        if align and half:  # TensorFlow refuses this pair too
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': align_corners with half_pixel_centers")
        # TensorFlow's source coordinate: align_corners: i * (in - 1) / (out - 1); half_pixel_centers:
        # (i + 0.5) * in / out - 0.5; neither (the legacy default): i * in / out; clamped to the input either way.
        mode = "align_corners" if align else "half_pixel" if half else "asymmetric"
        n, _, _, c = self.shape[x]
        out = self.emit("resize", [self.nchw(x)], node.name, size=size, mode=mode, batch=n, channels=c)
        self.set(node, "nchw", out, [n, size[0], size[1], c])

    def op_AddN(self, node: Node) -> None:
        xs = list(node.inputs)
        shape = self.shape_of(xs[0])
        for i in xs[1:]:
            shape = broadcast(shape, self.shape_of(i), node.name)
        live = [i for i in xs if i not in self.consts]
        nchw = (len(shape) == 4 and all(len(self.shape[i]) == 4 for i in live)
                and any("nchw" in self.vals[i] for i in live))
        layout = "nchw" if nchw else "nhwc"
        kind = "identity" if len(xs) == 1 else "add" if len(xs) == 2 else "sum"
        out = self.emit(kind, [self.operand(i, layout, node) for i in xs], node.name)
        self.set(node, layout, out, shape)

    def _binary(self, node: Node, kind: str) -> None:
        a, b = node.inputs[0], node.inputs[1]
        shape = broadcast(self.shape_of(a), self.shape_of(b), node.name)
        live = [i for i in (a, b) if i not in self.consts]
        nchw = (len(shape) == 4 and all(len(self.shape[i]) == 4 for i in live)
                and any("nchw" in self.vals[i] for i in live))
        layout = "nchw" if nchw else "nhwc"
        out = self.emit(kind, [self.operand(a, layout, node), self.operand(b, layout, node)], node.name)
        self.set(node, layout, out, shape)

    def op_AddV2(self, node: Node) -> None:
        self._binary(node, "add")

    def op_Add(self, node: Node) -> None:
        self._binary(node, "add")

    def op_Mul(self, node: Node) -> None:
        self._binary(node, "mul")

    def op_Sub(self, node: Node) -> None:
        self._binary(node, "sub")

    def op_Minimum(self, node: Node) -> None:
        self._binary(node, "min")

    def op_Maximum(self, node: Node) -> None:
        self._binary(node, "max")

    def op_Prelu(self, node: Node) -> None:
        self._binary(node, "prelu")

    def _unary(self, node: Node, kind: str, **attrs: Any) -> None:
        x = node.inputs[0]
        layout = "nchw" if "nchw" in self.vals[x] else "nhwc"
        self.set(node, layout, self.emit(kind, [self.vals[x][layout]], node.name, **attrs), self.shape[x])

    def op_Relu(self, node: Node) -> None:
        self._unary(node, "relu")

    def op_Relu6(self, node: Node) -> None:
        self._unary(node, "clip", min=0.0, max=6.0)

    def op_Abs(self, node: Node) -> None:
        self._unary(node, "abs")

    def op_Square(self, node: Node) -> None:
        self._unary(node, "square")

    def op_Rsqrt(self, node: Node) -> None:
        self._unary(node, "rsqrt")

    def op_Sigmoid(self, node: Node) -> None:
        self._unary(node, "sigmoid")

    def op_Identity(self, node: Node) -> None:
        x = node.inputs[0]
        if x in self.consts:
            self.consts[node.name] = self.consts[x]
            return
        self.vals[node.name] = self.vals[x]  # shared: a transpose made for one serves both names
        self.shape[node.name] = self.shape[x]

    def op_Softmax(self, node: Node) -> None:
        x = node.inputs[0]
        self.set(node, "nhwc", self.emit("softmax", [self.nhwc(x)], node.name, axis=-1), self.shape[x])

    def op_Pad(self, node: Node) -> None:
        x = node.inputs[0]
        pads = self.const(node.inputs[1], "paddings", node).astype(np.int64)
        rank = len(self.shape[x])
        if pads.shape != (rank, 2) or (pads < 0).any():
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': paddings {pads.tolist()} for rank {rank}")
        shape = [d if d in (None, -1) else d + int(p[0] + p[1]) for d, p in zip(self.shape[x], pads)]
        layout = "nchw" if "nchw" in self.vals[x] else "nhwc"
        rows = pads[list(TO_NCHW)] if layout == "nchw" else pads
        out = self.emit("pad", [self.vals[x][layout]], node.name, pads=rows[:, 0].tolist() + rows[:, 1].tolist())
        self.set(node, layout, out, shape)

    def op_Reshape(self, node: Node) -> None:
        x = node.inputs[0]
        target = [int(d) for d in self.const(node.inputs[1], "shape", node).reshape(-1)]
        if 0 in target or target.count(-1) > 1 or min(target, default=1) < -1:
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': Reshape to {target}")
        src = self.shape[x]
        known = math.prod(d for d in src if d not in (None, -1))
        shape: Shape = list(target)
        if -1 in target:
            i = target.index(-1)
            rest = math.prod(d for d in target if d != -1)
            if None in src or -1 in src:
                shape[i] = None if (i == 0 and rest == known and src.count(None) == 1 and -1 not in src) else -1
            elif known % rest:
                raise ConvertError(BAD_MODEL, f"node '{node.name}': cannot reshape {src} to {target}")
            else:
                shape[i] = known // rest
        elif None not in src and -1 not in src and known != math.prod(target):
            raise ConvertError(BAD_MODEL, f"node '{node.name}': cannot reshape {src} to {target}")
        out = self.emit("reshape", [self.nhwc(x)], node.name, shape=target)
        self.set(node, "nhwc", out, shape)

    def op_ConcatV2(self, node: Node) -> None:
        *xs, ax = node.inputs
        shapes = [self.shape_of(i) for i in xs]
        rank = len(shapes[0])
        axis = int(self.const(ax, "axis", node))
        axis = axis + rank if axis < 0 else axis
        if any(len(s) != rank for s in shapes) or not 0 <= axis < rank:
            raise ConvertError(BAD_MODEL, f"node '{node.name}': concat of {shapes} on axis {axis}")
        shape = list(shapes[0])
        shape[axis] = -1 if any(s[axis] in (None, -1) for s in shapes) else sum(s[axis] for s in shapes)
        live = [i for i in xs if i not in self.consts]
        nchw = rank == 4 and any("nchw" in self.vals[i] for i in live)
        layout = "nchw" if nchw else "nhwc"
        out = self.emit("concat", [self.operand(i, layout, node) for i in xs], node.name,
                        axis=NCHW_POS[axis] if nchw else axis)
        self.set(node, layout, out, shape)

    def _reduce(self, node: Node, kind: str) -> None:
        x = node.inputs[0]
        src = self.shape[x]
        rank = len(src)
        axes = sorted({int(a) % rank for a in self.const(node.inputs[1], "axes", node).reshape(-1)})
        keep = bool(node.attrs.get("keep_dims", False))
        shape = [1 if i in axes else d for i, d in enumerate(src)] if keep else \
            [d for i, d in enumerate(src) if i not in axes]
        kept = [NCHW_POS[i] for i in range(rank) if i not in axes] if rank == 4 else []
        # Reducing NCHW is fine when what remains is in NHWC order anyway (e.g. N, C after a global pool).
        nchw = "nchw" in self.vals[x] and (keep or kept == sorted(kept))
        if nchw:
            out = self.emit(kind, [self.vals[x]["nchw"]], node.name, axes=sorted(NCHW_POS[a] for a in axes),
                            keepdims=keep)
        else:
            out = self.emit(kind, [self.nhwc(x)], node.name, axes=axes, keepdims=keep)
        self.set(node, "nchw" if nchw and keep else "nhwc", out, shape)

    def op_Mean(self, node: Node) -> None:
        self._reduce(node, "mean")

    def op_Sum(self, node: Node) -> None:
        self._reduce(node, "reducesum")

    def op_Squeeze(self, node: Node) -> None:
        # A reshape of the NHWC tensor to its shape without the squeezed size-1 axes (all of them when none are named).
        x = node.inputs[0]
        src = self.shape[x]
        rank = len(src)
        named = node.attrs.get("squeeze_dims") or []
        dims = {int(d) % rank for d in named} or {i for i, d in enumerate(src) if d == 1}
        if any(src[d] != 1 for d in dims):
            raise ConvertError(BAD_MODEL, f"node '{node.name}': cannot squeeze axes {sorted(dims)} of {src}")
        shape = [d for i, d in enumerate(src) if i not in dims]
        unknown = [i for i, d in enumerate(shape) if d in (None, -1)]
        if len(unknown) > 1:
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': Squeeze of {src} leaves two unknown sizes")
        out = self.emit("reshape", [self.nhwc(x)], node.name, shape=[-1 if d in (None, -1) else d for d in shape])
        self.set(node, "nhwc", out, shape)

    def op_MatMul(self, node: Node) -> None:
        self.op_FusedMatMul(node)

    def op_FusedMatMul(self, node: Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        sa, sb = self.shape_of(a), self.shape_of(b)
        ta, tb = bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b"))
        if len(sa) != 2 or len(sb) != 2:
            raise ConvertError(UNSUPPORTED_ATTR, f"node '{node.name}': MatMul of shapes {sa} x {sb} (2-D only)")
        shape = [sa[1] if ta else sa[0], sb[0] if tb else sb[1]]
        inputs = [self.operand(a, "nhwc", node), self.operand(b, "nhwc", node)]
        self._fused_tail(node, "gemm", inputs, shape, dict(trans_a=ta, trans_b=tb))


def lower(graph: Graph) -> Lowered:
    """The graph as layout-explicit primitives (see the module doc); raises ConvertError for what it cannot map."""
    return _Lowerer(graph).run()
