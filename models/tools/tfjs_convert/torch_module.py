"""The lowered graph as a PyTorch nn.Module, for use as a frozen (or fine-tunable) network inside training losses.

    net = TfjsModule(load_graph("facemesh.json"), input_layout="nchw", capture=["StatefulPartitionedCall/..."])
    out = net(x)  # {"output_mesh": ..., "output_faceflag": ..., "output_contours": ..., captured nodes...}

- Input: NHWC like tfjs by default; input_layout="nchw" takes NCHW (no copy: the NHWC view is a permute).
  Same value range as the tfjs model.
- Outputs: a dict by the same names and shapes as the ONNX export; captured activations (tfjs node names) are added
  under their node names, 4-D ones in the input's layout.
- Weights are buffers (frozen, moved by .to()) unless trainable=True makes them parameters. Everything is
  differentiable with respect to the input (max pooling and clamps as usual).
"""
from __future__ import annotations

import functools
import operator
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import UNKNOWN_NODE, ConvertError
from .graph import Graph
from .lower import TO_NCHW, TO_NHWC, Prim, lower


def _conv(p: Prim, v: list[torch.Tensor]) -> torch.Tensor:
    t, l, b, r = p.attrs["pads"]
    x = v[0]
    if (t, l) != (b, r):
        x, t, l = F.pad(x, (l, r, t, b)), 0, 0
    bias = v[2] if len(v) > 2 else None
    return F.conv2d(x, v[1], bias, p.attrs["strides"], (t, l), p.attrs["dilations"], p.attrs["groups"])


def _maxpool(p: Prim, v: list[torch.Tensor]) -> torch.Tensor:
    t, l, b, r = p.attrs["pads"]
    x = F.pad(v[0], (l, r, t, b), value=float("-inf")) if any(p.attrs["pads"]) else v[0]
    return F.max_pool2d(x, p.attrs["kernel"], p.attrs["strides"])


def _avgpool(p: Prim, v: list[torch.Tensor]) -> torch.Tensor:
    """TensorFlow's average: over the window's pixels inside the input (padding not counted)."""
    t, l, b, r = p.attrs["pads"]
    k, s = p.attrs["kernel"], p.attrs["strides"]
    if not any(p.attrs["pads"]):
        return F.avg_pool2d(v[0], k, s)
    ones = torch.ones((1, 1) + tuple(v[0].shape[2:]), dtype=v[0].dtype, device=v[0].device)
    return F.avg_pool2d(F.pad(v[0], (l, r, t, b)), k, s) / F.avg_pool2d(F.pad(ones, (l, r, t, b)), k, s)


def _convtranspose(p: Prim, v: list[torch.Tensor]) -> torch.Tensor:
    """The full transposed convolution, cropped by the pads and extended with zeros by the output padding."""
    t, l, b, r = p.attrs["pads"]
    oph, opw = p.attrs["output_padding"]
    full = F.conv_transpose2d(v[0], v[1], None, p.attrs["strides"])
    return F.pad(full, (-l, opw - r, -t, oph - b))  # negative pads crop


