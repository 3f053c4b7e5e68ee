"""Small tensor geometry shared by the data, the augmentation, the losses and the validation: affine_grid matrices of
a rotation and zoom, and masks of the samples' mouth and eye boxes. Pure functions of tensors."""
from __future__ import annotations

from typing import Optional

import torch


def rotation_theta(ang: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """n x 2 x 3 affine_grid matrices of a rotation by ang (radians) about the centre (and a zoom by 1/scale)."""
    n = ang.shape[0]
    sc = torch.ones_like(ang) if scale is None else scale
    theta = torch.zeros(n, 2, 3, device=ang.device)
    theta[:, 0, 0] = torch.cos(ang) / sc
    theta[:, 0, 1] = -torch.sin(ang) / sc
    theta[:, 1, 0] = torch.sin(ang) / sc
    theta[:, 1, 1] = torch.cos(ang) / sc
    return theta


def box_mask(boxes: torch.Tensor, j: int, r: int) -> torch.Tensor:
    """n x 1 x r x r: 1 inside box j (x0, y0, x1, y1 at boxes[:, j:j + 4]) of each sample. The boxes of a sample are
    12 numbers: the mouth at 0, the eyes at 4 and 8."""
    ar = torch.arange(r, device=boxes.device)[None]
    mx = (ar >= boxes[:, j:j + 1]) & (ar < boxes[:, j + 2:j + 3])
    my = (ar >= boxes[:, j + 1:j + 2]) & (ar < boxes[:, j + 3:j + 4])
    return (my[:, :, None] & mx[:, None, :])[:, None].float()


def eyes_mask(boxes: torch.Tensor, r: int) -> torch.Tensor:
    """n x 1 x r x r: 1 inside either eye box."""
    return torch.maximum(box_mask(boxes, 4, r), box_mask(boxes, 8, r))
