"""Taps: intermediate activations as extra ONNX outputs (onnx_export.py), and the `taps` field of a face-model pin
(face_models.py). The numbers of a tap against PyTorch's capture are checked on the real FaceRes in
tests/convert/faceresTaps.test.ts (onnxruntime is not installed for Python here); these tests check the graph."""
from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from test_tfjs_convert import _every_op  # noqa: E402
from tfjs_convert.errors import ConvertError  # noqa: E402
from tfjs_convert.face_models import build_face_models  # noqa: E402
from tfjs_convert.graph import load_graph  # noqa: E402
from tfjs_convert.lower import lower  # noqa: E402
from tfjs_convert.onnx_export import tap_output_name, to_onnx_bytes  # noqa: E402


def _dims(v) -> list:
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


def test_taps_are_nhwc_outputs_after_the_tfjs_ones(tmp_path) -> None:
    path, _, _ = _every_op(tmp_path)
    graph = load_graph(path)
    low = lower(graph)
    assert "nhwc" not in low.activations["c1"]  # a convolution: kept in NCHW only, so the tap transposes
    assert "nhwc" in low.activations["mean"]  # 2-D: NHWC already, so the tap is an Identity
    data = to_onnx_bytes(graph, taps=["c1", "mean"])
    assert data == to_onnx_bytes(graph, taps=["c1", "mean"])  # byte-deterministic with taps too
    model = onnx.load_from_string(data)
    names = [o.name for o in model.graph.output]
    assert names == ["probs", "gate", "flat", "cat", "c1:0", "mean:0"]
    assert tap_output_name("c1") == "c1:0"
    outs = {o.name: o for o in model.graph.output}
    assert _dims(outs["c1:0"]) == [1, 4, 3, 4]  # NHWC, like the tfjs node
    assert _dims(outs["mean:0"]) == [1, 6]
    by_out = {n.output[0]: n for n in model.graph.node}
    c1 = by_out["c1:0"]
    assert c1.op_type == "Transpose" and c1.input[0] == low.activations["c1"]["nchw"]
    assert list(onnx.helper.get_attribute_value(c1.attribute[0])) == [0, 2, 3, 1]
    assert by_out["mean:0"].op_type == "Identity" and by_out["mean:0"].input[0] == low.activations["mean"]["nhwc"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["tfjs_taps"]) == {"c1:0": "c1", "mean:0": "mean"}


def test_no_taps_leaves_the_model_unchanged(tmp_path) -> None:
    path, _, _ = _every_op(tmp_path)
    graph = load_graph(path)
    plain = to_onnx_bytes(graph)
    assert to_onnx_bytes(graph, taps=[]) == plain
    model = onnx.load_from_string(plain)
    assert "tfjs_taps" not in {p.key for p in model.metadata_props}


def test_unknown_or_repeated_taps_are_refused(tmp_path) -> None:
    path, _, _ = _every_op(tmp_path)
    graph = load_graph(path)
    with pytest.raises(ConvertError) as err:
        to_onnx_bytes(graph, taps=["no/such/node"])
    assert err.value.code == "UNKNOWN_NODE" and "no/such/node" in err.value.message
    with pytest.raises(ConvertError) as err:
        to_onnx_bytes(graph, taps=["c1", "c1"])
    assert err.value.code == "BAD_ARGUMENT" and "c1" in err.value.message


def _package(tmp_path):
    """A fake installed npm package holding the every-op model, and a sources.json pinning it (to be repinned)."""
    folder = tmp_path / "node_modules" / "fake-pkg" / "models"
    folder.mkdir(parents=True)
    _every_op(folder)
    (tmp_path / "node_modules" / "fake-pkg" / "package.json").write_text(json.dumps({"version": "1.0.0"}))
    sources = tmp_path / "sources.json"
    pin = {"what": "test", "package": "fake-pkg", "version": "1.0.0", "dir": "models", "model": "m.json",
           "files": {"m.json": "", "m.bin": ""}, "input_range": [-1, 1], "onnx_sha256": ""}
    return sources, pin


def test_build_face_models_honours_the_pins_taps(tmp_path) -> None:
    sources, pin = _package(tmp_path)
    pin["taps"] = ["c1"]
    sources.write_text(json.dumps({"about": "test", "models": {"m": pin}}))
    out = tmp_path / "out"
    logs: list[str] = []
    build_face_models(str(sources), str(tmp_path / "node_modules"), str(out), repin=True, log=logs.append)
    model = onnx.load(str(out / "m.onnx"))
    assert [o.name for o in model.graph.output][-1] == "c1:0"
    pinned = json.loads(sources.read_text())["models"]["m"]
    assert pinned["taps"] == ["c1"]
    assert pinned["onnx_sha256"] == hashlib.sha256((out / "m.onnx").read_bytes()).hexdigest()
    # The pinned file is rebuilt to the same bytes (the taps are part of what the sha256 pins).
    (out / "m.onnx").unlink()
    assert build_face_models(str(sources), str(tmp_path / "node_modules"), str(out), log=logs.append) == ["m"]


def test_build_face_models_refuses_malformed_taps(tmp_path) -> None:
    sources, pin = _package(tmp_path)
    pin["taps"] = "c1"
    sources.write_text(json.dumps({"about": "test", "models": {"m": pin}}))
    with pytest.raises(ConvertError) as err:
        build_face_models(str(sources), str(tmp_path / "node_modules"), str(tmp_path / "out"), repin=True,
                          log=lambda _: None)
    assert err.value.code == "BAD_ARGUMENT" and "taps" in err.value.message
