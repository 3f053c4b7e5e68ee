"""The training samples in memory: every sample of the named clips (uint8, on the training device), split by clip
into training and validation, and read as 0..1 float batches (augmented for training: augment.py). Read from the raw
cache that `npm run train` builds or from its packed form (packed.py) on another machine."""
from __future__ import annotations

import hashlib
import math
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import packed as packed_io
from .augment import augment_batch
from .constants import DRIVE, Batch
from .errors import BAD_CACHE, NO_DATA, RefinerError
from .geometry import rotation_theta


def is_validation_clip(name: str, val_every: int) -> bool:
    """A fixed subset of clips by name hash (never trained on; used to report, not to tune)."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % val_every == 0


class Data:
    """All samples in memory, split by clip into train_idx and val_idx (sample indices)."""

    def __init__(self, cache: str, clips: Sequence[str], val_every: int, packed: Optional[str] = None,
                 device: "str | torch.device" = "cpu") -> None:
        src: List[torch.Tensor] = []
        mask: List[torch.Tensor] = []
        canvases: List[Optional[torch.Tensor]] = []
        aligns: List[Optional[torch.Tensor]] = []
        warp: List[torch.Tensor] = []
        truth: List[torch.Tensor] = []
        drive: List[torch.Tensor] = []
        boxes: List[torch.Tensor] = []
        owner: List[torch.Tensor] = []
        self.clip_names: List[str] = []
        self.val_clips: List[int] = []
        self.per_clip: List[int] = []
        self.strides: Set[int] = set()
        size: Optional[int] = None
        if packed and list(clips) == ["all"]:
            clips = packed_io.clip_names(packed)
        for name in clips:
            c = packed_io.read_packed_clip(packed, name) if packed else packed_io.read_cache_clip(cache, name)
            if c is None:
                continue  # not cached, or no face in the clip's first frame: no samples
            meta = c["meta"]
            r = meta["size"]
            if size is None:
                size = r
            if r != size:
                raise RefinerError(BAD_CACHE, f"clip {name}: crop size {r} differs from {size}")
            n = len(meta["frames"])
            if n > 1:
                self.strides.add(meta["frames"][1] - meta["frames"][0])
            self.per_clip.append(n)
            ci = len(self.clip_names)
            self.clip_names.append(name)
            if is_validation_clip(name, val_every):
                self.val_clips.append(ci)
            src.append(torch.from_numpy(np.ascontiguousarray(c["src"])).permute(2, 0, 1))
            mask.append(torch.from_numpy(np.ascontiguousarray(c["mask"])).reshape(1, r, r))
            warp.append(torch.from_numpy(np.ascontiguousarray(c["warp"])).permute(0, 3, 1, 2))
            truth.append(torch.from_numpy(np.ascontiguousarray(c["truth"])).permute(0, 3, 1, 2))
            drive.append(torch.from_numpy(np.ascontiguousarray(c["drive"])).reshape(n, 1, DRIVE, DRIVE))
            boxes.append(torch.tensor(meta["boxes"], dtype=torch.int64).reshape(n, 12))
            canvases.append(None if c.get("canvas") is None else torch.from_numpy(np.ascontiguousarray(c["canvas"])).permute(2, 0, 1))
            aligns.append(torch.tensor(meta["align"], dtype=torch.float32).reshape(n, 4) if "align" in meta else None)
            owner.append(torch.full((n,), ci, dtype=torch.int64))
        if size is None:
            raise RefinerError(NO_DATA, "no cached clips: run `npm run train -- --data DIR` (it builds the dataset first)")
        dev = torch.device(device)
        self.size: int = size
        self.warp = torch.cat(warp).contiguous().to(dev)
        self.truth = torch.cat(truth).contiguous().to(dev)
        self.drive = torch.cat(drive).to(dev)
        self.boxes = torch.cat(boxes).to(dev)
        self.owner = torch.cat(owner).to(dev)
        val = torch.tensor([o in self.val_clips for o in torch.cat(owner).tolist()])
        self.val_idx = torch.nonzero(val).flatten().to(dev)
        self.train_idx = torch.nonzero(~val).flatten().to(dev)
        if len(self.train_idx) == 0:
            self.train_idx = self.val_idx
        self.src_all = torch.stack(src).contiguous().to(dev)
        self.mask_all = torch.stack(mask).to(dev)
        # The portrait canvases and per-sample alignments of an aligned source (dataset version 2); None for an older
        # cache, which can train region-source networks only.
        have_canvas = [cv for cv in canvases if cv is not None]
        have_align = [a for a in aligns if a is not None]
        have = len(have_canvas) == len(canvases) and len(have_align) == len(aligns)
        self.canvas_all: Optional[torch.Tensor] = torch.stack(have_canvas).contiguous().to(dev) if have else None
        self.align: Optional[torch.Tensor] = torch.cat(have_align).to(dev) if have else None
        self.canvas_scale = self.canvas_all.shape[-1] // size if self.canvas_all is not None else 0

    def cap_validation(self, per_clip: int) -> None:
        """Keeps at most `per_clip` validation samples of each validation clip, evenly spaced over the clip (a
        cheaper validation of a large dataset; 0 keeps all)."""
        if per_clip <= 0:
            return
        keep = []
        for ci in self.val_clips:
            ii = self.val_idx[self.owner[self.val_idx] == ci]
            if len(ii) > per_clip:
                ii = ii[torch.linspace(0, len(ii) - 1, per_clip, device=ii.device).round().long()]
            keep.append(ii)
        if keep:
            self.val_idx = torch.cat(keep)

    @property
    def device(self) -> torch.device:
        return self.warp.device

    def batch(self, idx: torch.Tensor, aug: bool = False, roll: float = 0.0,
              move: Tuple[float, float] = (0.0, 0.0)) -> Batch:
        """Samples idx as 0..1 floats; aug (training only): augment.augment_batch with roll (degrees) and move
        (scale, shift fractions), and a small jitter of the aligned source."""
        o = self.owner[idx]

        def f(t: torch.Tensor) -> torch.Tensor:
            return t.float() / 255.0

        b = {
            "warp": f(self.warp[idx]),
            "truth": f(self.truth[idx]),
            "drive": f(self.drive[idx]),
            "src": f(self.src_all[o]),
            "mask": f(self.mask_all[o]),
            "boxes": self.boxes[idx],
        }
        if self.canvas_all is not None and self.align is not None:
            b["src_al"] = aligned_source(f(self.canvas_all[o]), self.align[idx], self.size, self.canvas_scale, jitter=aug)
        if aug:
            augment_batch(b, self.size, roll, move)
        return b


def aligned_source(canvas: torch.Tensor, align: torch.Tensor, r: int, cs: int, jitter: bool = False) -> torch.Tensor:
    """The aligned source (server/avatar/engines/default/refinerCrop.ts sampleAligned): each sample's portrait canvas
    (cs*r square around the region) read through its alignment's inverse, so that the portrait's head sits where the
    warp put the driven head. Crop point P reads Q = A^-1 (P - t), canvas point Q + (cs - 1) r / 2, bilinear with the
    border clamped. jitter (training): a small random similarity on top (up to 2 degrees, 3% zoom, 1.5% shift of the
    crop), as the run-time fit of the control points is not exact."""
    n, dev = align.shape[0], align.device
    a, b, tx, ty = align.unbind(1)
    d = a * a + b * b
    ia, ib = a / d, b / d
    # Normalised crop coordinates pn (align_corners=False) -> normalised canvas coordinates:
    # A^-1 pn / cs + (2 / (cs r)) A^-1 (r/2 - t) - 1/cs.
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = ia / cs, ib / cs
    theta[:, 1, 0], theta[:, 1, 1] = -ib / cs, ia / cs
    cx, cy = r / 2 - tx, r / 2 - ty
    theta[:, 0, 2] = 2 / (cs * r) * (ia * cx + ib * cy) - 1 / cs
    theta[:, 1, 2] = 2 / (cs * r) * (-ib * cx + ia * cy) - 1 / cs
    if jitter:
        j = rotation_theta((torch.rand(n, device=dev) * 2 - 1) * math.radians(2), 1 + (torch.rand(n, device=dev) * 2 - 1) * 0.03)
        j[:, :, 2] = (torch.rand(n, 2, device=dev) * 2 - 1) * 0.03
        theta = torch.cat([theta[:, :, :2] @ j[:, :, :2], theta[:, :, :2] @ j[:, :, 2:] + theta[:, :, 2:]], dim=2)
    grid = F.affine_grid(theta, [n, 3, r, r], align_corners=False)
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="border", align_corners=False)
