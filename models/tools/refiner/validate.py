"""Validation on the held-out validation clips: the L1 of every output (the warp, the teacher at 8 and at each student
k, the student at each k) inside the paste mask and in the mouth and eye boxes, and of the student at k = 1 with the
warp and truth rolled, zoomed or shifted against the portrait (whether the refiner ghosts the portrait in place)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .augment import moved_batch
from .constants import STUDENT_STEPS, TEACHER_STEPS
from .data import Data
from .geometry import box_mask, eyes_mask
from .networks import sample

Scores = Dict[str, Dict[str, Optional[float]]]  # output name -> l1, mouth_l1, eyes_l1 (None: not measured)

# The rolled validation: (roll degrees, zoom, shift), fixed so that runs compare.
ROLL_VAL: Tuple[Tuple[float, float, float], ...] = tuple((deg, 1.0, 0.0) for deg in (-12.0, -6.0, 6.0, 12.0))

# The moved validation: (roll degrees, zoom, shift as a fraction of the crop) of the warp and truth against the portrait.
MOVE_VAL: Tuple[Tuple[float, float, float], ...] = ((0.0, 0.9, 0.0), (0.0, 1.1, 0.0), (0.0, 1.0, 0.06), (0.0, 1.0, -0.06))


@torch.no_grad()
def quick_val(data: Data, enc: nn.Module, net: nn.Module, roll: bool = False) -> float:
    """Progress only: the L1 inside the paste mask of one step from the warp on the validation clips (roll: with the
    rolled validation's angles, the mean over them)."""
    enc.eval(), net.eval()
    num = den = 0.0
    for s in range(0, len(data.val_idx), 64):
        b0 = data.batch(data.val_idx[s:s + 64])
        for b in ([moved_batch(b0, *mv) for mv in ROLL_VAL] if roll else [b0]):
            out = sample(net, b, enc(b["drive"]), 1).clamp(0, 1)
            num += ((out - b["truth"]).abs() * b["mask"]).sum().item()
            den += b["mask"].sum().item() * 3
    enc.train(), net.train()
    return num / max(den, 1e-6)


@torch.no_grad()
def write_sheet(data: Data, enc: nn.Module, net: nn.Module, path: str, n: int = 8) -> None:
    """A contact sheet of n validation samples, one row each: warp | the network's k = 1 output | truth (a PNG
    outside the repository: the frames are third-party). For watching a run: colour drift and collapse show here
    first."""
    import cv2  # Debian's python3-opencv; only this progress picture needs it

    if len(data.val_idx) == 0:
        return
    enc.eval(), net.eval()
    idx = data.val_idx[torch.linspace(0, len(data.val_idx) - 1, n).round().long()]
    b = data.batch(idx)
    out = sample(net, b, enc(b["drive"]), 1).clamp(0, 1)
    enc.train(), net.train()
    rows = torch.cat([torch.cat([b["warp"][i], out[i], b["truth"][i]], 2) for i in range(len(idx))], 1)
    img = (rows.permute(1, 2, 0).cpu().numpy()[:, :, ::-1] * 255).round().astype("uint8")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, img)


@torch.no_grad()
def validate(data: Data, enc: nn.Module, teacher: nn.Module, student: nn.Module) -> Scores:
    """L1 inside the paste mask (and in the mouth / eye boxes) on the validation clips: warp vs every k."""
    idx = data.val_idx
    res: Scores = {}
    if len(idx) == 0:
        return res
    names = ["warp", "teacher_k8"] + [f"student_k{k}" for k in STUDENT_STEPS] + [f"teacher_k{k}" for k in STUDENT_STEPS]
    acc = {n: [0.0, 0.0, 0.0] for n in names}
    wsum = [0.0, 0.0, 0.0]
    for s in range(0, len(idx), 32):
        b = data.batch(idx[s:s + 32])
        code = enc(b["drive"])
        outs = {"warp": b["warp"], "teacher_k8": sample(teacher, b, code, TEACHER_STEPS)}
        for k in STUDENT_STEPS:
            outs[f"student_k{k}"] = sample(student, b, code, k)
            outs[f"teacher_k{k}"] = sample(teacher, b, code, k)
        m = b["mask"]
        r = m.shape[-1]
        regions = [m, m * box_mask(b["boxes"], 0, r), m * eyes_mask(b["boxes"], r)]
        for j, w in enumerate(regions):
            wsum[j] += w.sum().item() * 3
            for nme, o in outs.items():
                acc[nme][j] += ((o.clamp(0, 1) - b["truth"]).abs() * w).sum().item()
    for nme in names:
        res[nme] = {"l1": acc[nme][0] / wsum[0], "mouth_l1": acc[nme][1] / max(1, wsum[1]), "eyes_l1": acc[nme][2] / max(1, wsum[2])}
    # The same clips with head roll, zoom or shift between portrait and driver (ROLL_VAL, MOVE_VAL): whether the
    # refiner copies the portrait in place (ghosting) or corrects the warp. Only the L1 in the paste mask (the boxes
    # do not follow the motion here).
    for kind, moves in (("rolled", ROLL_VAL), ("moved", MOVE_VAL)):
        num = {"warp": 0.0, "student_k1": 0.0}
        den = 0.0
        for s in range(0, len(idx), 32):
            b0 = data.batch(idx[s:s + 32])
            code = enc(b0["drive"])
            for mv in moves:
                b = moved_batch(b0, *mv)
                for nme, o in (("warp", b["warp"]), ("student_k1", sample(student, b, code, 1))):
                    num[nme] += ((o.clamp(0, 1) - b["truth"]).abs() * b["mask"]).sum().item()
                den += b["mask"].sum().item() * 3
        for nme in num:
            res[f"{nme} ({kind})"] = {"l1": num[nme] / den, "mouth_l1": None, "eyes_l1": None}
    return res


def log_lines(scores: Scores) -> List[str]:
    """One line per output for the log: `validation NAME: l1 X, mouth_l1 Y, eyes_l1 Z` (the measured ones)."""
    return [f"validation {k}: " + ", ".join(f"{m} {v[m]:.5f}" for m in ("l1", "mouth_l1", "eyes_l1") if v[m] is not None)
            for k, v in scores.items()]


def default_steps(scores: Scores) -> int:
    """The default k of the pack: the cheapest k whose student L1 on the validation clips (part of the training data,
    never the held-out evaluation clips) is within 1% of the student's best k: each step costs engine time on every
    frame. The smallest k when there was no validation."""
    if not scores:
        return STUDENT_STEPS[0]
    l1 = {k: scores[f"student_k{k}"]["l1"] or 0.0 for k in STUDENT_STEPS}
    best = min(l1.values())
    return min(k for k in STUDENT_STEPS if l1[k] <= best * 1.01)
