"""Augmentation of training batches: a flip and a colour change of whole samples, a head roll / zoom / shift between
the portrait and the driver, the encoder's input disturbed against identity leakage, and the fixed motions of the
moved validation. Every random draw comes from torch's generator in a fixed order, so a seed repeats a run."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .constants import DRIVE, Batch
from .geometry import rotation_theta

# The images of a sample that a flip mirrors, and those a colour change touches (the driving crop is the encoder's,
# disturbed by augment_drive instead).
FLIPPED = ("warp", "truth", "drive", "src", "mask", "src_al")
COLOURED = ("warp", "truth", "src", "src_al")


def augment_batch(b: Batch, r: int, roll: float = 0.0, move: Tuple[float, float] = (0.0, 0.0)) -> Batch:
    """A training batch augmented in place (and returned): a horizontal flip of every image of half the samples (the
    boxes follow, the eyes swap sides), then with roll / move a head roll, zoom and shift (roll_pair), then one colour
    change per sample (per-channel gain 0.9-1.1, gamma 0.8-1.25) applied alike to the portrait, the warp and the
    truth, so the refiner learns corrections, not the training people's colours."""
    n, dev = b["warp"].shape[0], b["warp"].device
    flip = torch.rand(n, device=dev) < 0.5
    for k in FLIPPED:
        if k in b:
            b[k] = torch.where(flip[:, None, None, None], b[k].flip(-1), b[k])
    bx = b["boxes"].clone()
    for j in (0, 4, 8):
        bx[:, j] = torch.where(flip, r - b["boxes"][:, j + 2], b["boxes"][:, j])
        bx[:, j + 2] = torch.where(flip, r - b["boxes"][:, j], b["boxes"][:, j + 2])
    # The eyes swap sides in a mirror.
    sw = bx[:, 4:8].clone()
    bx[:, 4:8] = torch.where(flip[:, None], bx[:, 8:12], bx[:, 4:8])
    bx[:, 8:12] = torch.where(flip[:, None], sw, bx[:, 8:12])
    b["boxes"] = bx
    if roll > 0 or move[0] > 0 or move[1] > 0:
        b["warp"], b["truth"], b["boxes"], al = roll_pair(b["warp"], b["truth"], b["boxes"], roll, max_scale=move[0],
                                                          max_shift=move[1], src_al=b.get("src_al"))
        if al is not None:
            b["src_al"] = al
    gain = 1 + (torch.rand(n, 3, 1, 1, device=dev) - 0.5) * 0.2
    gamma = torch.exp((torch.rand(n, 1, 1, 1, device=dev) - 0.5) * 0.446)
    for k in [k for k in COLOURED if k in b]:
        b[k] = (b[k].clamp(min=1e-4) ** gamma * gain).clamp(0, 1)
    return b


def roll_pair(warp: torch.Tensor, truth: torch.Tensor, boxes: torch.Tensor, max_deg: float, p: float = 0.5,
              max_scale: float = 0.0, max_shift: float = 0.0, src_al: Optional[torch.Tensor] = None
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Head roll between the portrait and the driver, which the training clips (each driven from its own first frame)
    hardly have: a random fraction p of the samples get the warp output and the true frame rotated alike by up to
    max_deg degrees about the crop's centre (and, with max_scale / max_shift, zoomed by up to +-max_scale and shifted
    by up to +-max_shift of the crop), while the portrait crop (source) stays as it was. The refiner then has to take
    the portrait as an appearance reference, not as a picture to copy in place (copying in place is what doubles eyes
    and mouths when a driver rolls the head or comes closer). The mouth and eye boxes move with their centres. An aligned
    source (src_al) follows the motion, as it follows the warp's target head at run time; it is returned last."""
    n, dev, r = warp.shape[0], warp.device, warp.shape[-1]
    on = (torch.rand(n, device=dev) < p).float()
    ang = (torch.rand(n, device=dev) * 2 - 1) * math.radians(max_deg) * on
    sc = 1 + (torch.rand(n, device=dev) * 2 - 1) * max_scale * on
    tx = (torch.rand(n, device=dev) * 2 - 1) * max_shift * 2 * on
    ty = (torch.rand(n, device=dev) * 2 - 1) * max_shift * 2 * on
    theta = rotation_theta(ang, sc)
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(warp.shape), align_corners=False)
    warp = F.grid_sample(warp, grid, padding_mode="border", align_corners=False)
    truth = F.grid_sample(truth, grid, padding_mode="border", align_corners=False)
    if src_al is not None:
        src_al = F.grid_sample(src_al, grid, padding_mode="border", align_corners=False)
    # affine_grid maps output to input coordinates: an output point p reads input (R / sc) p + t, so content at input
    # q shows at sc R^-1 (q - t). Box centres (in pixels about the crop centre; t is in half-crops) move so.
    bx = boxes.clone()
    c, s = torch.cos(ang), torch.sin(ang)
    half = r / 2.0
    for j in (0, 4, 8):
        cx = (boxes[:, j] + boxes[:, j + 2]).float() / 2 - half
        cy = (boxes[:, j + 1] + boxes[:, j + 3]).float() / 2 - half
        qx = cx - tx * half
        qy = cy - ty * half
        nx = sc * (c * qx + s * qy)
        ny = sc * (-s * qx + c * qy)
        dx = torch.round(nx - cx).long()
        dy = torch.round(ny - cy).long()
        bx[:, j] = (boxes[:, j] + dx).clamp(0, r)
        bx[:, j + 2] = (boxes[:, j + 2] + dx).clamp(0, r)
        bx[:, j + 1] = (boxes[:, j + 1] + dy).clamp(0, r)
        bx[:, j + 3] = (boxes[:, j + 3] + dy).clamp(0, r)
    return warp, truth, bx, src_al


