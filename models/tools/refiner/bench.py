"""Times one step of a model pack's refiner (and its encoder) in onnxruntime, per execution provider available:

    PYTHONPATH=models/tools python3 -m refiner.bench models/refiner [--runs 200] [--json OUT]

Used to check the CUDA execution provider on a machine that has one (the server's engine runs the same graphs through
onnxruntime-node). Inputs are the manifest's shapes filled with uniform noise; prints p50/p95 ms per provider. Needs
the onnxruntime Python package (not a Debian package: the lent GPU machine's image has it)."""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np


def bench(pack: str, runs: int) -> Dict[str, Any]:
    """p50 / p95 ms of every graph of the pack, per available provider (CUDA first, then CPU with one thread)."""
    import onnxruntime as ort

    with open(os.path.join(pack, "manifest.json")) as f:
        man = json.load(f)
    res: Dict[str, Any] = {"onnxruntime": ort.__version__, "available": ort.get_available_providers(), "providers": {}}
    rng = np.random.default_rng(0)
    for prov in [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in res["available"]]:
        res["providers"][prov] = {}
        for entry in man["files"]:
            opts = ort.SessionOptions()
            if prov == "CPUExecutionProvider":
                opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(os.path.join(pack, entry["path"]), opts, providers=[prov])
            feed = {i["name"]: rng.random(i["shape"], dtype=np.float32) for i in entry["inputs"]}
            for _ in range(10):
                sess.run(None, feed)
            ms: List[float] = []
            for _ in range(runs):
                t = time.perf_counter()
                sess.run(None, feed)
                ms.append((time.perf_counter() - t) * 1000)
            res["providers"][prov][entry["path"]] = {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                                                     "n": runs, "used": sess.get_providers()[0]}
    return res


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m refiner.bench")
    ap.add_argument("pack")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    res = bench(a.pack, a.runs)
    print(json.dumps(res, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
