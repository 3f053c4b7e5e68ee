"""The networks: the expression encoder E (driving face -> code) and the refiner F (one InDI step), with InDI
sampling and the networks' sizes. See the package docstring (__init__.py) for the method."""
from __future__ import annotations

import math
from typing import Any, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .constants import CODE, Batch
from .errors import OLD_CACHE, RefinerError


class Encoder(nn.Module):
    """Driving face (grey 64x64, 0..1) -> expression code (CODE numbers)."""

    def __init__(self) -> None:
        super().__init__()
        ch = [1, 16, 32, 64, 64]
        layers: List[nn.Module] = []
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(64 * 4 * 4, CODE)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        # Normalise each face's tone: brightness and contrast are not expression.
        mean = d.mean(dim=(2, 3), keepdim=True)
        std = d.std(dim=(2, 3), keepdim=True) + 1e-3
        h = self.conv((d - mean) / std)
        return self.fc(h.flatten(1))


class FiLMBlock(nn.Module):
    """Residual 3x3 block whose features are scaled and shifted by the condition (code and t)."""

    def __init__(self, ch: int, cond: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.c2 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.film = nn.Linear(cond, 2 * ch)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        g, b = self.film(c).chunk(2, dim=1)
        h = F.leaky_relu(self.c1(x), 0.2)
        h = h * (1 + g[:, :, None, None]) + b[:, :, None, None]
        return x + self.c2(h)


class Refiner(nn.Module):
    """One InDI step: F(x_t, t | warp, source, mask, code) -> the clean frame (x_t + a predicted residual)."""

    def __init__(self, ch: Tuple[int, ...] = (48, 96, 128), shuffle: int = 4) -> None:
        super().__init__()
        # Which source it reads (not a weight): the region as it is, or the aligned source (src_of).
        self.aligned = False
        cond = 64
        self.shuffle = shuffle
        self.cond = nn.Sequential(nn.Linear(CODE + 8, cond), nn.LeakyReLU(0.2), nn.Linear(cond, cond))
        self.stem = nn.Conv2d(10 * shuffle * shuffle, ch[0], 3, 1, 1)
        self.b0 = FiLMBlock(ch[0], cond)
        self.d1 = nn.Conv2d(ch[0], ch[1], 4, 2, 1)
        self.b1 = FiLMBlock(ch[1], cond)
        self.d2 = nn.Conv2d(ch[1], ch[2], 4, 2, 1)
        self.b2 = FiLMBlock(ch[2], cond)
        self.b3 = FiLMBlock(ch[2], cond)
        self.u1 = nn.Conv2d(ch[2] + ch[1], ch[1], 3, 1, 1)
        self.b4 = FiLMBlock(ch[1], cond)
        self.u0 = nn.Conv2d(ch[1] + ch[0], ch[0], 3, 1, 1)
        self.b5 = FiLMBlock(ch[0], cond)
        self.out = nn.Conv2d(ch[0], 3 * shuffle * shuffle, 3, 1, 1)
        # Zero-initialised output: an untrained step returns its input x_t.
        nn.init.zeros_(self.out.weight)
        assert self.out.bias is not None
        nn.init.zeros_(self.out.bias)

    def forward(self, xt: torch.Tensor, warp: torch.Tensor, src: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                code: torch.Tensor) -> torch.Tensor:
        freqs = torch.tensor([1.0, 2.0, 4.0, 8.0], device=t.device)
        temb = torch.cat([torch.sin(t * freqs * math.pi), torch.cos(t * freqs * math.pi)], dim=1)
        c = self.cond(torch.cat([code, temb], dim=1))
        x = torch.cat([xt, warp, src, mask], dim=1) * 2 - 1
        h0 = self.b0(F.leaky_relu(self.stem(F.pixel_unshuffle(x, self.shuffle)), 0.2), c)
        h1 = self.b1(F.leaky_relu(self.d1(h0), 0.2), c)
        h2 = self.b3(self.b2(F.leaky_relu(self.d2(h1), 0.2), c), c)
        u1 = F.interpolate(h2, scale_factor=2, mode="nearest")
        h = self.b4(F.leaky_relu(self.u1(torch.cat([u1, h1], dim=1)), 0.2), c)
        u0 = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.b5(F.leaky_relu(self.u0(torch.cat([u0, h0], dim=1)), 0.2), c)
        return xt + F.pixel_shuffle(self.out(h), self.shuffle)


def src_of(net: nn.Module, b: Batch) -> torch.Tensor:
    """The portrait picture a network reads: the aligned source (net.aligned) or the region as it is."""
    if getattr(net, "aligned", False):
        if "src_al" not in b:
            raise RefinerError(OLD_CACHE, "an aligned-source network needs a version 2 dataset cache (canvas and "
                               "alignments): rebuild it with npm run train, or train with --source region")
        return b["src_al"]
    return b["src"]


def sample(net: nn.Module, b: Batch, code: torch.Tensor, k: int) -> torch.Tensor:
    """InDI sampling from t = 1 (the warp output) in k equal steps: x <- (dt/t) F(x, t) + (1 - dt/t) x."""
    x = b["warp"]
    n = x.shape[0]
    for i in range(k):
        t = 1.0 - i / k
        dt = 1.0 / k
        xh = net(x, b["warp"], src_of(net, b), b["mask"], torch.full((n, 1), t, device=x.device), code)
        x = xh if i == k - 1 else (dt / t) * xh + (1 - dt / t) * x
    return x


def count(m: nn.Module) -> int:
    """Parameters of a network."""
    return sum(p.numel() for p in m.parameters())


def gmacs(net: nn.Module, r: int) -> float:
    """Multiply-adds of one refiner step on one sample (convolutions only: the rest is negligible), in G."""
    total = 0
    hooks = []

    def hook(mod: Any, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(hook))
    dev = next(net.parameters()).device
    z = torch.zeros(1, 3, r, r, device=dev)
    with torch.no_grad():
        net(z, z, z, z[:, :1], torch.ones(1, 1, device=dev), torch.zeros(1, CODE, device=dev))
    for h in hooks:
        h.remove()
    return total / 1e9
