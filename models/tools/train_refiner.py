#!/usr/bin/env python3
"""Trains the learned refiner pack: an implicit expression encoder and an InDI-style few-step refiner, then a
distilled student, and exports them to ONNX with a manifest.

Run through `npm run train -- --data ../shared/train` (which first builds the dataset cache with the project's own
tracker and warp: server/learned/dataset.ts). Debian's PyTorch 1.13 on the CPU (torch.set_num_threads(2)).

The method (see models/refiner/MODEL_CARD.md, written by this script):
- Expression encoder E: the driving face, FFHQ-aligned, grey 64x64, augmented against identity leakage (scale,
  rotation, shift, blur, brightness/contrast, noise) -> a 32-number code. It only enters the refiner through FiLM
  (per-channel scale and shift), never as a spatial map, so the driver's face shape cannot be copied.
- Refiner F (InDI, Delbracio and Milanfar 2023): the warp output y is the degraded guess, the true frame x the target.
  Training input x_t = (1 - t) x + t y (t in (0, 1], t = 1 half of the time: the first and, for k = 1, only step);
  F(x_t, t | y, source, paste mask, code) predicts x (as a residual over x_t) with a weighted L1 loss (mouth box x4,
  eye boxes x3, outside the paste mask x0). Sampling from t = 1 in k steps: x <- (dt/t) F(x, t) + (1 - dt/t) x.
  The teacher samples with k = 8 steps.
- Student: a copy of F fine-tuned so that its k-step sample (k drawn from 1, 2, 4 per batch) matches the teacher's
  8-step sample (plus a quarter weight on the truth); the encoder is frozen then.
"""
import argparse
import copy
import hashlib
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import packed_dataset  # noqa: E402

torch.set_num_threads(2)

CODE = 32
DRIVE = 64
TEACHER_STEPS = 8
STUDENT_STEPS = (1, 2, 4)
MOUTH_W = 4.0
EYE_W = 3.0


def log(msg):
    sys.stderr.write(f"train_refiner: {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------------------- data
class Data:
    """All samples in memory (uint8, on the training device), split by clip into train and validation. Read from the
    raw cache that `npm run train` builds, or from its packed form (models/tools/packed_dataset.py) on another
    machine."""

    def __init__(self, cache, clips, val_every, packed=None, device="cpu"):
        self.src, self.mask, canvases, aligns = [], [], [], []
        warp, truth, drive, boxes, owner = [], [], [], [], []
        self.clip_names, self.val_clips = [], []
        self.per_clip, self.strides = [], set()
        size = None
        if packed and clips == ["all"]:
            clips = packed_dataset.clip_names(packed)
        for name in clips:
            c = packed_dataset.read_packed_clip(packed, name) if packed else packed_dataset.read_cache_clip(cache, name)
            if c is None:
                continue  # not cached, or no face in the clip's first frame: no samples
            meta = c["meta"]
            r = meta["size"]
            if size is None:
                size = r
            if r != size:
                raise SystemExit(f"clip {name}: crop size {r} differs from {size}")
            n = len(meta["frames"])
            if n > 1:
                self.strides.add(meta["frames"][1] - meta["frames"][0])
            self.per_clip.append(n)
            ci = len(self.clip_names)
            self.clip_names.append(name)
            # Validation: a fixed subset of clips by name hash (never trained on; used to report, not to tune).
            if int(hashlib.sha1(name.encode()).hexdigest(), 16) % val_every == 0:
                self.val_clips.append(ci)
            self.src.append(torch.from_numpy(np.ascontiguousarray(c["src"])).permute(2, 0, 1))
            self.mask.append(torch.from_numpy(np.ascontiguousarray(c["mask"])).reshape(1, r, r))
            warp.append(torch.from_numpy(np.ascontiguousarray(c["warp"])).permute(0, 3, 1, 2))
            truth.append(torch.from_numpy(np.ascontiguousarray(c["truth"])).permute(0, 3, 1, 2))
            drive.append(torch.from_numpy(np.ascontiguousarray(c["drive"])).reshape(n, 1, DRIVE, DRIVE))
            boxes.append(torch.tensor(meta["boxes"], dtype=torch.int64).reshape(n, 12))
            canvases.append(None if c.get("canvas") is None else torch.from_numpy(np.ascontiguousarray(c["canvas"])).permute(2, 0, 1))
            aligns.append(torch.tensor(meta["align"], dtype=torch.float32).reshape(n, 4) if "align" in meta else None)
            owner.append(torch.full((n,), ci, dtype=torch.int64))
        if not self.clip_names:
            raise SystemExit("no cached clips: run `npm run train -- --data DIR` (it builds the dataset first)")
        dev = torch.device(device)
        self.size = size
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
        self.src_all = torch.stack(self.src).contiguous().to(dev)
        self.mask_all = torch.stack(self.mask).to(dev)
        # The portrait canvases and per-sample alignments of an aligned source (dataset version 2); None for an older
        # cache, which can train region-source networks only.
        have = all(cv is not None for cv in canvases) and all(a is not None for a in aligns)
        self.canvas_all = torch.stack(canvases).contiguous().to(dev) if have else None
        self.align = torch.cat(aligns).to(dev) if have else None
        self.canvas_scale = self.canvas_all.shape[-1] // size if have else 0

    def batch(self, idx, aug=False, roll=0.0, move=(0.0, 0.0)):
        """Samples idx as 0..1 floats. aug (training only): a horizontal flip of every image of half the samples (the
        boxes follow), and one colour change per sample (per-channel gain 0.9-1.1, gamma 0.8-1.25) applied alike to
        the portrait, the warp and the truth, so the refiner learns corrections, not the training people's colours.
        roll (degrees, with aug) and move (scale, shift fractions): see roll_pair."""
        o = self.owner[idx]
        f = lambda t: t.float() / 255.0
        b = {
            "warp": f(self.warp[idx]),
            "truth": f(self.truth[idx]),
            "drive": f(self.drive[idx]),
            "src": f(self.src_all[o]),
            "mask": f(self.mask_all[o]),
            "boxes": self.boxes[idx],
        }
        if self.canvas_all is not None:
            b["src_al"] = aligned_source(f(self.canvas_all[o]), self.align[idx], self.size, self.canvas_scale, jitter=aug)
        if aug:
            n, dev, r = idx.shape[0], idx.device, self.size
            flip = torch.rand(n, device=dev) < 0.5
            for k in ("warp", "truth", "drive", "src", "mask", "src_al"):
                if k not in b:
                    continue
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
            for k in [k for k in ("warp", "truth", "src", "src_al") if k in b]:
                b[k] = (b[k].clamp(min=1e-4) ** gamma * gain).clamp(0, 1)
        return b


def aligned_source(canvas, align, r, cs, jitter=False):
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
    grid = F.affine_grid(theta, (n, 3, r, r), align_corners=False)
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="border", align_corners=False)


