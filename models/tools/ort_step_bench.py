#!/usr/bin/env python3
"""Times one step of a model pack's refiner (and its encoder) in onnxruntime, per execution provider available:

    python3 models/tools/ort_step_bench.py models/refiner [--runs 200] [--json OUT]

Used to check the CUDA execution provider on a machine that has one (the server's engine runs the same graphs through
onnxruntime-node). Inputs are the manifest's shapes filled with uniform noise; prints p50/p95 ms per provider."""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pack")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--json")
    a = ap.parse_args()
    man = json.load(open(os.path.join(a.pack, "manifest.json")))
    res = {"onnxruntime": ort.__version__, "available": ort.get_available_providers(), "providers": {}}
    rng = np.random.default_rng(0)
    for prov in [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in res["available"]]:
        res["providers"][prov] = {}
        for f in man["files"]:
            opts = ort.SessionOptions()
            if prov == "CPUExecutionProvider":
                opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(os.path.join(a.pack, f["path"]), opts, providers=[prov])
            feed = {i["name"]: rng.random(i["shape"], dtype=np.float32) for i in f["inputs"]}
            for _ in range(10):
                sess.run(None, feed)
            ms = []
            for _ in range(a.runs):
                t = time.perf_counter()
                sess.run(None, feed)
                ms.append((time.perf_counter() - t) * 1000)
            res["providers"][prov][f["path"]] = {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "n": a.runs,
                                                 "used": sess.get_providers()[0]}
    print(json.dumps(res, indent=2))
    if a.json:
        json.dump(res, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
