"""The refiner's dataset on disk: the raw cache that `npm run train` builds (server/learned/dataset.ts) and its compact,
portable packed form, for training on another machine (a lent GPU).

The raw cache is uint8: about 100 KB per sample, half a gigabyte for the shared training clips. Its frames are
consecutive video frames, so video coding shrinks them ~20x:

    PYTHONPATH=models/tools /usr/bin/python3 -m refiner.packed pack --cache ~/.cache/live-avatar/refiner --out DIR [--crf 12]

writes per clip NAME.json (the cache's metadata, unchanged), NAME.npz (the portrait crop, its canvas and the paste mask,
lossless) and NAME.warp.mkv, NAME.truth.mkv, NAME.drive.mkv (H.264 4:4:4 at the given CRF; the grey driving crops as
equal RGB). `python3 -m refiner --packed DIR` reads it back (OpenCV's video reader, or ffmpeg where OpenCV is missing).
The coding error is measured and printed on packing (mean absolute error per stream, in 0..1 units), so a run can say
what it cost. The packed folder holds frames of third-party clips: keep it outside the repository like the cache.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .constants import DRIVE
from .errors import BAD_CACHE, RefinerError, cli_exit_code

Clip = Dict[str, Any]  # meta (the cache's JSON), src, mask, warp, truth, drive, canvas (None before version 2)


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def read_cache_clip(cache: str, name: str) -> Optional[Clip]:
    """One clip of the raw cache -> dict of uint8 arrays (HWC) and its metadata, or None when it has no samples."""
    mp = os.path.join(cache, name + ".json")
    if not os.path.exists(mp):
        return None
    meta = _read_json(mp)
    r = meta["size"]
    n = len(meta["frames"])
    if n == 0:
        return None
    raw = np.fromfile(os.path.join(cache, name + ".bin"), dtype=np.uint8)
    rr3 = r * r * 3
    per = 2 * rr3 + DRIVE * DRIVE
    # Version 2 caches end with the portrait's canvas (canvasScale*R square, RGB) and carry per-sample alignments.
    cs = meta.get("canvasScale", 0) if meta.get("version", 1) >= 2 else 0
    canvas_bytes = (cs * r) ** 2 * 3
    want = rr3 + r * r + n * per + canvas_bytes
    if raw.size != want:
        raise RefinerError(BAD_CACHE, f"clip {name}: cache file has {raw.size} bytes, expected {want}")
    body = raw[rr3 + r * r:rr3 + r * r + n * per].reshape(n, per)
    return {
        "canvas": raw[want - canvas_bytes:].reshape(cs * r, cs * r, 3) if cs else None,
        "meta": meta,
        "src": raw[:rr3].reshape(r, r, 3),
        "mask": raw[rr3:rr3 + r * r].reshape(r, r),
        "warp": body[:, :rr3].reshape(n, r, r, 3),
        "truth": body[:, rr3:2 * rr3].reshape(n, r, r, 3),
        "drive": body[:, 2 * rr3:].reshape(n, DRIVE, DRIVE),
    }


def _encode(frames: np.ndarray, path: str, crf: int) -> None:
    n, h, w, _ = frames.shape
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25", "-i", "-",
         "-c:v", "libx264", "-preset", "slow", "-crf", str(crf), "-pix_fmt", "yuv444p", path],
        input=np.ascontiguousarray(frames).tobytes(), check=True)


def _decode(path: str, n: int, h: int, w: int) -> np.ndarray:
    try:
        import cv2  # the GPU machine's image has OpenCV (with its own FFmpeg), not the ffmpeg program
    except ImportError:
        cv2 = None
    if cv2 is not None:
        cap = cv2.VideoCapture(path)
        out = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            out.append(f[:, :, ::-1])
        cap.release()
        if len(out) == n:
            return np.stack(out)
        if shutil.which("ffmpeg") is None:
            raise RefinerError(BAD_CACHE, f"{path}: OpenCV decoded {len(out)} of {n} frames and there is no ffmpeg")
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    a = np.frombuffer(raw, np.uint8)
    if a.size != n * h * w * 3:
        raise RefinerError(BAD_CACHE, f"{path}: decoded {a.size} bytes, expected {n * h * w * 3}")
    return a.reshape(n, h, w, 3)


def read_packed_clip(folder: str, name: str) -> Optional[Clip]:
    """One clip of a packed folder, in the form read_cache_clip returns (the video-coded streams decoded)."""
    mp = os.path.join(folder, name + ".json")
    if not os.path.exists(mp):
        return None
    meta = _read_json(mp)
    n, r = len(meta["frames"]), meta["size"]
    if n == 0:
        return None
    with np.load(os.path.join(folder, name + ".npz")) as z:
        lossless = {k: z[k] for k in z.files}
    return {
        "canvas": lossless.get("canvas"),
        "meta": meta,
        "src": lossless["src"],
        "mask": lossless["mask"],
        "warp": _decode(os.path.join(folder, name + ".warp.mkv"), n, r, r),
        "truth": _decode(os.path.join(folder, name + ".truth.mkv"), n, r, r),
        "drive": _decode(os.path.join(folder, name + ".drive.mkv"), n, DRIVE, DRIVE)[..., 0],
    }


def clip_names(folder: str) -> List[str]:
    """The clips of a cache or packed folder (metadata file stems; _packed.json is the packing report)."""
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json") and not f.startswith("_"))


def pack(cache: str, out: str, crf: int) -> Dict[str, Any]:
    """Packs every clip of the cache into out; writes and returns the report (_packed.json)."""
    os.makedirs(out, exist_ok=True)
    total = 0
    errs: Dict[str, List[float]] = {"warp": [], "truth": [], "drive": []}
    names = clip_names(cache)
    for i, name in enumerate(names):
        c = read_cache_clip(cache, name)
        if c is None:
            continue
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(c["meta"], f)
        extra = {"canvas": c["canvas"]} if c["canvas"] is not None else {}
        np.savez_compressed(os.path.join(out, name + ".npz"), src=c["src"], mask=c["mask"], **extra)
        for k in ("warp", "truth", "drive"):
            fr = c[k] if k != "drive" else np.repeat(c[k][..., None], 3, axis=3)
            p = os.path.join(out, f"{name}.{k}.mkv")
            _encode(fr, p, crf)
            back = _decode(p, *fr.shape[:3])
            errs[k].append(float(np.abs(back.astype(np.float32) - fr).mean() / 255))
        total += len(c["meta"]["frames"])
        sys.stderr.write(f"pack: {i + 1}/{len(names)} {name}: {len(c['meta']['frames'])} samples\n")
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    report = {"samples": total, "bytes": size, "crf": crf, "mean_abs_error": {k: float(np.mean(v)) for k, v in errs.items() if v}}
    with open(os.path.join(out, "_packed.json"), "w") as f:
        json.dump(report, f, indent=2)
    sys.stderr.write(f"pack: {total} samples, {size / 1e6:.1f} MB, coding error {report['mean_abs_error']}\n")
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m refiner.packed")
    ap.add_argument("cmd", choices=["pack"])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--crf", type=int, default=12)
    a = ap.parse_args(argv)
    return cli_exit_code("refiner.packed", lambda: pack(a.cache, a.out, a.crf))


if __name__ == "__main__":
    sys.exit(main())
