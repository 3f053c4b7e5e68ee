"""tfjs_convert: TensorFlow.js graph models (model.json + weight files) to ONNX and to PyTorch modules.

    load_graph(path) -> Graph            graph.py: parse, check and dequantise
    lower(graph) -> Lowered              lower.py: NCHW primitives shared by both back ends
    to_onnx(graph) -> onnx.ModelProto    onnx_export.py
    TfjsModule(graph, ...)               torch_module.py (imports torch; not imported here)

CLI: python3 -m tfjs_convert --help (from models/tools, or with models/tools on PYTHONPATH).
"""
from .errors import ConvertError
from .graph import Graph, Node, load_graph
from .lower import Lowered, lower

__all__ = ["ConvertError", "Graph", "Node", "load_graph", "Lowered", "lower"]