def src_of(net, b):
    """The portrait picture a network reads: the aligned source (net.aligned) or the region as it is."""
    if getattr(net, "aligned", False):
        if "src_al" not in b:
            raise SystemExit("an aligned-source network needs a version 2 dataset cache (canvas and alignments): "
                             "rebuild it with npm run train, or train with --source region")
        return b["src_al"]
    return b["src"]


def box_mask(boxes, j, r):
    """n x 1 x r x r: 1 inside box j (x0, y0, x1, y1 at boxes[:, j:j + 4]) of each sample."""
    ar = torch.arange(r, device=boxes.device)[None]
    mx = (ar >= boxes[:, j:j + 1]) & (ar < boxes[:, j + 2:j + 3])
    my = (ar >= boxes[:, j + 1:j + 2]) & (ar < boxes[:, j + 3:j + 4])
    return (my[:, :, None] & mx[:, None, :])[:, None].float()


def rotation_theta(ang, scale=None):
    """n x 2 x 3 affine_grid matrices of a rotation by ang (radians) about the centre (and a zoom by 1/scale)."""
    n = ang.shape[0]
    sc = torch.ones_like(ang) if scale is None else scale
    theta = torch.zeros(n, 2, 3, device=ang.device)
    theta[:, 0, 0] = torch.cos(ang) / sc
    theta[:, 0, 1] = -torch.sin(ang) / sc
    theta[:, 1, 0] = torch.sin(ang) / sc
    theta[:, 1, 1] = torch.cos(ang) / sc
    return theta


def roll_pair(warp, truth, boxes, max_deg, p=0.5, max_scale=0.0, max_shift=0.0, src_al=None):
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
    grid = F.affine_grid(theta, warp.shape, align_corners=False)
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


def weight_map(b):
    """Loss weights: the paste mask (where the refiner can change pixels), x4 in the mouth box, x3 in the eye boxes."""
    r = b["warp"].shape[-1]
    mouth = box_mask(b["boxes"], 0, r)
    eyes = torch.maximum(box_mask(b["boxes"], 4, r), box_mask(b["boxes"], 8, r))
    w = 1 + (MOUTH_W - 1) * mouth
    w = torch.maximum(w, EYE_W * eyes)
    return w * b["mask"]


def augment_drive(d, wedges=False):
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
    grid = F.affine_grid(theta, d.shape, align_corners=False)
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


# --------------------------------------------------------------------------------------------------------- model
class Encoder(nn.Module):
    """Driving face (grey 64x64, 0..1) -> expression code (CODE numbers)."""

    def __init__(self):
        super().__init__()
        ch = [1, 16, 32, 64, 64]
        layers = []
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(64 * 4 * 4, CODE)

    def forward(self, d):
        # Normalise each face's tone: brightness and contrast are not expression.
        mean = d.mean(dim=(2, 3), keepdim=True)
        std = d.std(dim=(2, 3), keepdim=True) + 1e-3
        h = self.conv((d - mean) / std)
        return self.fc(h.flatten(1))


class FiLMBlock(nn.Module):
    """Residual 3x3 block whose features are scaled and shifted by the condition (code and t)."""

    def __init__(self, ch, cond):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.c2 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.film = nn.Linear(cond, 2 * ch)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x, c):
        g, b = self.film(c).chunk(2, dim=1)
        h = F.leaky_relu(self.c1(x), 0.2)
        h = h * (1 + g[:, :, None, None]) + b[:, :, None, None]
        return x + self.c2(h)


class Refiner(nn.Module):
    """One InDI step: F(x_t, t | warp, source, mask, code) -> the clean frame (x_t + a predicted residual)."""

    def __init__(self, ch=(48, 96, 128), shuffle=4):
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
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, xt, warp, src, mask, t, code):
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


