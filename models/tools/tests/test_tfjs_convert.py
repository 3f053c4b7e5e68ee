"""Tests of tfjs_convert's pure parts: weight decoding, padding maths, refusals, and the NCHW lowering of every op
against an independent NHWC reference written here in plain numpy (loops, no shared code with the converter).

Run from models/tools: /usr/bin/python3 -m pytest -q tests (tests/convert/convert.test.ts runs it too).
"""
from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfjs_convert.errors import ConvertError  # noqa: E402
from tfjs_convert.graph import decode_weight, load_graph, load_weights  # noqa: E402
from tfjs_convert.lower import conv_out_pads  # noqa: E402
from tfjs_convert.onnx_export import to_onnx_bytes  # noqa: E402

torch = pytest.importorskip("torch")
from tfjs_convert.torch_module import TfjsModule  # noqa: E402


# -- weights ----------------------------------------------------------------------------------------------------------
def test_uint8_dequantises_like_tfjs() -> None:
    q = np.array([0, 1, 128, 255], dtype=np.uint8)
    spec = {"name": "w", "dtype": "float32", "shape": [2, 2],
            "quantization": {"dtype": "uint8", "scale": 0.0123, "min": -1.5}}
    got = decode_weight(spec, q.tobytes())
    # JavaScript: v * scale + min in double, stored into a Float32Array.
    want = np.array([float(v) * 0.0123 + -1.5 for v in q], dtype=np.float64).astype(np.float32).reshape(2, 2)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_uint16_int32_rounds_half_up_like_math_round() -> None:
    q = np.array([0, 1, 2, 3], dtype="<u2")
    spec = {"name": "s", "dtype": "int32", "shape": [4], "quantization": {"dtype": "uint16", "scale": 0.5, "min": -1}}
    assert decode_weight(spec, q.tobytes()).tolist() == [-1, 0, 0, 1]  # -1, -0.5 -> 0, 0, 0.5 -> 1


def test_float16_widens_exactly() -> None:
    h = np.array([1.5, -2.0, 65504.0, 6e-8, 0.0], dtype="<f2")
    spec = {"name": "h", "dtype": "float32", "shape": [5], "quantization": {"dtype": "float16"}}
    assert np.array_equal(decode_weight(spec, h.tobytes()), h.astype(np.float32))


def test_weight_size_mismatch_names_the_file(tmp_path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\0" * 15)
    manifest = [{"paths": ["w.bin"], "weights": [{"name": "w", "dtype": "float32", "shape": [4]}]}]
    with pytest.raises(ConvertError) as err:
        load_weights(str(tmp_path), manifest)
    assert err.value.code == "WEIGHTS_SIZE" and "w.bin" in err.value.message and "15 bytes" in err.value.message
    with pytest.raises(ConvertError) as err:
        load_weights(str(tmp_path), [{"paths": ["gone.bin"], "weights": []}])
    assert err.value.code == "WEIGHTS_MISSING"


# -- padding ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,k,s,d,padding,explicit,want", [
    (192, 3, 2, 1, "SAME", (0, 0), (96, 0, 1)),  # the odd pixel goes at the end
    (5, 3, 1, 1, "SAME", (0, 0), (5, 1, 1)),
    (4, 2, 2, 1, "SAME", (0, 0), (2, 0, 0)),
    (7, 1, 2, 1, "SAME", (0, 0), (4, 0, 0)),
    (10, 3, 1, 2, "SAME", (0, 0), (10, 2, 2)),  # dilation: effective window 5
    (6, 4, 1, 1, "SAME", (0, 0), (6, 1, 2)),
    (192, 3, 3, 1, "VALID", (0, 0), (64, 0, 0)),
    (8, 3, 2, 1, "EXPLICIT", (1, 2), (5, 1, 2)),
])
def test_conv_out_pads(size, k, s, d, padding, explicit, want) -> None:
    assert conv_out_pads(size, k, s, d, padding, explicit) == want


# -- synthetic models -------------------------------------------------------------------------------------------------
def _s(v: str) -> dict:
    return {"s": base64.b64encode(v.encode()).decode()}


def _ints(v) -> dict:
    return {"list": {"i": [str(i) for i in v]}}


class _Model:
    """Writes a tfjs graph model (json + one .bin) node by node; weights optionally uint8-quantised."""

    def __init__(self, shape) -> None:
        self.nodes = [{"name": "x", "op": "Placeholder", "attr": {
            "dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": [{"size": str(d)} for d in shape]}}}}]
        self.weights: list[dict] = []
        self.blob = b""
        self.values: dict[str, np.ndarray] = {}

    def const(self, name: str, value, quantise: bool = False) -> str:
        arr = np.asarray(value)
        spec: dict[str, Any] = {"name": name, "shape": list(arr.shape),
                                "dtype": "int32" if arr.dtype.kind == "i" else "float32"}
        if quantise:
            lo, hi = float(arr.min()), float(arr.max())
            scale = (hi - lo) / 255
            q = np.round((arr - lo) / scale).astype(np.uint8)
            spec["quantization"] = {"dtype": "uint8", "scale": scale, "min": lo}
            self.blob += q.tobytes()
            arr = (q.astype(np.float64) * scale + lo).astype(np.float32)
        else:
            arr = arr.astype(np.int32 if spec["dtype"] == "int32" else np.float32)
            self.blob += arr.astype("<i4" if spec["dtype"] == "int32" else "<f4").tobytes()
        self.weights.append(spec)
        self.values[name] = arr
        self.nodes.append({"name": name, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}})
        return name

    def op(self, name: str, op: str, inputs, **attr) -> str:
        self.nodes.append({"name": name, "op": op, "input": list(inputs), "attr": attr})
        return name

    def write(self, folder, outputs: dict[str, str]) -> str:
        sig = {"outputs": {k: {"name": f"{v}:0"} for k, v in outputs.items()}}
        model = {"format": "graph-model", "signature": sig, "modelTopology": {"node": self.nodes},
                 "weightsManifest": [{"paths": ["m.bin"], "weights": self.weights}]}
        (folder / "m.bin").write_bytes(self.blob)
        (folder / "m.json").write_text(json.dumps(model))
        return str(folder / "m.json")


