"""Reads a TensorFlow.js graph model (model.json + weight files) into a small typed graph IR.

- Weights: every group of `weightsManifest` is read from its files, checked for size against the manifest (a
  truncated or padded file is refused, naming it) and decoded exactly as tfjs-core's `decodeWeights` does:
  float32/int32 raw, float16 widened, uint8/uint16 as `q * scale + min` (computed in float64 and rounded to float32,
  like JavaScript's arithmetic stored in a Float32Array; int32 rounds half up like `Math.round`).
- Nodes: attributes decoded to plain Python values, inputs reduced to producer names (`name:0` -> `name`, control
  inputs `^name` dropped), every op checked against SUPPORTED_OPS (refused by name otherwise), and the non-constant
  nodes the outputs depend on put in topological order.
- Input and outputs: one float32 Placeholder, NHWC with static height, width and channels; outputs named as the
  tfjs GraphModel names them: the signature's output keys (`userDefinedMetadata.signature` first, then `signature`,
  the order tfjs-converter uses) less a trailing ':0', else the nodes nothing consumes.
"""
from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import (BAD_MODEL, UNSUPPORTED_DTYPE, UNSUPPORTED_OP, WEIGHTS_MISSING, WEIGHTS_SIZE,
                     ConvertError)

SUPPORTED_OPS: tuple[str, ...] = (
    "Const", "Placeholder", "Identity", "_FusedConv2D", "Conv2D", "DepthwiseConv2dNative", "AddV2", "Add", "Mul",
    "Minimum", "Maximum", "Prelu", "Relu", "Sigmoid", "MaxPool", "Pad", "Reshape", "ConcatV2", "Mean",
    "_FusedMatMul", "Softmax", "Relu6", "AddN", "AvgPool", "ResizeBilinear", "Conv2DBackpropInput",
    "FusedDepthwiseConv2dNative", "Sub", "Abs", "Square", "Rsqrt", "Sum", "Squeeze", "MatMul",
)

# Bytes per stored value, and the little-endian numpy type it is read as.
_STORED: dict[str, tuple[int, str]] = {
    "float32": (4, "<f4"), "int32": (4, "<i4"), "uint8": (1, "u1"), "uint16": (2, "<u2"), "float16": (2, "<f2"),
}


@dataclass(frozen=True)
class Node:
    """One tfjs node: `inputs` are producer node names (output index 0; control inputs dropped)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """A parsed graph model: `nodes` in topological order (no Const, no Placeholder), `consts` by node name."""

    name: str
    nodes: list[Node]
    consts: dict[str, np.ndarray]
    input_node: str
    # NHWC; None: the batch dimension is dynamic (-1 in model.json).
    input_shape: tuple[int | None, int, int, int]
    # (output name, producer node name), in the order tfjs lists them.
    outputs: list[tuple[str, str]]
    # Every node by name, Const and Placeholder included (for error messages and captures).
    by_name: dict[str, Node] = field(default_factory=dict)


def decode_attr(value: dict[str, Any]) -> Any:
    """A tfjs (TensorFlow AttrValue JSON) attribute as a plain value: str, int, float, bool, dtype name, list, shape."""
    if "s" in value:
        return base64.b64decode(value["s"]).decode("utf-8")
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        return [int(d.get("size", -1)) for d in value["shape"].get("dim", [])]
    if "list" in value:
        items = value["list"]
        for key in ("i", "f", "s", "b", "type", "shape"):
            if key in items:
                return [decode_attr({key: v}) for v in items[key]]
        return []
    return None


def _spec_bytes(spec: dict[str, Any]) -> int:
    count = math.prod(int(d) for d in spec["shape"])
    stored = spec.get("quantization", {}).get("dtype", spec["dtype"])
    if stored not in _STORED:
        raise ConvertError(UNSUPPORTED_DTYPE, f"weight '{spec['name']}' is stored as {stored} "
                                              f"(supported: {', '.join(_STORED)})")
    return count * _STORED[stored][0]


def decode_weight(spec: dict[str, Any], raw: bytes) -> np.ndarray:
    """One weight from its bytes, dequantised as tfjs-core does (see the module doc)."""
    dtype = spec["dtype"]
    shape = tuple(int(d) for d in spec["shape"])
    quant = spec.get("quantization")
    if dtype not in ("float32", "int32"):
        raise ConvertError(UNSUPPORTED_DTYPE, f"weight '{spec['name']}' has dtype {dtype} (supported: float32, int32)")
    if quant is None:
        return np.frombuffer(raw, dtype=_STORED[dtype][1]).astype(dtype).reshape(shape)
    qtype = quant.get("dtype")
    values = np.frombuffer(raw, dtype=_STORED[qtype][1])
    if qtype == "float16":
        if dtype != "float32":
            raise ConvertError(UNSUPPORTED_DTYPE, f"weight '{spec['name']}': float16 quantisation of {dtype}")
        return values.astype(np.float32).reshape(shape)
    if qtype not in ("uint8", "uint16") or "scale" not in quant or "min" not in quant:
        raise ConvertError(BAD_MODEL, f"weight '{spec['name']}': quantisation {quant} needs dtype uint8/uint16/float16"
                                      " and, for uint8/uint16, scale and min")
    real = values.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
    if dtype == "int32":
        return np.floor(real + 0.5).astype(np.int32).reshape(shape)
    return real.astype(np.float32).reshape(shape)


def load_weights(model_dir: str, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """All weights of a `weightsManifest`, by name; refuses missing files and any size mismatch, naming the files."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        blobs = []
        for rel in group["paths"]:
            path = os.path.join(model_dir, rel)
            if not os.path.isfile(path):
                raise ConvertError(WEIGHTS_MISSING, f"weight file '{path}' is missing (reinstall the package: npm ci)")
            with open(path, "rb") as f:
                blobs.append(f.read())
        data = b"".join(blobs)
        need = sum(_spec_bytes(s) for s in group["weights"])
        if len(data) != need:
            names = ", ".join(f"'{os.path.join(model_dir, p)}'" for p in group["paths"])
            raise ConvertError(WEIGHTS_SIZE, f"weight file {names} holds {len(data)} bytes but the manifest needs "
                                             f"{need}: truncated or corrupted (reinstall the package: npm ci)")
        offset = 0
        for spec in group["weights"]:
            size = _spec_bytes(spec)
            out[spec["name"]] = decode_weight(spec, data[offset:offset + size])
            offset += size
    return out