def augment_drive(d: torch.Tensor, wedges: bool = False) -> torch.Tensor:
    """Against identity leakage: the encoder sees the driver through random scale/rotation/shift, blur, tone, noise.
    wedges: also black wedges and bands over an edge, as rotated and letterboxed videos show."""
    n, dev = d.shape[0], d.device
    ang = (torch.rand(n, device=dev) - 0.5) * 2 * math.radians(8)
    sc = 1 + (torch.rand(n, device=dev) - 0.5) * 0.2
    tx = (torch.rand(n, device=dev) - 0.5) * 0.12
    ty = (torch.rand(n, device=dev) - 0.5) * 0.12
    theta = rotation_theta(ang, sc)
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(d.shape), align_corners=False)
    d = F.grid_sample(d, grid, padding_mode="border", align_corners=False)
    blur = torch.rand(n, device=dev) < 0.5
    if blur.any():
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=dev)
        k = (k[:, None] * k[None, :]) / 256.0
        db = F.conv2d(F.pad(d, (2, 2, 2, 2), mode="replicate"), k[None, None])
        d = torch.where(blur[:, None, None, None], db, d)
    contrast = 1 + (torch.rand(n, 1, 1, 1, device=dev) - 0.5) * 0.6
    bright = (torch.rand(n, 1, 1, 1, device=dev) - 0.5) * 0.3
    mean = d.mean(dim=(2, 3), keepdim=True)
    d = (d - mean) * contrast + mean + bright
    d = d + torch.randn_like(d) * 0.02
    if wedges:
        # Rotated or letterboxed videos: a black wedge or band over one edge of a quarter of the driving crops.
        on = torch.rand(n, device=dev) < 0.25
        ar = (torch.arange(DRIVE, device=dev).float() + 0.5) / DRIVE - 0.5
        yy, xx = torch.meshgrid(ar, ar, indexing="ij")
        phi = torch.rand(n, device=dev) * 2 * math.pi
        off = 0.3 + torch.rand(n, device=dev) * 0.2
        dist = xx[None] * torch.cos(phi)[:, None, None] + yy[None] * torch.sin(phi)[:, None, None]
        black = (dist > off[:, None, None]) & on[:, None, None]
        d = torch.where(black[:, None], torch.zeros_like(d), d)
    return d.clamp(0, 1)


def moved_batch(b: Batch, deg: float, scale: float = 1.0, shift: float = 0.0) -> Batch:
    """A validation batch with its warp and truth rotated by deg, zoomed by scale and shifted by shift of the crop
    along both axes (the region source as it was; an aligned source moves with them): see roll_pair."""
    n, dev = b["warp"].shape[0], b["warp"].device
    ang = torch.full((n,), math.radians(deg), device=dev)
    theta = rotation_theta(ang, torch.full((n,), scale, device=dev))
    theta[:, 0, 2] = shift * 2
    theta[:, 1, 2] = shift * 2
    grid = F.affine_grid(theta, list(b["warp"].shape), align_corners=False)
    out = dict(b)
    out["warp"] = F.grid_sample(b["warp"], grid, padding_mode="border", align_corners=False)
    out["truth"] = F.grid_sample(b["truth"], grid, padding_mode="border", align_corners=False)
    if "src_al" in b:
        # The aligned source follows the head, as at run time; the region source stays.
        out["src_al"] = F.grid_sample(b["src_al"], grid, padding_mode="border", align_corners=False)
    return out