def _conv_ref(x, w, stride, pads, dil=(1, 1), depthwise=False):
    """Plain NHWC convolution: x [1,H,W,C], w HWIO (depthwise: HWCM), pads (top, left, bottom, right)."""
    t, l, b, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    kh, kw = w.shape[:2]
    oh = (xp.shape[1] - (kh - 1) * dil[0] - 1) // stride[0] + 1
    ow = (xp.shape[2] - (kw - 1) * dil[1] - 1) // stride[1] + 1
    c = x.shape[3]
    groups = 1 if depthwise else c // w.shape[2]
    cout = c * w.shape[3] if depthwise else w.shape[3]
    out = np.zeros((1, oh, ow, cout), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[0, i * stride[0]:i * stride[0] + (kh - 1) * dil[0] + 1:dil[0],
                       j * stride[1]:j * stride[1] + (kw - 1) * dil[1] + 1:dil[1]]
            if depthwise:
                out[0, i, j] = np.einsum("hwc,hwcm->cm", patch, w).reshape(-1)
            else:
                per = cout // groups
                for g in range(groups):
                    cin = w.shape[2]
                    out[0, i, j, g * per:(g + 1) * per] = np.einsum(
                        "hwc,hwco->o", patch[:, :, g * cin:(g + 1) * cin], w[:, :, :, g * per:(g + 1) * per])
    return out


def _maxpool_ref(x, k, pads):
    t, l, b, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=-np.inf)
    oh, ow = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    return np.stack([np.stack([xp[0, i:i + k, j:j + k].max(axis=(0, 1)) for j in range(ow)]) for i in range(oh)])[None]


