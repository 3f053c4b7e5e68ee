#!/usr/bin/env python3
"""A compact, portable form of the refiner's dataset cache, for training on another machine (a lent GPU).

The cache that `npm run train` builds (server/learned/dataset.ts) is raw uint8: about 100 KB per sample, half a
gigabyte for the shared training clips. Its frames are consecutive video frames, so video coding shrinks them ~20x:

    /usr/bin/python3 models/tools/packed_dataset.py pack --cache ~/.cache/live-avatar/refiner --out DIR [--crf 12]

writes per clip NAME.json (the cache's metadata, unchanged), NAME.npz (the portrait crop, its canvas and the paste mask, lossless)
and NAME.warp.mkv, NAME.truth.mkv, NAME.drive.mkv (H.264 4:4:4 at the given CRF; the grey driving crops as equal RGB).
`train_refiner.py --packed DIR` reads it back (OpenCV's video reader, or ffmpeg where OpenCV is missing). The coding
error is measured and printed on packing (mean absolute error per stream, in 0..1 units), so a run can say what it
cost. The packed folder holds frames of third-party clips: keep it outside the repository like the cache.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

DRIVE = 64


def read_cache_clip(cache, name):
    """One clip of the raw cache -> dict of uint8 arrays (HWC) and its metadata, or None when it has no samples."""
    mp = os.path.join(cache, name + ".json")
    if not os.path.exists(mp):
        return None
    meta = json.load(open(mp))
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
        raise SystemExit(f"clip {name}: cache file has {raw.size} bytes, expected {want}")
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


def _encode(frames, path, crf):
    n, h, w, _ = frames.shape
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25", "-i", "-",
         "-c:v", "libx264", "-preset", "slow", "-crf", str(crf), "-pix_fmt", "yuv444p", path],
        input=np.ascontiguousarray(frames).tobytes(), check=True)


def _decode(path, n, h, w):
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
            raise SystemExit(f"{path}: OpenCV decoded {len(out)} of {n} frames and there is no ffmpeg")
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    a = np.frombuffer(raw, np.uint8)
    if a.size != n * h * w * 3:
        raise SystemExit(f"{path}: decoded {a.size} bytes, expected {n * h * w * 3}")
    return a.reshape(n, h, w, 3)


def read_packed_clip(folder, name):
    mp = os.path.join(folder, name + ".json")
    if not os.path.exists(mp):
        return None
    meta = json.load(open(mp))
    n, r = len(meta["frames"]), meta["size"]
    if n == 0:
        return None
    z = np.load(os.path.join(folder, name + ".npz"))
    return {
        "canvas": z["canvas"] if "canvas" in z.files else None,
        "meta": meta,
        "src": z["src"],
        "mask": z["mask"],
        "warp": _decode(os.path.join(folder, name + ".warp.mkv"), n, r, r),
        "truth": _decode(os.path.join(folder, name + ".truth.mkv"), n, r, r),
        "drive": _decode(os.path.join(folder, name + ".drive.mkv"), n, DRIVE, DRIVE)[..., 0],
    }


def clip_names(folder):
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json") and not f.startswith("_"))


def pack(cache, out, crf):
    os.makedirs(out, exist_ok=True)
    total, errs = 0, {"warp": [], "truth": [], "drive": []}
    names = [n for n in clip_names(cache)]
    for i, name in enumerate(names):
        c = read_cache_clip(cache, name)
        if c is None:
            continue
        json.dump(c["meta"], open(os.path.join(out, name + ".json"), "w"))
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
    json.dump(report, open(os.path.join(out, "_packed.json"), "w"), indent=2)
    sys.stderr.write(f"pack: {total} samples, {size / 1e6:.1f} MB, coding error {report['mean_abs_error']}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["pack"])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--crf", type=int, default=12)
    a = ap.parse_args()
    pack(a.cache, a.out, a.crf)


if __name__ == "__main__":
    main()