def resize_taps(n_in: int, n_out: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TensorFlow's bilinear taps along one axis (lower index, upper index, upper weight), computed in float32 as
    TensorFlow's CPU kernel computes them."""
    if mode == "align_corners" and n_out > 1:
        scale = np.float32(n_in - 1) / np.float32(n_out - 1)
    else:
        scale = np.float32(n_in) / np.float32(n_out)
    i = np.arange(n_out, dtype=np.float32)
    src = (i + np.float32(0.5)) * scale - np.float32(0.5) if mode == "half_pixel" else i * scale
    floor = np.floor(src)
    lo = np.clip(floor, 0, n_in - 1).astype(np.int64)
    hi = np.clip(np.ceil(src), 0, n_in - 1).astype(np.int64)
    return lo, hi, (src - floor).astype(np.float32)


def _resize(p: Prim, v: list[torch.Tensor]) -> torch.Tensor:
    x = v[0]
    for dim, n_out in ((3, p.attrs["size"][1]), (2, p.attrs["size"][0])):  # width first, as TensorFlow lerps
        lo, hi, w = (torch.from_numpy(a).to(x.device) for a in resize_taps(x.shape[dim], n_out, p.attrs["mode"]))
        shape = [1, 1, 1, 1]
        shape[dim] = n_out
        a, b = x.index_select(dim, lo), x.index_select(dim, hi)
        x = a + (b - a) * w.to(x.dtype).reshape(shape)
    return x


def _pad(p: Prim, v: list[torch.Tensor]) -> torch.Tensor:
    pads = p.attrs["pads"]
    rank = len(pads) // 2
    flat: list[int] = []
    for axis in reversed(range(rank)):  # F.pad lists the last axis first
        flat += [pads[axis], pads[axis + rank]]
    return F.pad(v[0], flat)


def _gemm(p: Prim, v: list[torch.Tensor]) -> torch.Tensor:
    a = v[0].t() if p.attrs["trans_a"] else v[0]
    b = v[1].t() if p.attrs["trans_b"] else v[1]
    return a @ b + v[2] if len(v) > 2 else a @ b


_OPS = {
    "conv": _conv,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "convtranspose": _convtranspose,
    "resize": _resize,
    "sum": lambda p, v: functools.reduce(operator.add, v),
    "pad": _pad,
    "gemm": _gemm,
    "transpose": lambda p, v: v[0].permute(*p.attrs["perm"]),
    "reshape": lambda p, v: v[0].reshape(p.attrs["shape"]),
    "concat": lambda p, v: torch.cat(v, dim=p.attrs["axis"]),
    "mean": lambda p, v: v[0].mean(dim=p.attrs["axes"], keepdim=p.attrs["keepdims"]),
    "reducesum": lambda p, v: v[0].sum(dim=p.attrs["axes"], keepdim=p.attrs["keepdims"]),
    "add": lambda p, v: v[0] + v[1],
    "sub": lambda p, v: v[0] - v[1],
    "abs": lambda p, v: v[0].abs(),
    "square": lambda p, v: v[0] * v[0],
    "rsqrt": lambda p, v: torch.rsqrt(v[0]),
    "mul": lambda p, v: v[0] * v[1],
    "min": lambda p, v: torch.minimum(v[0], v[1]),
    "max": lambda p, v: torch.maximum(v[0], v[1]),
    "relu": lambda p, v: F.relu(v[0]),
    "clip": lambda p, v: v[0].clamp(p.attrs["min"], p.attrs["max"]),
    "prelu": lambda p, v: torch.where(v[0] < 0, v[0] * v[1], v[0]),
    "sigmoid": lambda p, v: torch.sigmoid(v[0]),
    "softmax": lambda p, v: torch.softmax(v[0], dim=p.attrs["axis"]),
    "identity": lambda p, v: v[0],
}


class TfjsModule(nn.Module):
    """A tfjs graph model as a module (see the module doc)."""

    def __init__(self, graph: Graph, input_layout: str = "nhwc", capture: Sequence[str] = (),
                 trainable: bool = False) -> None:
        super().__init__()
        if input_layout not in ("nhwc", "nchw"):
            raise TypeError(f"input_layout must be 'nhwc' or 'nchw', not {input_layout!r}")
        low = lower(graph)
        missing = [c for c in capture if c not in low.activations]
        if missing:
            raise ConvertError(UNKNOWN_NODE, f"cannot capture {missing}: not computed nodes of '{graph.name}'")
        self.input_layout = input_layout
        self._low = low
        self._capture = list(capture)
        self._slots: dict[str, str] = {}  # tensor name -> attribute name
        for i, (name, arr) in enumerate(low.params.items()):
            slot = f"w{i}"
            tensor = torch.from_numpy(arr.copy())
            if trainable:
                self.register_parameter(slot, nn.Parameter(tensor))
            else:
                self.register_buffer(slot, tensor)
            self._slots[name] = slot

    @property
    def output_names(self) -> list[str]:
        return [name for name, _ in self._low.outputs]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self._low
        values: dict[str, torch.Tensor] = {}
        if self.input_layout == "nchw":
            values[low.input_nchw], values[low.input_name] = x, x.permute(*TO_NHWC)
        else:
            values[low.input_name] = x
        for p in low.prims:
            if p.output in values:
                continue  # the input's NCHW transpose when given NCHW
            args = [values[i] if i in values else getattr(self, self._slots[i]) for i in p.inputs]
            values[p.output] = _OPS[p.kind](p, args)
        out = {name: values[name] for name, _ in low.outputs}
        for node in self._capture:
            out[node] = self._activation(node, values)
        return out

    def _activation(self, node: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
        have = self._low.activations[node]
        want = self.input_layout if len(self._low.shapes[node]) == 4 else "nhwc"
        if want in have:
            return values[have[want]]
        other = values[have["nchw" if want == "nhwc" else "nhwc"]]
        return other.permute(*(TO_NHWC if want == "nhwc" else TO_NCHW))
