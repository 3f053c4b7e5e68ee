"""Command line (run from models/tools, or with models/tools on PYTHONPATH; Debian's /usr/bin/python3):

    python3 -m tfjs_convert MODEL.json --onnx OUT.onnx [--tap NODE ...]
    python3 -m tfjs_convert info MODEL.json
    python3 -m tfjs_convert check MODEL.json --input IN.npy --expected NAME=OUT.npy [--expected ...] [--tol 1e-3]
    python3 -m tfjs_convert build-face-models [--repin] [--only NAME ...]

`check` runs the PyTorch module on IN.npy and compares each named output (or captured node) with its .npy: it
passes when max |torch - expected| <= tol * scale, scale being the expected output's range (max - min), or for a
single value max(1, |value|). It prints one line per output and exits 1 when one fails. Refusals print
`tfjs_convert: error CODE: message` on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .errors import BAD_ARGUMENT, CHECK_FAILED, ConvertError
from .graph import load_graph

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def tolerance_scale(expected: np.ndarray) -> float:
    """What `tol` is a fraction of: the range of the expected values (1 or |v| for a single value)."""
    if expected.size > 1:
        return float(expected.max() - expected.min())
    return max(1.0, float(np.abs(expected).max()))


def _convert(args: argparse.Namespace) -> int:
    from .face_models import write_atomic
    from .onnx_export import to_onnx_bytes

    data = to_onnx_bytes(load_graph(args.model), taps=args.tap or [])
    write_atomic(args.onnx, data)
    print(f"wrote {args.onnx} ({len(data)} bytes)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .lower import lower

    graph = load_graph(args.model)
    low = lower(graph)
    ops: dict[str, int] = {}
    for node in graph.nodes:
        ops[node.op] = ops.get(node.op, 0) + 1
    print(json.dumps({"input": {"name": "input", "shape": low.input_shape},
                      "outputs": [{"name": n, "node": src, "shape": s} for (n, s), (_, src) in
                                  zip(low.outputs, graph.outputs)], "ops": ops}, indent=2))
    return 0


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as err:
        raise ConvertError(BAD_ARGUMENT, f"cannot read '{path}': {err}") from err


def _check(args: argparse.Namespace) -> int:
    import torch

    from .torch_module import TfjsModule

    expected: dict[str, np.ndarray] = {}
    for item in args.expected:
        name, sep, path = item.rpartition("=")
        if not sep or not name:
            raise ConvertError(BAD_ARGUMENT, f"--expected wants NAME=FILE.npy, not '{item}'")
        expected[name] = _load_npy(path)
    graph = load_graph(args.model)
    outputs = {name for name, _ in graph.outputs}
    net = TfjsModule(graph, input_layout=args.input_layout, capture=[n for n in expected if n not in outputs])
    with torch.no_grad():
        got = net(torch.from_numpy(_load_npy(args.input)))
    failed = []
    for name, want in expected.items():
        have = got[name].numpy()
        if have.shape != want.shape:
            failed.append(f"{name}: shape {list(have.shape)}, expected {list(want.shape)}")
            print(failed[-1])
            continue
        diff = float(np.abs(have.astype(np.float64) - want).max()) if want.size else 0.0
        limit = args.tol * tolerance_scale(want)
        ok = diff <= limit and bool(np.isfinite(have).all())
        print(f"{name}: max abs diff {diff:.3g} (tolerance {limit:.3g}) {'ok' if ok else 'FAIL'}")
        if not ok:
            failed.append(f"{name}: max abs diff {diff:.3g} > {limit:.3g}")
    if failed:
        print(f"tfjs_convert: error {CHECK_FAILED}: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _build(args: argparse.Namespace) -> int:
    from .face_models import build_face_models

    build_face_models(args.sources, args.node_modules, args.out, repin=args.repin, only=args.only, cache=args.cache)
    return 0


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python3 -m tfjs_convert{'' if command == 'convert' else ' ' + command}",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if command in ("convert", "info", "check"):
        p.add_argument("model", help="the tfjs model.json (weight files beside it)")
    if command == "convert":
        p.add_argument("--onnx", required=True, help="where to write the ONNX model")
        p.add_argument("--tap", action="append", help="also output this tfjs node's activation, NHWC, as NODE:0 "
                                                      "(repeatable)")
    elif command == "check":
        p.add_argument("--input", required=True, help=".npy input, float32, in --input-layout")
        p.add_argument("--expected", action="append", required=True, help="NAME=FILE.npy (repeatable)")
        p.add_argument("--tol", type=float, default=1e-3, help="fraction of each output's range (default 1e-3)")
        p.add_argument("--input-layout", choices=("nhwc", "nchw"), default="nhwc")
    elif command == "build-face-models":
        p.add_argument("--sources", default=os.path.join(REPO, "models", "face", "sources.json"))
        p.add_argument("--node-modules", default=os.path.join(REPO, "node_modules"))
        p.add_argument("--out", default=os.path.join(REPO, "models", "face"))
        p.add_argument("--cache", help="npm tarballs of pins that name one, and the files extracted from them "
                                       "(default: .cache beside --sources)")
        p.add_argument("--only", nargs="+", help="build only these models")
        p.add_argument("--repin", action="store_true", help="pin the installed sources and this converter's output")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"info": _info, "check": _check, "build-face-models": _build}
    command = argv.pop(0) if argv and argv[0] in commands else "convert"
    args = _parser(command).parse_args(argv)
    try:
        return commands.get(command, _convert)(args)
    except ConvertError as err:
        print(f"tfjs_convert: error {err.code}: {err.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