def sample(net, b, code, k):
    """InDI sampling from t = 1 (the warp output) in k equal steps."""
    x = b["warp"]
    n = x.shape[0]
    for i in range(k):
        t = 1.0 - i / k
        dt = 1.0 / k
        xh = net(x, b["warp"], src_of(net, b), b["mask"], torch.full((n, 1), t, device=x.device), code)
        x = xh if i == k - 1 else (dt / t) * xh + (1 - dt / t) * x
    return x


def wl1(a, b, w):
    return ((a - b).abs() * w).sum() / (w.sum() * 3 + 1e-6)


# ------------------------------------------------------------------------------------------------------ training
def save(path, **state):
    tmp = path + ".partial"
    torch.save(state, tmp)
    os.replace(tmp, path)


def amp(dev):
    """bf16 autocast on a GPU (the loss and the weights stay float32); nothing on the CPU."""
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


def lr_at(args, frac, step):
    """Linear warm-up over args.warmup steps, then cosine decay over the time budget down to 10%."""
    warm = min(1.0, (step + 1) / max(1, args.warmup))
    return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def optimise(tag, data, args, minutes, opt, params, modules, ckpt, batch_loss, log_every, schedule=True, val=None):
    """The training loop shared by the teacher, the student and the fine-tune: batches until `minutes` of wall time
    (counting a resumed run's time), gradient clipping at 1, the warm-up + cosine learning rate when `schedule`, a log
    line every `log_every` steps, `val()` (a progress string) every --val-seconds, and a checkpoint of `modules` (name
    -> module) and the optimiser every 2 minutes and at the end, from which a stopped run resumes (not with --fresh)."""
    dev = data.warp.device
    step, elapsed = 0, 0.0
    if os.path.exists(ckpt) and not args.fresh:
        st = torch.load(ckpt, map_location=dev)
        for k, m in modules.items():
            m.load_state_dict(st[k])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        log(f"{tag}: resumed at step {step} ({elapsed / 60:.1f} min)")
    budget = minutes * 60
    last_save = last_val = time.time()
    t_start = time.time() - elapsed
    loss_sum, loss_n = torch.zeros((), device=dev), 0

    def checkpoint():
        save(ckpt, **{k: m.state_dict() for k, m in modules.items()}, opt=opt.state_dict(), step=step, elapsed=time.time() - t_start)

    while time.time() - t_start < budget:
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if schedule:
            frac = min(1.0, (time.time() - t_start) / budget)
            for g in opt.param_groups:
                g["lr"] = lr_at(args, frac, step)
        opt.step()
        step += 1
        loss_sum += loss.detach()
        loss_n += 1
        if step % log_every == 0:
            log(f"{tag}: step {step}, {(time.time() - t_start) / 60:.1f}/{minutes} min, loss {loss_sum.item() / loss_n:.5f}")
            loss_sum, loss_n = torch.zeros((), device=dev), 0
        if val and args.val_seconds and time.time() - last_val > args.val_seconds:
            log(f"{tag}: step {step}, {val()}")
            last_val = time.time()
        if time.time() - last_save > 120:
            checkpoint()
            last_save = time.time()
    checkpoint()
    return step, time.time() - t_start


def train_teacher(data, enc, net, args, ckpt):
    dev = data.warp.device
    params = list(enc.parameters()) + list(net.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)

    def batch_loss():
        idx = data.train_idx[torch.randint(len(data.train_idx), (args.batch,), device=dev)]
        b = data.batch(idx, aug=args.augment)
        n = idx.shape[0]
        t = torch.where(torch.rand(n, 1, device=dev) < 0.5, torch.ones(n, 1, device=dev), torch.rand(n, 1, device=dev).clamp(min=0.02))
        xt = (1 - t[:, :, None, None]) * b["truth"] + t[:, :, None, None] * b["warp"]
        xt = xt + torch.randn_like(xt) * 0.01 * t[:, :, None, None]
        with amp(dev):
            code = enc(augment_drive(b["drive"]))
            pred = net(xt, b["warp"], src_of(net, b), b["mask"], t, code)
        return wl1(pred.float(), b["truth"], weight_map(b))

    return optimise("teacher", data, args, args.minutes, opt, params, {"enc": enc, "net": net}, ckpt, batch_loss,
                    args.log_every, val=lambda: f"validation l1 (k = 1) {quick_val(data, enc, net):.5f}")


@torch.no_grad()
def quick_val(data, enc, net, roll=False):
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