def _every_op(tmp_path):
    """A model using every supported op, with attribute values the face models do not use; and its reference."""
    rng = np.random.default_rng(7)
    m = _Model([1, 7, 6, 3])
    w1 = m.const("w1", rng.normal(size=(3, 3, 3, 4)), quantise=True)
    b1 = m.const("b1", rng.normal(size=4))
    m.op("c1", "_FusedConv2D", ["x", w1, b1], strides=_ints([1, 2, 2, 1]), padding=_s("SAME"),
         dilations=_ints([1, 1, 1, 1]), data_format=_s("NHWC"), fused_ops={"list": {"s": [_s("BiasAdd")["s"],
                                                                                            _s("Relu6")["s"]]}},
         num_args={"i": "1"})
    wd = m.const("wd", rng.normal(size=(3, 3, 4, 2)))
    m.op("d1", "DepthwiseConv2dNative", ["c1", wd], strides=_ints([1, 1, 1, 1]), padding=_s("SAME"),
         dilations=_ints([1, 2, 2, 1]))
    al = m.const("al", rng.uniform(0.1, 0.3, size=(1, 1, 8)))
    m.op("p1", "Prelu", ["d1", al])
    pd = m.const("pd", np.array([[0, 0], [1, 0], [0, 1], [0, 0]], np.int32))
    m.op("pad", "Pad", ["p1", pd])
    m.op("mp", "MaxPool", ["pad"], ksize=_ints([1, 2, 2, 1]), strides=_ints([1, 1, 1, 1]), padding=_s("SAME"))
    w2 = m.const("w2", rng.normal(size=(1, 2, 4, 6)))
    m.op("c2", "Conv2D", ["mp", w2], strides=_ints([1, 1, 2, 1]), padding=_s("EXPLICIT"),
         explicit_paddings=_ints([0, 0, 1, 1, 0, 2, 0, 0]))
    k3 = m.const("k3", rng.normal(size=(1, 1, 6)))
    m.op("a", "AddV2", ["c2", k3])
    sc = m.const("sc", np.float32(1.7))
    m.op("mu", "Mul", ["a", sc])
    six = m.const("six", np.float32(0.5))
    m.op("mn", "Minimum", ["mu", six])
    m.op("mx", "Maximum", ["mn", "c2"])
    m.op("ad", "Add", ["mx", "a"])
    m.op("re", "Relu", ["ad"])
    ax = m.const("ax", np.int32(2))
    m.op("cat", "ConcatV2", ["re", "c2", ax], N={"i": "2"})
    mean_axes = m.const("mean_axes", np.array([1, 2], np.int32))
    m.op("mean", "Mean", ["cat", mean_axes], keep_dims={"b": False})
    mean_h = m.const("mean_h_axes", np.array([1], np.int32))
    m.op("mean_h", "Mean", ["cat", mean_h], keep_dims={"b": True})
    wm = m.const("wm", rng.normal(size=(6, 5)))
    bm = m.const("bm", rng.normal(size=5))
    m.op("fm", "_FusedMatMul", ["mean", wm, bm], transpose_a={"b": False}, transpose_b={"b": False},
         fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}}, num_args={"i": "1"})
    wt = m.const("wt", rng.normal(size=(4, 6)))
    bt = m.const("bt", rng.normal(size=4))
    at = m.const("at", rng.uniform(0.1, 0.3, size=4))
    m.op("ft", "_FusedMatMul", ["mean", wt, bt, at], transpose_a={"b": False}, transpose_b={"b": True},
         fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Prelu")["s"]]}}, num_args={"i": "2"})
    m.op("sm", "Softmax", ["fm"])
    m.op("sg", "Sigmoid", ["ft"])
    shp = m.const("shp", np.array([1, -1], np.int32))
    m.op("flat", "Reshape", ["mean_h", shp])
    m.op("Identity", "Identity", ["sm"])
    path = m.write(tmp_path, {"probs": "Identity", "gate:0": "sg", "flat": "flat", "cat": "cat"})

    v = m.values
    x = rng.uniform(-1, 1, size=(1, 7, 6, 3)).astype(np.float32)
    c1 = np.clip(_conv_ref(x, v["w1"], (2, 2), (1, 0, 1, 1)) + v["b1"], 0, 6)  # H 7 -> 4: pads 1, 1; W 6 -> 3: 0, 1
    d1 = _conv_ref(c1, v["wd"], (1, 1), (2, 2, 2, 2), (2, 2), depthwise=True)
    p1 = np.where(d1 < 0, d1 * v["al"], d1)
    pad = np.pad(p1, ((0, 0), (1, 0), (0, 1), (0, 0)))
    mp = _maxpool_ref(pad, 2, (0, 0, 1, 1))
    c2 = _conv_ref(mp, v["w2"], (1, 2), (1, 0, 1, 2))
    a = c2 + v["k3"]
    ad = np.maximum(np.minimum(a * v["sc"], v["six"]), c2) + a
    cat = np.concatenate([np.maximum(ad, 0), c2], axis=2)
    mean = cat.mean(axis=(1, 2))
    fm = np.maximum(mean @ v["wm"] + v["bm"], 0)
    e = np.exp(fm - fm.max())
    ft = mean @ v["wt"].T + v["bt"]
    ft = np.where(ft < 0, ft * v["at"], ft)
    ref = {"probs": e / e.sum(), "gate": 1 / (1 + np.exp(-ft)), "flat": cat.mean(axis=1, keepdims=True).reshape(1, -1),
           "cat": cat}
    return path, x, ref


def test_every_op_matches_the_nhwc_reference(tmp_path) -> None:
    path, x, ref = _every_op(tmp_path)
    graph = load_graph(path)
    assert [name for name, _ in graph.outputs] == ["probs", "gate", "flat", "cat"]
    net = TfjsModule(graph, capture=["c1", "mean_h"])
    with torch.no_grad():
        out = net(torch.from_numpy(x))
    for name, want in ref.items():
        assert out[name].shape == want.shape, name
        assert np.abs(out[name].numpy() - want).max() < 1e-4, name
    assert tuple(out["c1"].shape) == (1, 4, 3, 4)  # captured in the input's layout (NHWC)

    nchw = TfjsModule(graph, input_layout="nchw", capture=["c1"])
    with torch.no_grad():
        out2 = nchw(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    assert np.abs(out2["cat"].numpy() - ref["cat"]).max() < 1e-4
    assert np.abs(out2["c1"].permute(0, 2, 3, 1).numpy() - out["c1"].numpy()).max() < 1e-5


def test_onnx_export_is_checked_and_byte_deterministic(tmp_path) -> None:
    path, _, _ = _every_op(tmp_path)
    a = to_onnx_bytes(load_graph(path))
    b = to_onnx_bytes(load_graph(path))
    assert a == b
    import onnx
    model = onnx.load_from_string(a)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["probs", "gate", "flat", "cat"]
    assert model.opset_import[0].version == 13


def test_refusals(tmp_path) -> None:
    m = _Model([1, 4, 4, 3])
    w = m.const("w", np.ones((1, 1, 3, 2)))
    m.op("c", "Conv2D", ["x", w], strides=_ints([1, 1, 1, 1]), padding=_s("SAME"), data_format=_s("NCHW"))
    with pytest.raises(ConvertError) as err:
        to_onnx_bytes(load_graph(m.write(tmp_path, {"y": "c"})))
    assert err.value.code == "UNSUPPORTED_ATTR" and "NCHW" in err.value.message

    m = _Model([1, 4, 4, 3])
    w = m.const("w", np.ones((1, 1, 3, 2)))
    m.op("c", "_FusedConv2D", ["x", w], strides=_ints([1, 1, 1, 1]), padding=_s("SAME"),
         fused_ops={"list": {"s": [_s("FusedBatchNorm")["s"]]}}, num_args={"i": "4"})
    with pytest.raises(ConvertError) as err:
        to_onnx_bytes(load_graph(m.write(tmp_path, {"y": "c"})))
    assert err.value.code == "UNSUPPORTED_OP" and "FusedBatchNorm" in err.value.message and "'c'" in err.value.message

    m = _Model([1, 4, 4, 3])
    m.op("t", "Tanh", ["x"])
    with pytest.raises(ConvertError) as err:
        load_graph(m.write(tmp_path, {"y": "t"}))
    assert err.value.code == "UNSUPPORTED_OP" and err.value.message.startswith("unsupported op 'Tanh' at node 't'")


# -- the selfie segmentation's ops: ResizeBilinear, AvgPool, Conv2DBackpropInput, Relu6, AddN --------------------------
def _resize_ref(x, oh, ow, mode):
    """TensorFlow's bilinear resize, one output pixel at a time (mode: align_corners, half_pixel or legacy)."""
    def taps(n_in, n_out):
        scale = (n_in - 1) / (n_out - 1) if mode == "align_corners" and n_out > 1 else n_in / n_out
        out = []
        for i in range(n_out):
            s = (i + 0.5) * scale - 0.5 if mode == "half_pixel" else i * scale
            f = np.floor(s)
            out.append((int(min(max(f, 0), n_in - 1)), int(min(max(np.ceil(s), 0), n_in - 1)), s - f))
        return out
    y = np.zeros((1, oh, ow, x.shape[3]))
    for i, (t, b, fy) in enumerate(taps(x.shape[1], oh)):
        for j, (l, r, fx) in enumerate(taps(x.shape[2], ow)):
            top = x[0, t, l] + (x[0, t, r] - x[0, t, l]) * fx
            bottom = x[0, b, l] + (x[0, b, r] - x[0, b, l]) * fx
            y[0, i, j] = top + (bottom - top) * fy
    return y


def _avgpool_ref(x, k, s, same):
    """Average over the window's pixels inside the input; SAME pads as TensorFlow places them."""
    h, w = x.shape[1:3]
    if same:
        oh, ow = -(-h // s), -(-w // s)
        t, l = max((oh - 1) * s + k - h, 0) // 2, max((ow - 1) * s + k - w, 0) // 2
    else:
        oh, ow, t, l = (h - k) // s + 1, (w - k) // s + 1, 0, 0
    y = np.zeros((1, oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - t, j * s - l
            y[0, i, j] = x[0, max(r0, 0):r0 + k, max(c0, 0):c0 + k].mean(axis=(0, 1))
    return y


def _conv_transpose_ref(x, w, s, out_hw, same):
    """The gradient of a stride-s convolution from out_hw to x's size: every input pixel scatters w [h, w, out, in]
    times itself into the full result, which the forward convolution's pads then crop (zeros where it is short)."""
    kh, kw, cout, _ = w.shape
    h, wd = x.shape[1:3]
    full = np.zeros(((h - 1) * s + kh, (wd - 1) * s + kw, cout))
    for i in range(h):
        for j in range(wd):
            full[i * s:i * s + kh, j * s:j * s + kw] += np.einsum("c,hwoc->hwo", x[0, i, j], w)
    t = max((h - 1) * s + kh - out_hw[0], 0) // 2 if same else 0
    l = max((wd - 1) * s + kw - out_hw[1], 0) // 2 if same else 0
    out = np.zeros((1, out_hw[0], out_hw[1], cout))
    part = full[t:t + out_hw[0], l:l + out_hw[1]]
    out[0, :part.shape[0], :part.shape[1]] = part
    return out


def _selfie_ops(tmp_path):
    """Every attribute value of the new ops the selfie model does not use (and those it does), and a reference."""
    rng = np.random.default_rng(11)
    m = _Model([1, 5, 7, 3])
    ref = {}
    x = rng.uniform(-4, 8, size=(1, 5, 7, 3)).astype(np.float32)
    m.op("r6", "Relu6", ["x"])
    r6 = np.clip(x, 0, 6)
    outputs = {}
    for mode, align, half in (("align_corners", True, False), ("half_pixel", False, True), ("legacy", False, False)):
        for oh, ow in ((8, 3), (1, 12)):
            size = m.const(f"size_{mode}_{oh}", np.array([oh, ow], np.int32))
            name = f"rz_{mode}_{oh}"
            m.op(name, "ResizeBilinear", ["r6", size], align_corners={"b": align}, half_pixel_centers={"b": half})
            outputs[name], ref[name] = name, _resize_ref(r6, oh, ow, mode)
    for k, s, pad in ((3, 2, "SAME"), (2, 1, "SAME"), (3, 2, "VALID"), (4, 3, "SAME")):
        name = f"ap_{k}_{s}_{pad}"
        m.op(name, "AvgPool", ["x"], ksize=_ints([1, k, k, 1]), strides=_ints([1, s, s, 1]), padding=_s(pad))
        outputs[name], ref[name] = name, _avgpool_ref(x.astype(np.float64), k, s, pad == "SAME")
    # out_hw, kernel, stride, padding: SAME with odd and even sizes, VALID with a trailing pixel left unread.
    for out_hw, k, s, pad in (((9, 13), 3, 2, "SAME"), ((10, 14), 2, 2, "SAME"), ((11, 16), 3, 2, "VALID"),
                              ((5, 7), 3, 1, "SAME")):
        w = rng.normal(size=(k, k, 2, 3))
        wn = m.const(f"wt_{out_hw[0]}", w)
        sizes = m.const(f"sizes_{out_hw[0]}", np.array([1, *out_hw, 2], np.int32))
        name = f"ct_{out_hw[0]}"
        m.op(name, "Conv2DBackpropInput", [sizes, wn, "x"], strides=_ints([1, s, s, 1]), padding=_s(pad),
             dilations=_ints([1, 1, 1, 1]), data_format=_s("NHWC"))
        outputs[name], ref[name] = name, _conv_transpose_ref(x.astype(np.float64), m.values[wn], s, out_hw,
                                                            pad == "SAME")
    c = m.const("c", rng.normal(size=3))
    m.op("sum3", "AddN", ["x", "r6", c], N={"i": "3"})
    m.op("sum2", "AddN", ["ap_3_2_SAME", "ap_3_2_SAME"], N={"i": "2"})
    outputs.update(sum3="sum3", sum2="sum2")
    ref["sum3"], ref["sum2"] = x + r6 + m.values["c"], 2 * ref["ap_3_2_SAME"]
    return m.write(tmp_path, outputs), x, ref


def test_selfie_ops_match_the_nhwc_reference(tmp_path) -> None:
    path, x, ref = _selfie_ops(tmp_path)
    graph = load_graph(path)
    for layout in ("nhwc", "nchw"):
        net = TfjsModule(graph, input_layout=layout)
        inp = torch.from_numpy(x)
        with torch.no_grad():
            out = net(inp if layout == "nhwc" else inp.permute(0, 3, 1, 2).contiguous())
        for name, want in ref.items():
            assert tuple(out[name].shape) == want.shape, name
            assert np.abs(out[name].numpy() - want).max() < 1e-4, name


def test_selfie_ops_onnx_attributes(tmp_path) -> None:
    import onnx
    path, _, _ = _selfie_ops(tmp_path)
    model = onnx.load_from_string(to_onnx_bytes(load_graph(path)))
    # Nodes by their output; an output's own node is an Identity of the op's (through its transpose to NHWC).
    by_out = {n.name: n for n in model.graph.node}
    nodes = {}
    for name, n in by_out.items():
        while n.op_type in ("Identity", "Transpose") and n.input[0] in by_out:
            n = by_out[n.input[0]]
        nodes[name] = n
    attrs = {name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for name, n in nodes.items()}
    modes = {"align_corners": b"align_corners", "half_pixel": b"half_pixel", "legacy": b"asymmetric"}
    for mode, onnx_mode in modes.items():
        assert nodes[f"rz_{mode}_8"].op_type == "Resize"
        assert attrs[f"rz_{mode}_8"]["coordinate_transformation_mode"] == onnx_mode
        assert attrs[f"rz_{mode}_8"]["mode"] == b"linear"
    assert attrs["ap_3_2_SAME"]["count_include_pad"] == 0 and list(attrs["ap_3_2_SAME"]["pads"]) == [1, 1, 1, 1]
    assert list(attrs["ap_4_3_SAME"]["pads"]) == [1, 1, 1, 2]  # [t, l, b, r]: 5 -> 2 (total 2), 7 -> 3 (total 3)
    # 5 -> 9, k 3, s 2, SAME: full 11, forward pads (1, 1); VALID 5 -> 11: full 11, nothing cropped.
    assert list(attrs["ct_9"]["pads"]) == [1, 1, 1, 1] and list(attrs["ct_9"]["output_padding"]) == [0, 0]
    ct11 = attrs["ct_11"]
    assert list(ct11["pads"]) == [0, 0, 0, 0] and list(ct11["output_padding"]) == [0, 1]  # 7 -> 16: one unread
    assert nodes["sum3"].op_type == "Sum" and nodes["sum2"].op_type == "Add"
    assert nodes["r6"].op_type == "Clip"


def test_conv2d_backprop_input_refuses_an_inconsistent_shape(tmp_path) -> None:
    m = _Model([1, 4, 4, 3])
    w = m.const("w", np.ones((3, 3, 2, 3)))
    sizes = m.const("sizes", np.array([1, 12, 8, 2], np.int32))  # a stride-2 SAME conv maps 12 to 6, not 4
    m.op("ct", "Conv2DBackpropInput", [sizes, w, "x"], strides=_ints([1, 2, 2, 1]), padding=_s("SAME"))
    with pytest.raises(ConvertError) as err:
        to_onnx_bytes(load_graph(m.write(tmp_path, {"y": "ct"})))
    assert err.value.code == "BAD_MODEL" and "'ct'" in err.value.message


# -- embedding-head ops: FusedDepthwiseConv2dNative, Sub, Abs, Square, Rsqrt, Sum, Squeeze; MatMul -------------------
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# Runs an ONNX file in onnxruntime-node (Python's onnxruntime is not a Debian package; npm ci installs the Node one):
# the request on stdin, every output as {dims, data} on stdout.
_ORT_NODE = """
const ort = require('onnxruntime-node');
const fs = require('fs');
const req = JSON.parse(fs.readFileSync(0, 'utf8'));
const raw = fs.readFileSync(req.input);
const data = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
(async () => {
  const out = {};
  for (const level of ['disabled', 'all']) {
    const s = await ort.InferenceSession.create(req.model, { graphOptimizationLevel: level, intraOpNumThreads: 1 });
    const got = await s.run({ input: new ort.Tensor('float32', data, req.shape) });
    for (const [k, t] of Object.entries(got)) out[k + '@' + level] = { dims: t.dims, data: Array.from(t.data) };
    await s.release();
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _run_onnx(data: bytes, x: np.ndarray, folder) -> dict[str, np.ndarray]:
    """The ONNX model's outputs by name, once with onnxruntime's graph optimisation off and once fully on (each
    output name gets an '@disabled' and an '@all' entry)."""
    import shutil
    import subprocess
    if shutil.which("node") is None or not os.path.isdir(os.path.join(REPO, "node_modules", "onnxruntime-node")):
        pytest.skip("node or onnxruntime-node (npm ci) not found: the ONNX side of this test is skipped")
    (folder / "m.onnx").write_bytes(data)
    (folder / "x.bin").write_bytes(np.ascontiguousarray(x, "<f4").tobytes())
    req = {"model": str(folder / "m.onnx"), "input": str(folder / "x.bin"), "shape": list(x.shape)}
    done = subprocess.run(["node", "-e", _ORT_NODE], cwd=REPO, input=json.dumps(req), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return {k: np.array(v["data"], np.float32).reshape(v["dims"]) for k, v in json.loads(done.stdout).items()}


def _embedding_ops(tmp_path):
    """The ops of a tfjs face-embedding network such as sirius-ai's MobileFaceNet, with the attribute values such a
    network uses and others, and a float64 reference.

    The chain ends in such an embedding head: a 1x1 map squeezed to [N, C], then an L2 normalisation written as
    x * Rsqrt(Maximum(Sum(Square(x), keep_dims), eps)); the PReLU is written Relu(x) + a * (x - Abs(x))."""
    rng = np.random.default_rng(13)
    m = _Model([1, 5, 6, 3])
    x = rng.uniform(-2, 2, size=(1, 5, 6, 3)).astype(np.float32)
    ref: dict[str, np.ndarray] = {}
    wd = m.const("wd", rng.normal(size=(3, 3, 3, 2)))
    bd = m.const("bd", rng.normal(size=6))
    fused = {"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}}
    m.op("dw", "FusedDepthwiseConv2dNative", ["x", wd, bd], strides=_ints([1, 2, 2, 1]), padding=_s("SAME"),
         dilations=_ints([1, 1, 1, 1]), data_format=_s("NHWC"), fused_ops=fused, num_args={"i": "1"},
         explicit_paddings={"list": {}})
    # 5 x 6, k 3, s 2, SAME: 3 x 3 out; pads (1, 1) rows, (0, 1) columns.
    ref["dw"] = np.maximum(_conv_ref(x, m.values[wd], (2, 2), (1, 0, 1, 1), depthwise=True) + m.values[bd], 0)
    wb = m.const("wb", rng.normal(size=(3, 3, 6, 1)))
    bb = m.const("bb", rng.normal(size=6))
    m.op("dwb", "FusedDepthwiseConv2dNative", ["dw", wb, bb], strides=_ints([1, 1, 1, 1]), padding=_s("VALID"),
         fused_ops={"list": {"s": [_s("BiasAdd")["s"]]}}, num_args={"i": "1"})
    ref["dwb"] = _conv_ref(ref["dw"], m.values[wb], (1, 1), (0, 0, 0, 0), depthwise=True) + m.values[bb]  # 1 x 1
    half = m.const("half", rng.uniform(0.1, 0.3, size=6) * 0.5)
    c = m.const("c", rng.normal(size=6))
    m.op("shift", "Sub", ["dw", c])  # live - constant
    m.op("flip", "Sub", [c, "dw"])  # constant - live: the operand order matters
    m.op("relu", "Relu", ["shift"])
    m.op("abs", "Abs", ["shift"])
    m.op("sub", "Sub", ["shift", "abs"])  # live - live
    m.op("mul", "Mul", ["sub", half])
    m.op("prelu", "Add", ["relu", "mul"])
    shift = ref["dw"] - m.values[c]
    ref["flip"] = m.values[c] - ref["dw"]
    ref["abs"] = np.abs(shift)
    ref["prelu"] = np.where(shift < 0, 2 * m.values[half] * shift, shift)
    ax12 = m.const("ax12", np.array([1, 2], np.int32))
    ax_c = m.const("ax_c", np.array([-1], np.int32))
    m.op("sum_keep", "Sum", ["prelu", ax12], keep_dims={"b": True})
    m.op("sum_drop", "Sum", ["prelu", ax12], keep_dims={"b": False})
    m.op("sum_c", "Sum", ["prelu", ax_c], keep_dims={"b": False})
    ref["sum_keep"] = ref["prelu"].sum(axis=(1, 2), keepdims=True)
    ref["sum_drop"] = ref["prelu"].sum(axis=(1, 2))
    ref["sum_c"] = ref["prelu"].sum(axis=3)
    m.op("sq12", "Squeeze", ["dwb"], squeeze_dims=_ints([1, 2]))
    m.op("sq_neg", "Squeeze", ["sum_keep"], squeeze_dims=_ints([-3, -2]))
    m.op("sq_all", "Squeeze", ["dwb"], squeeze_dims={"list": {}})  # every size-1 axis, the batch too
    m.op("sq_none", "Squeeze", ["sum_keep"])
    ref["sq12"], ref["sq_neg"] = ref["dwb"].reshape(1, 6), ref["sum_keep"].reshape(1, 6)
    ref["sq_all"], ref["sq_none"] = ref["dwb"].reshape(6), ref["sum_keep"].reshape(6)
    m.op("square", "Square", ["sq12"])
    ax1 = m.const("ax1", np.array([1], np.int32))
    m.op("norm2", "Sum", ["square", ax1], keep_dims={"b": True})
    eps = m.const("eps", np.float32(1e-10))
    m.op("clamped", "Maximum", ["norm2", eps])
    m.op("rsqrt", "Rsqrt", ["clamped"])
    m.op("embeddings", "Mul", ["sq12", "rsqrt"])
    e = ref["sq12"]
    ref["rsqrt"] = 1 / np.sqrt(np.maximum((e * e).sum(axis=1, keepdims=True), 1e-10))
    ref["embeddings"] = e * ref["rsqrt"]
    outputs = {k: k for k in ref}
    return m.write(tmp_path, outputs), x, ref


def test_embedding_ops_match_the_nhwc_reference(tmp_path) -> None:
    path, x, ref = _embedding_ops(tmp_path)
    graph = load_graph(path)
    for layout in ("nhwc", "nchw"):
        net = TfjsModule(graph, input_layout=layout)
        inp = torch.from_numpy(x)
        with torch.no_grad():
            out = net(inp if layout == "nhwc" else inp.permute(0, 3, 1, 2).contiguous())
        for name, want in ref.items():
            assert tuple(out[name].shape) == want.shape, (layout, name)
            assert np.abs(out[name].numpy() - want).max() < 1e-4, (layout, name)
    assert np.allclose(np.linalg.norm(ref["embeddings"], axis=1), 1)

    got = _run_onnx(to_onnx_bytes(graph), x, tmp_path)
    for level in ("disabled", "all"):
        for name, want in ref.items():
            assert got[f"{name}@{level}"].shape == want.shape, (level, name)
            assert np.abs(got[f"{name}@{level}"] - want).max() < 1e-4, (level, name)


def test_embedding_ops_onnx_nodes(tmp_path) -> None:
    import onnx
    path, _, _ = _embedding_ops(tmp_path)
    model = onnx.load_from_string(to_onnx_bytes(load_graph(path)))
    ops = [n.op_type for n in model.graph.node]
    # Square is x * x and Rsqrt is 1 / Sqrt(x) (opset 13 has neither); ReduceSum takes its axes as an input there.
    assert {"Sub", "Abs", "ReduceSum", "Sqrt", "Reciprocal", "Reshape"} <= set(ops)
    # An output's own node is an Identity of the op's (through its transpose to NHWC, if any).
    by_out = {n.output[0]: n for n in model.graph.node}
    sums = {}
    for name in ("sum_c", "sum_keep", "sum_drop"):
        n = by_out[name]
        while n.op_type in ("Identity", "Transpose"):
            n = by_out[n.input[0]]
        sums[name] = n
    inits = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in model.graph.initializer}
    keep = {name: onnx.helper.get_attribute_value(n.attribute[0]) for name, n in sums.items()}
    axes = {name: inits[n.input[1]] for name, n in sums.items()}
    assert {n.op_type for n in sums.values()} == {"ReduceSum"}
    # The channel sum of an NCHW tensor reduces ONNX axis 1; the spatial ones axes 2 and 3.
    assert (keep["sum_c"], axes["sum_c"]) == (0, [1])
    assert (keep["sum_keep"], axes["sum_keep"]) == (1, [2, 3])
    assert (keep["sum_drop"], axes["sum_drop"]) == (0, [2, 3])


def test_squeeze_refuses_an_axis_that_is_not_1(tmp_path) -> None:
    m = _Model([1, 4, 1, 3])
    m.op("sq", "Squeeze", ["x"], squeeze_dims=_ints([1, 2]))
    with pytest.raises(ConvertError) as err:
        to_onnx_bytes(load_graph(m.write(tmp_path, {"y": "sq"})))
    assert err.value.code == "BAD_MODEL" and "'sq'" in err.value.message and "[1, 2]" in err.value.message


def _matmul_ops(tmp_path):
    """MatMul without fused ops (lowered as _FusedMatMul is, with no bias), in MobileFace's head and in every transpose
    combination, live x constant and live x live, on a graph whose batch size is unknown (-1, as MobileFace's)."""
    rng = np.random.default_rng(17)
    m = _Model([-1, 4, 5, 3])
    x = rng.uniform(-1, 1, size=(2, 4, 5, 3)).astype(np.float32)
    ref: dict[str, np.ndarray] = {}
    shp = m.const("shp", np.array([-1, 60], np.int32))
    m.op("flat", "Reshape", ["x", shp])
    flat = x.astype(np.float64).reshape(2, 60)
    # MobileFace's head: flatten, MatMul with the dense kernel, then its batch norm as Mul and AddV2.
    w = m.const("w", rng.normal(size=(60, 7)))
    scale = m.const("scale", rng.uniform(0.5, 2, size=7))
    shift = m.const("shift", rng.normal(size=7))
    m.op("mm", "MatMul", ["flat", w], transpose_a={"b": False}, transpose_b={"b": False})
    m.op("bn_mul", "Mul", ["mm", scale])
    m.op("bn", "AddV2", ["bn_mul", shift])
    ref["mm"] = flat @ m.values[w]
    ref["bn"] = ref["mm"] * m.values[scale] + m.values[shift]
    wt = m.const("wt", rng.normal(size=(5, 60)))
    m.op("mm_tb", "MatMul", ["flat", wt], transpose_a={"b": False}, transpose_b={"b": True})
    ref["mm_tb"] = flat @ m.values[wt].T
    m.op("gram", "MatMul", ["mm", "mm"], transpose_b={"b": True})  # [N, 7] x [7, N]
    m.op("cov", "MatMul", ["mm", "mm"], transpose_a={"b": True})  # [7, N] x [N, 7]
    ref["gram"], ref["cov"] = ref["mm"] @ ref["mm"].T, ref["mm"].T @ ref["mm"]
    m.op("both", "MatMul", ["mm_tb", "gram"], transpose_a={"b": True}, transpose_b={"b": True})  # [5, N] x [N, N]
    ref["both"] = ref["mm_tb"].T @ ref["gram"].T
    return m.write(tmp_path, {k: k for k in ref}), x, ref


def test_matmul_matches_the_reference(tmp_path) -> None:
    path, x, ref = _matmul_ops(tmp_path)
    graph = load_graph(path)
    for layout in ("nhwc", "nchw"):
        net = TfjsModule(graph, input_layout=layout)
        inp = torch.from_numpy(x)
        with torch.no_grad():
            out = net(inp if layout == "nhwc" else inp.permute(0, 3, 1, 2).contiguous())
        for name, want in ref.items():
            assert tuple(out[name].shape) == want.shape, (layout, name)
            assert np.abs(out[name].numpy() - want).max() < 1e-4 * max(1, np.abs(want).max()), (layout, name)

    data = to_onnx_bytes(graph)
    import onnx
    model = onnx.load_from_string(data)
    # An output's own node is an Identity of the op's. Each MatMul is a Gemm with no bias input, its transposes
    # Gemm's attributes.
    by_out = {n.output[0]: n for n in model.graph.node}
    gemms = {name: by_out[by_out[name].input[0]] for name in ("mm", "mm_tb", "gram", "cov", "both")}
    assert {k: n.op_type for k, n in gemms.items()} == dict.fromkeys(gemms, "Gemm")
    assert {k: (len(n.input), {a.name: a.i for a in n.attribute}) for k, n in gemms.items()} == {
        "mm": (2, {"transA": 0, "transB": 0}), "mm_tb": (2, {"transA": 0, "transB": 1}),
        "gram": (2, {"transA": 0, "transB": 1}), "cov": (2, {"transA": 1, "transB": 0}),
        "both": (2, {"transA": 1, "transB": 1})}
    got = _run_onnx(data, x, tmp_path)
    for level in ("disabled", "all"):
        for name, want in ref.items():
            assert got[f"{name}@{level}"].shape == want.shape, (level, name)
            assert np.abs(got[f"{name}@{level}"] - want).max() < 1e-4 * max(1, np.abs(want).max()), (level, name)


# -- MobileFace on real faces: an identity sanity check ----------------------------------------------------------------
def _media_dir() -> str:
    """The test media as scripts/testData.ts finds them: $AVATAR_TEST_DATA (relative to the repository) or ../shared."""
    value = os.environ.get("AVATAR_TEST_DATA", "").strip()
    return os.path.join(os.path.join(REPO, value) if value else os.path.join(REPO, "..", "shared"), "media")


def _frame(clip: str, index: int) -> np.ndarray:
    """Frame `index` of a clip, HWC uint8 RGB (ffmpeg, as a PPM: its header carries the size)."""
    import subprocess
    args = ["-vf", f"select=eq(n\\,{index})", "-frames:v", "1", "-f", "image2pipe", "-vcodec", "ppm", "-"]
    ppm = subprocess.run(["ffmpeg", "-v", "error", "-i", clip, *args], capture_output=True, check=True,
                         timeout=60).stdout
    magic, w, h, top, body = ppm.split(maxsplit=4)
    assert magic == b"P6" and top == b"255", clip
    return np.frombuffer(body, np.uint8, int(w) * int(h) * 3).reshape(int(h), int(w), 3)


def _square(img: np.ndarray, x0: float, y0: float, side: float, size: int):
    """A square region (black outside the image) resized to size x size: [1, size, size, 3] in 0..1."""
    h, w = img.shape[:2]
    x, y, s = round(x0), round(y0), round(side)
    canvas = np.zeros((s, s, 3), np.uint8)
    left, top, right, bottom = max(x, 0), max(y, 0), min(x + s, w), min(y + s, h)
    canvas[top - y:bottom - y, left - x:right - x] = img[top:bottom, left:right]
    t = torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 255
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=True).permute(0, 2, 3, 1)


def _face_crop(blazeface, img: np.ndarray, size: int):
    """The face as tests/convert crops it for FaceRes: BlazeFace's best box on the letterboxed frame, enlarged 1.5x."""
    h, w = img.shape[:2]
    side = max(h, w)
    with torch.no_grad():
        out = blazeface(_square(img, (w - side) / 2, (h - side) / 2, side, 256) * 2 - 1)
    best = []
    for s, r, stride, per in (("Identity", "Identity_2", 16, 2), ("Identity_1", "Identity_3", 32, 6)):
        i = int(out[s][0, :, 0].argmax())
        best.append((float(out[s][0, i, 0]), i, out[r][0, i].numpy(), stride, per))
    logit, i, reg, stride, per = max(best, key=lambda b: b[0])
    assert logit > 0, "BlazeFace finds the face"
    cell, cols, k = i // per, 256 // stride, side / 256
    cx, cy = ((cell % cols + 0.5) * stride + reg[0]) * k, ((cell // cols + 0.5) * stride + reg[1]) * k
    box = max(reg[2], reg[3]) * 1.5 * k
    return _square(img, (w - side) / 2 + cx - box / 2, (h - side) / 2 + cy - box / 2, box, size)


def _pinned_model(name: str) -> str:
    """The pinned model.json of a face model (tarball pins: extracted from the cached, hash-checked tarball)."""
    from tfjs_convert.face_models import _tarball_dir, source_dir
    face = os.path.join(REPO, "models", "face")
    with open(os.path.join(face, "sources.json"), encoding="utf-8") as f:
        pin = json.load(f)["models"][name]
    cache, node_modules = os.path.join(face, ".cache"), os.path.join(REPO, "node_modules")
    path = os.path.join(source_dir(pin, node_modules, cache), pin["model"])
    if not os.path.isfile(path) and "tarball" in pin:
        if not os.path.isfile(os.path.join(cache, pin["tarball"])):
            pytest.skip(f"{pin['tarball']} is not in {cache} (python3 -m tfjs_convert build-face-models fetches it): "
                        f"the {name} identity check is skipped")
        _tarball_dir(cache, pin, repin=False)  # no network: the tarball is there
    if not os.path.isfile(path):
        pytest.skip(f"{path} not found (npm ci installs it): the {name} identity check is skipped")
    return path


IDENTITY_CLIPS = ("woman_speech_head_motion.mp4", "man_glasses_talking_portrait.mp4", "young_man_talking_outdoor.mp4",
                  "child_talking_gaze.mp4")


def test_mobileface_tells_people_apart() -> None:
    """Two frames of one person (the 1st and the 30th of a driving clip) are nearer than any two people, by the raw
    embeddings' cosine, in 0..255 RGB, the pinned input range (the graph subtracts 127.5 and scales itself).

    The crop here is the loose one tests/convert makes for FaceRes (BlazeFace's box enlarged 1.5x), so different people
    stay near 0.5; the refiner's aligned crop (refiner/facenets.py) separates them further (about 0.8 same, 0.2 not)."""
    import shutil
    media = _media_dir()
    if shutil.which("ffmpeg") is None or not os.path.isdir(os.path.join(media, "driving")):
        pytest.skip(f"ffmpeg or the test media ({media}, npm run fetch-test-data) not found: the identity check is "
                    "skipped")
    blazeface = TfjsModule(load_graph(_pinned_model("blazeface")))
    mobileface = TfjsModule(load_graph(_pinned_model("mobileface")))
    crops = torch.cat([_face_crop(blazeface, _frame(os.path.join(media, "driving", clip), n), 112)
                       for clip in IDENTITY_CLIPS for n in (0, 29)])
    with torch.no_grad():
        e = mobileface(crops * 255)["batchnorm0/add_1"].numpy().astype(np.float64)
    assert e.shape == (2 * len(IDENTITY_CLIPS), 256)
    assert np.linalg.norm(e, axis=1).min() > 10  # not normalised
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    cos = u @ u.T
    people = np.arange(len(e)) // 2
    same = np.array([cos[2 * p, 2 * p + 1] for p in range(len(IDENTITY_CLIPS))])
    cross = cos[people[:, None] != people[None, :]]
    for p, clip in enumerate(IDENTITY_CLIPS):
        others = cos[people == p][:, people != p]
        assert same[p] > others.max(), (clip, same[p], others.max())  # each frame's nearest is the other frame
    # Measured: same person 0.80..0.94 (mean 0.88), different people 0.46..0.71 (mean 0.55).
    assert same.min() > cross.max() and same.mean() - cross.mean() > 0.2, (same, cross.max(), cross.mean())
