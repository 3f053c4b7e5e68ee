"""Shared set-up of the models/tools unit tests: the package folder on sys.path, torch on two threads (the machine is
shared), and a writer of small synthetic refiner dataset caches in the format server/learned/dataset.ts writes (the
byte layout that refiner/packed.py reads: portrait crop, paste mask, per sample warp + truth + driving crop, and from
version 2 the portrait canvas)."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    import torch

    torch.set_num_threads(2)
except ImportError:  # the converter's tests importorskip torch themselves
    pass

DRIVE = 64


def smooth_images(rng: np.random.Generator, n: int, h: int, w: int, c: int) -> np.ndarray:
    """n x h x w x c uint8 pictures: a random colour gradient each, plus mild noise (video coding stays accurate)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, c), np.float32)
    for i in range(n):
        a = rng.uniform(-1, 1, (3, c))
        out[i] = 128 + 60 * (a[0] * x[..., None] / w + a[1] * y[..., None] / h) + a[2] * 20
    out += rng.normal(0, 3, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_cache_clip(folder: str, name: str, n: int = 4, r: int = 32, seed: int = 0, version: int = 2,
                     canvas_scale: int = 2, stride: int = 2) -> Dict[str, Any]:
    """One clip of a dataset cache: NAME.json and NAME.bin. Returns the arrays written (HWC uint8) and the metadata."""
    rng = np.random.default_rng(seed)
    src = smooth_images(rng, 1, r, r, 3)[0]
    mask = np.zeros((r, r), np.uint8)
    mask[r // 8:r - r // 8, r // 8:r - r // 8] = 255
    warp = smooth_images(rng, n, r, r, 3)
    truth = smooth_images(rng, n, r, r, 3)
    drive = smooth_images(rng, n, DRIVE, DRIVE, 1)[..., 0]
    # Mouth box low in the middle, the eyes above it left and right (x0, y0, x1, y1 each).
    boxes = [[r // 3, 2 * r // 3, 2 * r // 3, 5 * r // 6, r // 6, r // 4, r // 3 + 2, r // 3 + 2, 2 * r // 3 - 2, r // 4,
              5 * r // 6, r // 3 + 2] for _ in range(n)]
    meta: Dict[str, Any] = {"size": r, "frames": [stride * (i + 1) for i in range(n)], "boxes": boxes, "version": version}
    body = np.concatenate([np.concatenate([warp[i].ravel(), truth[i].ravel(), drive[i].ravel()]) for i in range(n)])
    parts = [src.ravel(), mask.ravel(), body]
    canvas = None
    if version >= 2:
        meta["canvasScale"] = canvas_scale
        meta["align"] = [[1.0, 0.0, 0.0, 0.0] for _ in range(n)]
        canvas = smooth_images(rng, 1, canvas_scale * r, canvas_scale * r, 3)[0]
        parts.append(canvas.ravel())
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name + ".json"), "w") as f:
        json.dump(meta, f)
    np.concatenate(parts).astype(np.uint8).tofile(os.path.join(folder, name + ".bin"))
    return {"meta": meta, "src": src, "mask": mask, "warp": warp, "truth": truth, "drive": drive, "canvas": canvas}