def _producer(ref: str, at: str) -> str | None:
    if ref.startswith("^"):
        return None
    name, _, index = ref.partition(":")
    if index not in ("", "0"):
        raise ConvertError(BAD_MODEL, f"node '{at}' reads output {index} of '{name}'; only single-output ops are "
                                      "supported")
    return name


def _output_names(model: dict[str, Any], nodes: dict[str, Node]) -> list[tuple[str, str]]:
    signature = (model.get("userDefinedMetadata") or {}).get("signature") or model.get("signature")
    if signature and signature.get("outputs"):
        outs = []
        for key, info in signature["outputs"].items():
            name = key[:-2] if key.endswith(":0") else key
            producer = _producer(info.get("name", key), "signature")
            if producer not in nodes:
                raise ConvertError(BAD_MODEL, f"signature output '{key}' names unknown node '{producer}'")
            outs.append((name, producer))
        return outs
    consumed = {i for n in nodes.values() for i in n.inputs}
    return [(n.name, n.name) for n in nodes.values() if n.name not in consumed and n.op not in ("Const", "Placeholder")]


def _topological(nodes: dict[str, Node], outputs: list[tuple[str, str]]) -> list[Node]:
    """The non-constant nodes the outputs depend on, producers first (iterative DFS; refuses cycles)."""
    order: list[Node] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for _, root in outputs:
        stack = [(root, 0)]
        while stack:
            name, i = stack.pop()
            node = nodes[name]
            if i == 0:
                if state.get(name) == 2:
                    continue
                state[name] = 1
            if i < len(node.inputs):
                stack.append((name, i + 1))
                dep = node.inputs[i]
                if state.get(dep) == 1:
                    raise ConvertError(BAD_MODEL, f"the graph has a cycle through '{dep}'")
                if state.get(dep) is None:
                    stack.append((dep, 0))
            else:
                state[name] = 2
                if node.op not in ("Const", "Placeholder"):
                    order.append(node)
    return order


def load_graph(model_json: str) -> Graph:
    """Parses `model_json` and its weight files (see the module doc); raises ConvertError on anything it refuses."""
    try:
        with open(model_json, encoding="utf-8") as f:
            model = json.load(f)
    except (OSError, ValueError) as err:
        raise ConvertError(BAD_MODEL, f"cannot read '{model_json}': {err}") from err
    if model.get("format") not in (None, "graph-model") or "node" not in model.get("modelTopology", {}):
        raise ConvertError(BAD_MODEL, f"'{model_json}' is not a tfjs graph model (format: {model.get('format')})")

    nodes: dict[str, Node] = {}
    for raw in model["modelTopology"]["node"]:
        name, op = raw["name"], raw["op"]
        if name in nodes:
            raise ConvertError(BAD_MODEL, f"two nodes are named '{name}'")
        if op not in SUPPORTED_OPS:
            raise ConvertError(UNSUPPORTED_OP, f"unsupported op '{op}' at node '{name}' "
                                               f"(supported: {', '.join(SUPPORTED_OPS)})")
        inputs = tuple(p for p in (_producer(r, name) for r in raw.get("input", [])) if p is not None)
        attrs = {k: decode_attr(v) for k, v in raw.get("attr", {}).items()}
        nodes[name] = Node(name, op, inputs, attrs)
    for node in nodes.values():
        for dep in node.inputs:
            if dep not in nodes:
                raise ConvertError(BAD_MODEL, f"node '{node.name}' reads unknown node '{dep}'")

    weights = load_weights(os.path.dirname(os.path.abspath(model_json)), model.get("weightsManifest", []))
    consts: dict[str, np.ndarray] = {}
    for node in nodes.values():
        if node.op == "Const":
            if node.name not in weights:
                raise ConvertError(BAD_MODEL, f"Const node '{node.name}' has no weight in weightsManifest")
            consts[node.name] = weights[node.name]

    placeholders = [n for n in nodes.values() if n.op == "Placeholder"]
    if len(placeholders) != 1:
        raise ConvertError(BAD_MODEL, f"expected one Placeholder input, found {len(placeholders)}")
    inp = placeholders[0]
    shape = inp.attrs.get("shape") or []
    if inp.attrs.get("dtype", "DT_FLOAT") != "DT_FLOAT" or len(shape) != 4 or min(shape[1:]) < 1:
        raise ConvertError(BAD_MODEL, f"input '{inp.name}' must be float32 NHWC with static height, width and "
                                      f"channels (dtype {inp.attrs.get('dtype')}, shape {shape})")
    input_shape = (None if shape[0] < 0 else shape[0], shape[1], shape[2], shape[3])

    outputs = _output_names(model, nodes)
    if not outputs:
        raise ConvertError(BAD_MODEL, f"'{model_json}' has no outputs")
    name = os.path.splitext(os.path.basename(model_json))[0]
    return Graph(name, _topological(nodes, outputs), consts, inp.name, input_shape, outputs, nodes)