def train_student(data, enc, teacher, student, args, ckpt):
    dev = data.warp.device
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr * 0.5, weight_decay=1e-4)
    bs = max(2, args.batch // 2)

    def batch_loss():
        idx = data.train_idx[torch.randint(len(data.train_idx), (bs,), device=dev)]
        b = data.batch(idx, aug=args.augment)
        with torch.no_grad(), amp(dev):
            code = enc(b["drive"])
            target = sample(teacher, b, code, TEACHER_STEPS).float()
        code = code.float()
        k = random.choice(args.student_draw)
        with amp(dev):
            out = sample(student, b, code, k)
        out = out.float()
        w = weight_map(b)
        return wl1(out, target, w) + 0.25 * wl1(out, b["truth"], w)

    return optimise("student", data, args, args.student_minutes, opt, list(student.parameters()), {"net": student}, ckpt,
                    batch_loss, max(1, args.log_every // 2), schedule=False)


def finetune_student(data, enc, student, args, ckpt):
    """Fine-tunes a trained student (the encoder and the teacher stay frozen) on the truth directly: its k-step sample
    (k drawn from --student-k) against the true frame with the same weighted L1, every sample augmented (flip,
    colour, --roll head roll between portrait and driver, black wedges over the driving crop's edges). For a pack
    whose student was distilled elsewhere (--finetune-from): a few CPU minutes teach it what its data lacked."""
    dev = data.warp.device
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)

    def batch_loss():
        idx = data.train_idx[torch.randint(len(data.train_idx), (args.batch,), device=dev)]
        b = data.batch(idx, aug=True, roll=args.roll, move=(args.scale, args.shift))
        with torch.no_grad(), amp(dev):
            code = enc(augment_drive(b["drive"], wedges=args.wedges)).float()
        k = random.choice(args.student_draw)
        with amp(dev):
            out = sample(student, b, code, k)
        return wl1(out.float(), b["truth"], weight_map(b))

    return optimise("fine-tune", data, args, args.finetune_minutes, opt, params, {"net": student}, ckpt, batch_loss,
                    args.log_every, val=lambda: f"validation l1 (k = 1) {quick_val(data, enc, student):.5f}, "
                    f"rolled {quick_val(data, enc, student, roll=True):.5f}")


def load_pack_weights(pack_dir, enc, teacher, student):
    """The weights of an exported pack, read back from its ONNX initializers (the export keeps the parameter names:
    enc.* in encoder.onnx, net.* in refiner.onnx and refiner_teacher.onnx). Every parameter must be there."""
    import onnx
    from onnx import numpy_helper

    manifest = json.load(open(os.path.join(pack_dir, "manifest.json")))
    for f in manifest.get("files", []):
        if f.get("role") in ("refiner", "refiner_teacher"):
            (student if f["role"] == "refiner" else teacher).aligned = f.get("source") == "aligned"
    for fname, pre, m in (("encoder.onnx", "enc.", enc), ("refiner.onnx", "net.", student), ("refiner_teacher.onnx", "net.", teacher)):
        g = onnx.load(os.path.join(pack_dir, fname)).graph
        arrays = {i.name[len(pre):]: numpy_helper.to_array(i) for i in g.initializer if i.name.startswith(pre)}
        want = m.state_dict()
        # The exporter keeps one copy of bitwise-equal parameters (an untrained, zero-initialised layer equals its twin)
        # and passes it on under the other's name through an Identity node.
        alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and len(n.input) == 1}
        for k in [k for k in want if k not in arrays]:
            name = pre + k
            for _ in range(8):
                name = alias.get(name, name)
            if name.startswith(pre) and name[len(pre):] in arrays:
                arrays[k] = arrays[name[len(pre):]]
        missing = [k for k in want if k not in arrays]
        if missing:
            raise SystemExit(f"{pack_dir}/{fname}: no weights for {', '.join(missing[:5])}")
        m.load_state_dict({k: torch.from_numpy(np.array(arrays[k], dtype=np.float32)).reshape(want[k].shape) for k in want})


# The rolled validation: (roll degrees, zoom, shift), fixed so that runs compare.
ROLL_VAL = tuple((deg, 1.0, 0.0) for deg in (-12.0, -6.0, 6.0, 12.0))


# The moved validation: (roll degrees, zoom, shift as a fraction of the crop) of the warp and truth against the portrait.
MOVE_VAL = ((0.0, 0.9, 0.0), (0.0, 1.1, 0.0), (0.0, 1.0, 0.06), (0.0, 1.0, -0.06))


def moved_batch(b, deg, scale=1.0, shift=0.0):
    """A validation batch with its warp and truth rotated by deg, zoomed by scale and shifted by shift of the crop
    along both axes (the region source as it was; an aligned source moves with them): see roll_pair."""
    n, dev = b["warp"].shape[0], b["warp"].device
    ang = torch.full((n,), math.radians(deg), device=dev)
    theta = rotation_theta(ang, torch.full((n,), scale, device=dev))
    theta[:, 0, 2] = shift * 2
    theta[:, 1, 2] = shift * 2
    grid = F.affine_grid(theta, b["warp"].shape, align_corners=False)
    out = dict(b)
    out["warp"] = F.grid_sample(b["warp"], grid, padding_mode="border", align_corners=False)
    out["truth"] = F.grid_sample(b["truth"], grid, padding_mode="border", align_corners=False)
    if "src_al" in b:
        # The aligned source follows the head, as at run time; the region source stays.
        out["src_al"] = F.grid_sample(b["src_al"], grid, padding_mode="border", align_corners=False)
    return out


@torch.no_grad()
def validate(data, enc, teacher, student):
    """L1 inside the paste mask (and in the mouth / eye boxes) on the validation clips: warp vs every k."""
    idx = data.val_idx
    res = {}
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
        mouth = box_mask(b["boxes"], 0, r)
        eyes = torch.maximum(box_mask(b["boxes"], 4, r), box_mask(b["boxes"], 8, r))
        regions = [m, m * mouth, m * eyes]
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


# -------------------------------------------------------------------------------------------------------- export
class EncoderExport(nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, drive):
        return self.enc(drive)


class StepExport(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, xt, warp, source, mask, t, code):
        return self.net(xt, warp, source, mask, t, code)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def export(enc, teacher, student, out_dir, size, residual="paste"):
    os.makedirs(out_dir, exist_ok=True)
    r = size
    files = []
    enc.eval()
    torch.onnx.export(EncoderExport(enc), (torch.zeros(1, 1, DRIVE, DRIVE),), os.path.join(out_dir, "encoder.onnx"),
                      input_names=["drive"], output_names=["code"], opset_version=16)
    files.append(("encoder.onnx", "encoder", [("drive", [1, 1, DRIVE, DRIVE])], [("code", [1, CODE])]))
    step_inputs = [("xt", [1, 3, r, r]), ("warp", [1, 3, r, r]), ("source", [1, 3, r, r]), ("mask", [1, 1, r, r]), ("t", [1, 1]), ("code", [1, CODE])]
    dummy = tuple(torch.zeros(*s) for _, s in step_inputs)
    for name, role, net in (("refiner.onnx", "refiner", student), ("refiner_teacher.onnx", "refiner_teacher", teacher)):
        net.eval()
        torch.onnx.export(StepExport(net), dummy, os.path.join(out_dir, name), input_names=[n for n, _ in step_inputs],
                          output_names=["x0"], opset_version=16)
        files.append((name, role, step_inputs, [("x0", [1, 3, r, r])], "aligned" if net.aligned else "region"))
    return [
        {
            "path": p,
            "role": role,
            "sha256": sha256(os.path.join(out_dir, p)),
            "inputs": [{"name": n, "dtype": "float32", "shape": s} for n, s in ins],
            "outputs": [{"name": n, "dtype": "float32", "shape": s} for n, s in outs],
            **({"source": src[0]} if src else {}),
            **({"residual": residual} if role == "refiner" and residual != "paste" else {}),
        }
        for p, role, ins, outs, *src in files
    ]


def finetune_text(tr):
    f = tr.get("finetune")
    if not f:
        return ""
    return (f"**Fine-tune:** the student above was then fine-tuned on the truth (`--finetune-from {f['from']}`; encoder "
            f"and teacher frozen) for {f['steps']} steps of batch {f['batch']} in {f['minutes']} min on {f['hardware']} "
            f"(lr {f['lr']}, k drawn from {f['k_drawn']}), every sample augmented: flip, colour, head roll of up to "
            f"{f['roll_deg']:g} degrees between portrait and driver for half of them"
            f"{(' with a zoom of up to +-%g and a shift of up to +-%g of the crop' % (f.get('scale', 0), f.get('shift', 0))) if f.get('scale') or f.get('shift') else ''}"
            f"{', black wedges over the driving crop' if f['wedges'] else ''}"
            f"{'; the student now reads the aligned source (the portrait region moved onto the warp target head each frame, with a small random jitter)' if f.get('source') == 'aligned' else ''}"
            f". Validation before it: student k = 1 L1 "
            f"{(tr.get('prior_validation') or {}).get('student_k1', {}).get('l1', float('nan')):.5f}.\n\n")


def write_card(out_dir, tr, steps):
    """MODEL_CARD.md: what the pack is, what it was trained on, how, and its validation scores. The held-out scores
    (the shared evaluation clips, never trained or tuned on) are measured by `npm run bench -- quality` and added
    under "Held-out scores" by whoever runs it; this part is regenerated on every training run."""
    v = tr["validation"]
    f5 = lambda x: "-" if x is None else f"{x:.5f}"
    rows = "\n".join(
        f"| {k} | {f5(v[k]['l1'])} | {f5(v[k]['mouth_l1'])} | {f5(v[k]['eyes_l1'])} |" for k in v
    ) or "| (no validation clips) | | | |"
    card = f"""# Refiner pack: model card (generated by models/tools/train_refiner.py)

**What:** the learned part of the default engine. An expression encoder reads the driving face (FFHQ-aligned from the
tracker's 68 landmarks, grey 64x64) and outputs a {CODE}-number expression code; a refiner turns the warp output
(the default engine's landmark warp) into the real frame inside the paste region, resampled to {tr["crop"]}x{tr["crop"]}.
Method: InDI (Delbracio and Milanfar, 2023) from the warped image: x_t = (1 - t) x + t y between the true frame x and
the warp y; the network predicts x from (x_t, t, y, the portrait's region, the paste mask) with the code entering only
through FiLM (per-channel scale and shift at every scale, never as a spatial map). Source picture: the student reads
the portrait's region {"moved each frame onto the warp's target head (the least-squares similarity of the head ring, nose and eye corners; the manifest says source aligned)" if tr.get("source", {}).get("student") == "aligned" else "as it is"}, the teacher {"the same" if tr.get("source", {}).get("student") == tr.get("source", {}).get("teacher") else ("the region as it is" if tr.get("source", {}).get("teacher", "region") == "region" else "the aligned region")}.{" The engine keeps the student's change to the warp around the eyes and the mouth only (manifest residual features; the validation rows below are over the whole paste region)." if tr.get("residual") == "features" else ""} The teacher samples in
{tr["student"]["teacher_steps"]} steps from t = 1; the student (refiner.onnx) is the teacher distilled to match its
{tr["student"]["teacher_steps"]}-step output in k = 1, 2 or 4 steps (k drawn per batch), plus a quarter-weight L1 to
the truth. Default steps in manifest.json: {steps} (the cheapest k within 1% of the student's best k on the validation clips).

**Architecture:** encoder {tr["parameters"]["encoder"]:,} parameters (4 strided 4x4 convs, 16-64 channels, linear to
{CODE}); refiner {tr["parameters"]["refiner"]:,} parameters (pixel-unshuffle x4 of the {tr["crop"]}x{tr["crop"]} inputs, a
U-Net at 1/4, 1/8 and 1/16 of the crop with {"/".join(str(c) for c in tr.get("channels", [48, 96, 128]))} channels, residual 3x3 blocks with FiLM, pixel-shuffle x4 back;
predicts a residual over x_t; ~{tr.get("gmac_per_step", 0.45):.2f} G multiply-adds per step). One ONNX graph per step (opset 16); the engine runs
the step loop.

**Data:** {tr["clips"]} talking-face clips of ../shared/train (see its MANIFEST.md: public repositories of
talking-head and portrait-animation projects; identities disjoint from the evaluation clips of ../shared/media),
{tr["samples"]} samples (self-reenactment: the clip's first frame is the portrait, later frames at a stride of {"/".join(str(x) for x in tr.get("stride", [2]))} drive the
project's own warp; at most {tr.get("max_samples_per_clip", 120)} per clip), of which {tr["validation_samples"]} from {len(tr["validation_clips"])}
validation clips ({", ".join(tr["validation_clips"]) or "none"}) were never trained on. Augmentation of the encoder's
input against identity leakage: random scale (+-10%), rotation (+-8 deg), shift, blur, contrast, brightness, noise; the
encoder also normalises each face's mean and contrast.{" Augmentation of every sample: a horizontal flip of half of them (all images, boxes alike) and one colour change each (per-channel gain 0.9-1.1, gamma 0.8-1.25) on portrait, warp and truth alike." if tr.get("augment") else ""} None of the data, frames or caches are in the repository.

**Training:** `npm run train -- --data ../shared/train` (dataset cache and checkpoints in ~/.cache/live-avatar/refiner;
resumable). Teacher {tr["teacher"]["steps"]} steps of batch {tr["teacher"]["batch"]} in {tr["teacher"]["minutes"]} min
(AdamW, lr {tr["teacher"]["lr"]}, cosine decay, weighted L1: mouth box x{MOUTH_W:g}, eye boxes x{EYE_W:g}, zero
outside the paste mask); student {tr["student"]["steps"]} steps of batch {max(2, tr["teacher"]["batch"] // 2)} in {tr["student"]["minutes"]} min. Hardware:
{tr["hardware"]}{"" if "GPU" in tr["hardware"] else ", a shared 2-core VM, no GPU"}. Seed {tr["seed"]}. Wall time of the training script {tr["wall_minutes"]} min.{(" Exported to ONNX and validated again on " + tr["exported_on"] + " (the table below).") if tr.get("exported_on") else ""}

{finetune_text(tr)}**Validation** (the validation clips above; L1 of 0..1 RGB inside the paste mask, and in the mouth and eye boxes;
"(rolled)": the same clips with the warp output and the truth rotated by -12, -6, 6 and 12 degrees, a region source
upright (an aligned source turns with them, as it follows the warp's head at run time); "(moved)": zoomed by 0.9 and 1.1
and shifted by +-6% of the crop instead):

| output | l1 | mouth_l1 | eyes_l1 |
| --- | --- | --- | --- |
{rows}

**License and use:** the weights and code are this project's (MIT); the training clips are third-party content for
internal research use (several non-commercial), so treat the weights as research-only.
"""
    path = os.path.join(out_dir, "MODEL_CARD.md")
    # Keep the held-out section (measured separately, see above) across retraining; it says which run it measured.
    if os.path.exists(path):
        old = open(path).read()
        found = [j for j in (old.find("## How this pack was made"), old.find("## Held-out scores")) if j >= 0]
        if found:
            card += "\n" + old[min(found):]
    with open(path, "w") as f:
        f.write(card)


def gmacs(net, r):
    """Multiply-adds of one refiner step on one sample (convolutions only: the rest is negligible), in G."""
    total = 0
    hooks = []

    def hook(mod, inp, out):
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


def count(m):
    return sum(p.numel() for p in m.parameters())


def _teacher_path(path):
    return path[:-4] + ".teacher.npz" if path.endswith(".npz") else path + ".teacher.npz"


def save_weights(path, enc, teacher, student):
    """The three networks' weights as plain float32 arrays: portable between PyTorch versions and machines (a run on
    a lent GPU hands its weights back to this machine's exporter). Two files, so that each stays small: PATH (encoder
    and student) and PATH.teacher.npz."""
    for p, parts in ((path, (("enc.", enc), ("student.", student))), (_teacher_path(path), (("teacher.", teacher),))):
        arrays = {}
        for pre, m in parts:
            for k, v in m.state_dict().items():
                arrays[pre + k] = v.detach().float().cpu().numpy()
        np.savez(p, **arrays)


def load_weights(path, enc, teacher, student):
    for p, parts in ((path, (("enc.", enc), ("student.", student))), (_teacher_path(path), (("teacher.", teacher),))):
        z = np.load(p)
        for pre, m in parts:
            m.load_state_dict({k[len(pre):]: torch.from_numpy(z[k]) for k in z.files if k.startswith(pre)})


def hardware(dev):
    if dev.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, bf16 autocast"
    return f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True, help="the dataset cache (and checkpoints/ inside it)")
    ap.add_argument("--packed", help="read the samples from this packed folder (packed_dataset.py) instead of --cache")
    ap.add_argument("--out", required=True)
    ap.add_argument("--clips", required=True, help="comma-separated clip names (cache file stems), or 'all' with --packed")
    ap.add_argument("--minutes", type=float, default=40)
    ap.add_argument("--student-minutes", type=float, default=10)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=0, help="linear learning-rate warm-up steps")
    ap.add_argument("--augment", action="store_true", help="flip and colour augmentation of the samples")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--channels", default="48,96,128", help="the refiner U-Net's widths at 1/4, 1/8 and 1/16 of the crop")
    ap.add_argument("--student-k", default="1,2,4", help="the k drawn (uniformly from this list, repeats weigh more) for each student batch")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--val-seconds", type=float, default=0, help="log the validation L1 (k = 1) this often (0: never)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--val-every", type=int, default=8, help="one clip in N (by name hash) is kept for validation")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--save-weights", help="also write the trained weights here (.npz) and training.json beside them")
    ap.add_argument("--from-weights", help="skip training: load these weights (.npz from --save-weights, with its "
                    "training.json beside it), validate and export")
    ap.add_argument("--finetune-from", help="skip the teacher and the distillation: take this exported pack's weights "
                    "(its ONNX files and training.json) and fine-tune its student on the truth for --finetune-minutes")
    ap.add_argument("--finetune-minutes", type=float, default=60)
    ap.add_argument("--roll", type=float, default=0, help="fine-tune: head roll (degrees, up to) between portrait and "
                    "driver for half the samples (0: none)")
    ap.add_argument("--wedges", action="store_true", help="fine-tune: black wedges over the driving crop's edges")
    ap.add_argument("--scale", type=float, default=0, help="fine-tune: with --roll's samples, a zoom of up to +-this "
                    "fraction between portrait and driver")
    ap.add_argument("--source", choices=["aligned", "region"], default="aligned", help="the portrait picture the networks "
                    "trained here read: 'aligned' (the portrait's region moved onto the warp's target head each frame; "
                    "needs a version 2 dataset cache) or 'region' (as it is). A fine-tune sets the student's only")
    ap.add_argument("--residual", choices=["paste", "features"], default="paste", help="where the engine keeps the "
                    "student's change to the warp: the whole paste region, or around the eyes and the mouth only (a "
                    "run-time choice written into the manifest; the validation rows here are the whole region's)")
    ap.add_argument("--shift", type=float, default=0, help="fine-tune: with --roll's samples, a shift of up to +-this "
                    "fraction of the crop between portrait and driver")
    args = ap.parse_args()
    args.student_draw = [int(k) for k in args.student_k.split(",")]
    if not args.student_draw or any(k not in STUDENT_STEPS for k in args.student_draw):
        raise SystemExit(f"--student-k: each k must be one of {STUDENT_STEPS}")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t0 = time.time()
    data = Data(args.cache, [c for c in args.clips.split(",") if c], args.val_every, packed=args.packed, device=dev)
    if args.source == "aligned" and data.canvas_all is None and not args.from_weights:
        raise SystemExit("--source aligned needs a version 2 dataset cache (portrait canvas and per-sample alignments); "
                         "this cache is older: rebuild it (npm run train rebuilds outdated clips) or pass --source region")
    log(f"data: {len(data.clip_names)} clips, {len(data.train_idx)} train / {len(data.val_idx)} validation samples, crop {data.size}, on {dev}")
    ch = tuple(int(c) for c in args.channels.split(","))
    if args.from_weights and args.finetune_from:
        raise SystemExit("--from-weights and --finetune-from: one or the other")
    if args.from_weights or args.finetune_from:
        base = os.path.dirname(os.path.abspath(args.from_weights)) if args.from_weights else args.finetune_from
        if args.finetune_from and not all(os.path.exists(os.path.join(base, f)) for f in ("training.json", "encoder.onnx", "refiner.onnx", "refiner_teacher.onnx")):
            raise SystemExit(f"--finetune-from {base}: not an exported refiner pack (no training.json, encoder.onnx, "
                             "refiner.onnx and refiner_teacher.onnx there)")
        prior = json.load(open(os.path.join(base, "training.json")))
        ch = tuple(prior.get("channels", ch))
    enc, teacher = Encoder().to(dev), Refiner(ch).to(dev)
    log(f"encoder {count(enc)} parameters, refiner {count(teacher)} parameters")
    if args.from_weights:
        student = Refiner(ch).to(dev)
        load_weights(args.from_weights, enc, teacher, student)
        src = prior.get("source", {})
        student.aligned, teacher.aligned = src.get("student") == "aligned", src.get("teacher") == "aligned"
        t_steps, t_time = prior["teacher"]["steps"], prior["teacher"]["minutes"] * 60
        s_steps, s_time = prior["student"]["steps"], prior["student"]["minutes"] * 60
        trained_on, train_wall = prior["hardware"], prior["wall_minutes"]
        batch, lr = prior["teacher"]["batch"], prior["teacher"]["lr"]
        log(f"weights from {args.from_weights} (trained on {trained_on})")
    elif args.finetune_from:
        student = Refiner(ch).to(dev)
        load_pack_weights(args.finetune_from, enc, teacher, student)
        if student.aligned != (args.source == "aligned"):
            log(f"fine-tune: the student's source changes from {'aligned' if student.aligned else 'region'} to {args.source}")
        student.aligned = args.source == "aligned"
        for m in (enc, teacher):
            for p in m.parameters():
                p.requires_grad_(False)
        t_steps, t_time = prior["teacher"]["steps"], prior["teacher"]["minutes"] * 60
        s_steps, s_time = prior["student"]["steps"], prior["student"]["minutes"] * 60
        batch, lr = prior["teacher"]["batch"], prior["teacher"]["lr"]
        log(f"fine-tuning the student of {args.finetune_from} (trained on {prior['hardware']}) for {args.finetune_minutes} min")
        ck = os.path.join(args.cache, "checkpoints")
        os.makedirs(ck, exist_ok=True)
        f_steps, f_time = finetune_student(data, enc, student, args, os.path.join(ck, "finetune.pt"))
        trained_on, train_wall = prior["hardware"], prior["wall_minutes"]
    else:
        ck = os.path.join(args.cache, "checkpoints")
        os.makedirs(ck, exist_ok=True)
        teacher.aligned = args.source == "aligned"
        t_steps, t_time = train_teacher(data, enc, teacher, args, os.path.join(ck, "teacher.pt"))
        student = copy.deepcopy(teacher)
        for p in enc.parameters():
            p.requires_grad_(False)
        for p in teacher.parameters():
            p.requires_grad_(False)
        s_steps, s_time = train_student(data, enc, teacher, student, args, os.path.join(ck, "student.pt"))
        trained_on, train_wall = hardware(dev), round((time.time() - t0) / 60, 1)
        batch, lr = args.batch, args.lr
    for m in (enc, teacher, student):
        m.eval()
    val = validate(data, enc, teacher, student)
    for k, v in val.items():
        log(f"validation {k}: " + ", ".join(f"{m} {v[m]:.5f}" for m in ("l1", "mouth_l1", "eyes_l1") if v[m] is not None))
    n_frames = int(len(data.owner))
    training = {
        "clips": len(data.clip_names),
        "validation_clips": [data.clip_names[i] for i in data.val_clips],
        "train_samples": int(len(data.train_idx)),
        "validation_samples": int(len(data.val_idx)),
        "samples": n_frames,
        "max_samples_per_clip": max(data.per_clip),
        "stride": sorted(data.strides),
        "crop": data.size,
        "teacher": {"steps": t_steps, "minutes": round(t_time / 60, 1), "batch": batch, "lr": lr},
        "student": {"steps": s_steps, "minutes": round(s_time / 60, 1), "k": list(STUDENT_STEPS), "teacher_steps": TEACHER_STEPS,
                    "k_drawn": prior["student"].get("k_drawn", list(STUDENT_STEPS)) if args.from_weights or args.finetune_from else args.student_draw},
        "augment": bool(args.augment) if not (args.from_weights or args.finetune_from) else prior.get("augment", False),
        "parameters": {"encoder": count(enc), "refiner": count(student)},
        "channels": list(ch),
        "residual": args.residual,
        "source": {"student": "aligned" if student.aligned else "region", "teacher": "aligned" if teacher.aligned else "region"},
        "gmac_per_step": round(gmacs(student, data.size), 3),
        "seed": args.seed,
        "hardware": trained_on,
        "wall_minutes": train_wall,
        "validation": val,
    }
    if args.from_weights:
        training["validation_on_training_machine"] = prior.get("validation")
        training["exported_on"] = hardware(dev)
    if args.finetune_from:
        for k in ("validation_on_training_machine", "exported_on"):
            if k in prior:
                training[k] = prior[k]
        training["prior_validation"] = prior.get("validation")
        training["finetune"] = {
            "from": os.path.basename(os.path.abspath(args.finetune_from)),
            "steps": f_steps, "minutes": round(f_time / 60, 1), "batch": args.batch, "lr": args.lr,
            "k_drawn": args.student_draw, "source": args.source, "roll_deg": args.roll, "scale": args.scale, "shift": args.shift, "wedges": bool(args.wedges),
            "hardware": hardware(dev), "wall_minutes": round((time.time() - t0) / 60, 1),
        }
    if args.save_weights:
        save_weights(args.save_weights, enc, teacher, student)
        with open(os.path.join(os.path.dirname(os.path.abspath(args.save_weights)), "training.json"), "w") as f:
            json.dump(training, f, indent=2)
        log(f"weights saved to {args.save_weights}")
        if not args.out or args.out == "-":
            return
    enc, teacher, student = enc.cpu(), teacher.cpu(), student.cpu()
    files = export(enc, teacher, student, args.out, data.size, args.residual)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(training, f, indent=2)
    # The default k: the cheapest k whose student L1 on the validation clips (part of the training data, never the
    # held-out evaluation clips) is within 1% of the student's best k: each step costs engine time on every frame.
    steps = STUDENT_STEPS[0]
    if val:
        best = min(val[f"student_k{k}"]["l1"] for k in STUDENT_STEPS)
        steps = min(k for k in STUDENT_STEPS if val[f"student_k{k}"]["l1"] <= best * 1.01)
    manifest = {
        "name": "refiner",
        "version": "0.1.0",
        "license": "MIT (weights and code of this project); trained on third-party clips for internal research use, see MODEL_CARD.md",
        "description": "Learned refiner for the default engine: an expression encoder (driving face, grey 64x64 -> code) and an InDI few-step refiner of the warp output in the paste region (student: refiner.onnx, distilled for k = 1, 2, 4; teacher: refiner_teacher.onnx, 8 steps). One graph per step; the engine runs the step loop.",
        "resolution": data.size,
        "steps": steps,
        "files": files,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    write_card(args.out, training, steps)
    log(f"exported {', '.join(f['path'] for f in files)} and manifest.json (steps {steps}) to {args.out}")


if __name__ == "__main__":
    main()
