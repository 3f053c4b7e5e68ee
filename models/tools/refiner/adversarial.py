"""The discriminators of the adversarial fine-tune: small spectral-norm patch discriminators, trained from scratch, on
the refiner's face crop at two scales and on the eye and mouth regions (read out of the crop through the samples'
boxes), with the hinge loss; the generator side adds feature matching (the L1 between the discriminators' inner
features of the output and of the truth).

Real and fake differ only where the refiner acts: the real image is the truth inside the paste mask and the warp
outside it, exactly as the engine composes the refiner's output, so a discriminator cannot tell them apart by what the
generator cannot change.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .constants import Batch

SN = nn.utils.spectral_norm
EYE_SIDE = 32  # side of an eye region as the eye discriminator sees it
MOUTH_SIDE = 48
REGION_GROW = 1.6  # a region covers its box grown this much around its centre (the lids, the brow line, the lips)


class PatchD(nn.Module):
    """A PatchGAN: strided 4x4 convolutions (spectral norm, leaky ReLU), a 1-channel map of logits; forward returns the
    inner features too (feature matching)."""

    def __init__(self, widths: Tuple[int, ...]) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        c = 3
        for w in widths:
            layers.append(SN(nn.Conv2d(c, w, 4, 2, 1)))
            c = w
        self.body = nn.ModuleList(layers)
        self.head = SN(nn.Conv2d(c, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        feats = []
        h = x * 2 - 1
        for conv in self.body:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.head(h), feats


def region_grid(boxes: torch.Tensor, j: int, r: int, side: int) -> torch.Tensor:
    """grid_sample grid (n x side x side x 2) of box j (x0, y0, x1, y1 at boxes[:, j:j + 4]) grown by REGION_GROW into a
    square around its centre."""
    b = boxes.float()
    cx, cy = (b[:, j] + b[:, j + 2]) / 2, (b[:, j + 1] + b[:, j + 3]) / 2
    half = torch.maximum(b[:, j + 2] - b[:, j], b[:, j + 3] - b[:, j + 1]).clamp(min=4) * REGION_GROW / 2
    u = (torch.arange(side, device=boxes.device, dtype=torch.float32) + 0.5) / side * 2 - 1  # -1..1 over the region
    gx = cx[:, None] + half[:, None] * u[None]  # n x side, crop pixels
    gy = cy[:, None] + half[:, None] * u[None]
    nx, ny = (gx + 0.5) * 2 / r - 1, (gy + 0.5) * 2 / r - 1
    return torch.stack([nx[:, None, :].expand(-1, side, -1), ny[:, :, None].expand(-1, -1, side)], -1)


def regions(img: torch.Tensor, boxes: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The discriminators' views of a batch: face (the crop), face_half (at half size), eyes (both eyes, the
    image-right one mirrored so that both look alike: 2n samples) and mouth."""
    r = img.shape[-1]

    def read(j: int, side: int) -> torch.Tensor:
        return F.grid_sample(img, region_grid(boxes, j, r, side), mode="bilinear", padding_mode="border",
                             align_corners=False)

    e1, e2 = read(4, EYE_SIDE), read(8, EYE_SIDE)
    left_first = (boxes[:, 4] <= boxes[:, 8])[:, None, None, None]
    a, b = torch.where(left_first, e1, e2), torch.where(left_first, e2, e1)
    return {"face": img, "face_half": F.avg_pool2d(img, 2), "eyes": torch.cat([a, b.flip(-1)]),
            "mouth": read(0, MOUTH_SIDE)}


class Critic(nn.Module):
    """The four discriminators (face at full and half size, eyes, mouth) and their losses."""

    VIEWS = ("face", "face_half", "eyes", "mouth")
    WEIGHT = {"face": 1.0, "face_half": 1.0, "eyes": 1.0, "mouth": 1.0}

    def __init__(self) -> None:
        super().__init__()
        self.nets = nn.ModuleDict({"face": PatchD((32, 64, 128, 128)), "face_half": PatchD((32, 64, 128)),
                                   "eyes": PatchD((32, 64, 96)), "mouth": PatchD((32, 64, 96))})

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The discriminators' hinge loss (fake detached by the caller) and, per view, the mean real and fake logit."""
        vr, vf = regions(real, boxes), regions(fake, boxes)
        total = torch.zeros((), device=real.device)
        stats: Dict[str, float] = {}
        for v in self.VIEWS:
            lr, _ = self.nets[v](vr[v])
            lf, _ = self.nets[v](vf[v])
            total = total + self.WEIGHT[v] * (F.relu(1 - lr).mean() + F.relu(1 + lf).mean())
            stats[v] = float((lr.mean() - lf.mean()).item())
        return total, stats

    def g_losses(self, real: torch.Tensor, fake: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(the generator's hinge loss -D(fake), feature matching), summed over the views with their weights."""
        vr, vf = regions(real, boxes), regions(fake, boxes)
        adv = torch.zeros((), device=real.device)
        fm = torch.zeros((), device=real.device)
        for v in self.VIEWS:
            lf, ff = self.nets[v](vf[v])
            with torch.no_grad():
                _, fr = self.nets[v](vr[v])
            adv = adv - self.WEIGHT[v] * lf.mean()
            fm = fm + self.WEIGHT[v] * torch.stack([(a - b).abs().mean() for a, b in zip(ff, fr)]).mean()
        return adv, fm


def composite(out: torch.Tensor, b: Batch) -> Tuple[torch.Tensor, torch.Tensor]:
    """(fake, real): the output and the truth inside the paste mask, the warp outside it (as the engine pastes)."""
    m = b["mask"]
    return out * m + b["warp"] * (1 - m), b["truth"] * m + b["warp"] * (1 - m)
