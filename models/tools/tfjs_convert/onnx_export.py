"""The lowered graph as an ONNX model (opset 13, IR version 7): one input `input` (float32 NHWC, as the tfjs model
takes it), the tfjs outputs by name and shape, weights as float32 initializers.

Taps: intermediate activations asked for by tfjs node name (onnxruntime returns graph outputs only) become extra
outputs after the tfjs ones, in the order asked, each named `NODE:0` (TensorFlow's name for the node's tensor: no
lowered tensor and no tfjs output is called that, since output keys lose their ':0') and NHWC like the tfjs node
(4-D activations that the lowering kept in NCHW only get a Transpose; the others an Identity). Metadata `tfjs_taps`
maps each tap output to its node. The same nodes are what `TfjsModule(..., capture=[...])` returns.

Byte-deterministic: every name, node order and initializer comes from the model files in a fixed order, IR version,
opset and producer are set explicitly (never the installed onnx package's defaults), and nothing time- or
host-dependent is written, so the same sources give the same bytes (the face models' ONNX files are pinned by sha256).

PRelu with constant slopes `a` is written as Relu(x) * (1 - a) + x * a (the same numbers): onnxruntime's CPU
provider runs convolutions in a blocked layout (NCHWc) and has no blocked PRelu, so every PRelu cost two layout
reorders besides its own pass; Relu, Mul and Add stay in the blocked layout. Measured on this 2-core VM (onnxruntime-node
1.30, 1 thread): FaceMesh 2.95 -> 1.92 ms, Iris 3.76 -> 2.10 ms per run, outputs equal to 1e-6.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import BAD_ARGUMENT, UNKNOWN_NODE, ConvertError
from .graph import Graph
from .lower import TO_NHWC, Lowered, Prim, lower

OPSET = 13
IR_VERSION = 7  # the IR version of opset 13
PRODUCER = "tfjs_convert"
PRODUCER_VERSION = "1"

_SIMPLE = {"add": "Add", "sub": "Sub", "abs": "Abs", "sum": "Sum", "mul": "Mul", "min": "Min", "max": "Max",
           "relu": "Relu", "prelu": "PRelu", "sigmoid": "Sigmoid", "identity": "Identity"}


def _value_info(name: str, shape: list[Any]) -> onnx.ValueInfoProto:
    """None: the dynamic batch ("batch"); -1: a dimension left unnamed."""
    dims = ["batch" if d is None else (None if d < 0 else d) for d in shape]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


class _Builder:
    def __init__(self, params: dict[str, np.ndarray]) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.params = params

    def _prelu(self, p: Prim) -> bool:
        """PRelu with a constant slope as Relu * (1 - a) + x * a (see the module doc); False if the slope varies."""
        x, slope = p.inputs
        a = self.params.get(slope)
        if a is None:
            return False
        out = p.output
        one_minus = f"{out}__one_minus_slope"
        self.inits.append(numpy_helper.from_array((1.0 - a).astype(np.float32), one_minus))
        self.nodes.append(helper.make_node("Relu", [x], [f"{out}__relu"], name=f"{out}__relu"))
        self.nodes.append(helper.make_node("Mul", [f"{out}__relu", one_minus], [f"{out}__pos"], name=f"{out}__pos"))
        self.nodes.append(helper.make_node("Mul", [x, slope], [f"{out}__neg"], name=f"{out}__neg"))
        self.nodes.append(helper.make_node("Add", [f"{out}__pos", f"{out}__neg"], [out], name=out))
        return True

    def int64(self, name: str, values: list[int]) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def scalar(self, name: str, value: float) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def _sizes(self, p: Prim) -> str:
        """Resize's NCHW `sizes` input: a constant, or with a dynamic batch the input's N and C then (H, W)."""
        a, out = p.attrs, p.output
        if a["batch"] is not None and a["channels"] not in (None, -1):
            return self.int64(f"{out}__sizes", [a["batch"], a["channels"]] + a["size"])
        self.nodes.append(helper.make_node("Shape", [p.inputs[0]], [f"{out}__shape"], name=f"{out}__shape"))
        self.nodes.append(helper.make_node(
            "Slice", [f"{out}__shape", self.int64(f"{out}__nc_start", [0]), self.int64(f"{out}__nc_end", [2])],
            [f"{out}__nc"], name=f"{out}__nc"))
        self.nodes.append(helper.make_node("Concat", [f"{out}__nc", self.int64(f"{out}__hw", a["size"])],
                                           [f"{out}__sizes"], name=f"{out}__sizes", axis=0))
        return f"{out}__sizes"

    def add(self, p: Prim) -> None:
        a, out = p.attrs, p.output
        if p.kind == "prelu" and self._prelu(p):
            return
        if p.kind in _SIMPLE:
            node = helper.make_node(_SIMPLE[p.kind], p.inputs, [out], name=out)
        elif p.kind == "conv":
            node = helper.make_node("Conv", p.inputs, [out], name=out, kernel_shape=a["kernel"], strides=a["strides"],
                                    dilations=a["dilations"], pads=a["pads"], group=a["groups"])
        elif p.kind == "maxpool":
            node = helper.make_node("MaxPool", p.inputs, [out], name=out, kernel_shape=a["kernel"],
                                    strides=a["strides"], pads=a["pads"])
        elif p.kind == "avgpool":
            # count_include_pad=0: TensorFlow divides by the number of input pixels under the window.
            node = helper.make_node("AveragePool", p.inputs, [out], name=out, kernel_shape=a["kernel"],
                                    strides=a["strides"], pads=a["pads"], count_include_pad=0)
        elif p.kind == "convtranspose":
            node = helper.make_node("ConvTranspose", p.inputs, [out], name=out, kernel_shape=a["kernel"],
                                    strides=a["strides"], pads=a["pads"], output_padding=a["output_padding"])
        elif p.kind == "resize":
            # TF's half_pixel_centers is ONNX half_pixel (not pytorch_half_pixel, which differs for a size of 1);
            # both clamp the source coordinate to the input as TF does.
            node = helper.make_node("Resize", [p.inputs[0], "", "", self._sizes(p)], [out], name=out,
                                    mode="linear", coordinate_transformation_mode=a["mode"])
        elif p.kind == "pad":
            node = helper.make_node("Pad", [p.inputs[0], self.int64(f"{out}__pads", a["pads"])], [out], name=out,
                                    mode="constant")
        elif p.kind == "transpose":
            node = helper.make_node("Transpose", p.inputs, [out], name=out, perm=a["perm"])
        elif p.kind == "reshape":
            node = helper.make_node("Reshape", [p.inputs[0], self.int64(f"{out}__shape", a["shape"])], [out], name=out)
        elif p.kind == "concat":
            node = helper.make_node("Concat", p.inputs, [out], name=out, axis=a["axis"])
        elif p.kind == "mean":
            node = helper.make_node("ReduceMean", p.inputs, [out], name=out, axes=a["axes"],
                                    keepdims=int(a["keepdims"]))
        elif p.kind == "reducesum":  # opset 13: the axes are an input
            node = helper.make_node("ReduceSum", [p.inputs[0], self.int64(f"{out}__axes", a["axes"])], [out], name=out,
                                    keepdims=int(a["keepdims"]))
        elif p.kind == "square":
            node = helper.make_node("Mul", [p.inputs[0], p.inputs[0]], [out], name=out)
        elif p.kind == "rsqrt":
            self.nodes.append(helper.make_node("Sqrt", p.inputs, [f"{out}__sqrt"], name=f"{out}__sqrt"))
            node = helper.make_node("Reciprocal", [f"{out}__sqrt"], [out], name=out)
        elif p.kind == "gemm":
            node = helper.make_node("Gemm", p.inputs, [out], name=out, transA=int(a["trans_a"]),
                                    transB=int(a["trans_b"]))
        elif p.kind == "clip":
            lo, hi = self.scalar(f"{out}__min", a["min"]), self.scalar(f"{out}__max", a["max"])
            node = helper.make_node("Clip", [p.inputs[0], lo, hi], [out], name=out)
        elif p.kind == "softmax":
            node = helper.make_node("Softmax", p.inputs, [out], name=out, axis=a["axis"])
        else:
            raise AssertionError(f"no ONNX mapping for primitive '{p.kind}'")
        self.nodes.append(node)


def tap_output_name(node: str) -> str:
    """The ONNX output name of a tapped tfjs node (see the module doc)."""
    return f"{node}:0"


def _tap(b: _Builder, low: Lowered, node: str) -> tuple[str, list[Any]]:
    """Adds the node that exposes the activation of tfjs node `node` as an NHWC output; its (name, shape)."""
    have = low.activations.get(node)
    if have is None:
        raise ConvertError(UNKNOWN_NODE, f"cannot tap '{node}': not a computed node of the graph")
    out, shape = tap_output_name(node), low.shapes[node]
    if "nhwc" in have:
        b.nodes.append(helper.make_node("Identity", [have["nhwc"]], [out], name=out))
    else:  # a 4-D activation the lowering kept in NCHW only
        b.nodes.append(helper.make_node("Transpose", [have["nchw"]], [out], name=out, perm=list(TO_NHWC)))
    return out, shape


def lowered_to_onnx(low: Lowered, name: str, metadata: dict[str, str] | None = None,
                    taps: Sequence[str] = ()) -> onnx.ModelProto:
    """An ONNX ModelProto from lowered primitives (checked with onnx.checker), with `taps` (tfjs node names) as
    extra NHWC outputs after the tfjs ones."""
    twice = sorted({t for t in taps if list(taps).count(t) > 1})
    if twice:
        raise ConvertError(BAD_ARGUMENT, f"taps named twice: {twice}")
    b = _Builder(low.params)
    for prim in low.prims:
        b.add(prim)
    outputs = list(low.outputs) + [_tap(b, low, node) for node in taps]
    params = [numpy_helper.from_array(arr, pname) for pname, arr in low.params.items()]
    graph = helper.make_graph(b.nodes, name, [_value_info(low.input_name, low.input_shape)],
                              [_value_info(out, shape) for out, shape in outputs], params + b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name=PRODUCER, producer_version=PRODUCER_VERSION)
    for key, value in sorted((metadata or {}).items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model


def to_onnx(graph: Graph, metadata: dict[str, str] | None = None, taps: Sequence[str] = ()) -> onnx.ModelProto:
    """The tfjs graph as ONNX. Metadata `tfjs_outputs` maps each output to the tfjs node it comes from, and with
    taps, `tfjs_taps` each tap output to its node (without taps the model is byte for byte what it was before taps
    existed)."""
    meta = {"tfjs_model": graph.name, "tfjs_outputs": json.dumps(dict(graph.outputs), sort_keys=True)}
    if taps:
        meta["tfjs_taps"] = json.dumps({tap_output_name(t): t for t in taps}, sort_keys=True)
    meta.update(metadata or {})
    return lowered_to_onnx(lower(graph), graph.name, meta, taps)


def to_onnx_bytes(graph: Graph, metadata: dict[str, str] | None = None, taps: Sequence[str] = ()) -> bytes:
    """The serialised model (deterministic, see the module doc)."""
    return to_onnx(graph, metadata, taps).SerializeToString()
