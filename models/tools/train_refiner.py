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
    """All cached samples in memory (uint8), split by clip into train and validation."""

    def __init__(self, cache, clips, val_every):
        self.src, self.mask = [], []
        warp, truth, drive, boxes, owner = [], [], [], [], []
        self.clip_names, self.val_clips = [], []
        size = None
        for name in clips:
            mp = os.path.join(cache, name + ".json")
            if not os.path.exists(mp):
                continue
            meta = json.load(open(mp))
            r = meta["size"]
            if size is None:
                size = r
            if r != size:
                raise SystemExit(f"clip {name}: crop size {r} differs from {size}")
            n = len(meta["frames"])
            if n == 0:
                continue  # no face in the clip's first frame: no samples
            raw = np.fromfile(os.path.join(cache, name + ".bin"), dtype=np.uint8)
            rr3 = r * r * 3
            per = 2 * rr3 + DRIVE * DRIVE
            if raw.size != rr3 + r * r + n * per:
                raise SystemExit(f"clip {name}: cache file has {raw.size} bytes, expected {rr3 + r * r + n * per}")
            ci = len(self.clip_names)
            self.clip_names.append(name)
            # Validation: a fixed subset of clips by name hash (never trained on; used to report, not to tune).
            if int(hashlib.sha1(name.encode()).hexdigest(), 16) % val_every == 0:
                self.val_clips.append(ci)
            self.src.append(torch.from_numpy(raw[:rr3].reshape(r, r, 3).copy()).permute(2, 0, 1))
            self.mask.append(torch.from_numpy(raw[rr3:rr3 + r * r].reshape(1, r, r).copy()))
            body = raw[rr3 + r * r:].reshape(n, per)
            warp.append(torch.from_numpy(body[:, :rr3].reshape(n, r, r, 3).copy()).permute(0, 3, 1, 2))
            truth.append(torch.from_numpy(body[:, rr3:2 * rr3].reshape(n, r, r, 3).copy()).permute(0, 3, 1, 2))
            drive.append(torch.from_numpy(body[:, 2 * rr3:].reshape(n, 1, DRIVE, DRIVE).copy()))
            boxes.append(torch.tensor(meta["boxes"], dtype=torch.int32).reshape(n, 12))
            owner.append(torch.full((n,), ci, dtype=torch.int64))
        if not self.clip_names:
            raise SystemExit("no cached clips: run `npm run train -- --data DIR` (it builds the dataset first)")
        self.size = size
        self.warp = torch.cat(warp)
        self.truth = torch.cat(truth)
        self.drive = torch.cat(drive)
        self.boxes = torch.cat(boxes)
        self.owner = torch.cat(owner)
        val = torch.tensor([o.item() in self.val_clips for o in self.owner])
        self.val_idx = torch.nonzero(val).flatten()
        self.train_idx = torch.nonzero(~val).flatten()
        if len(self.train_idx) == 0:
            self.train_idx = self.val_idx
        self.src_all = torch.stack(self.src)
        self.mask_all = torch.stack(self.mask)

    def batch(self, idx):
        o = self.owner[idx]
        f = lambda t: t.float() / 255.0
        return {
            "warp": f(self.warp[idx]),
            "truth": f(self.truth[idx]),
            "drive": f(self.drive[idx]),
            "src": f(self.src_all[o]),
            "mask": f(self.mask_all[o]),
            "boxes": self.boxes[idx],
        }


def weight_map(b):
    """Loss weights: the paste mask (where the refiner can change pixels), x4 in the mouth box, x3 in the eye boxes."""
    n, _, r, _ = b["warp"].shape
    w = torch.ones(n, 1, r, r)
    for i in range(n):
        bx = b["boxes"][i].tolist()
        x0, y0, x1, y1 = bx[0:4]
        w[i, :, y0:y1, x0:x1] = MOUTH_W
        for k in (4, 8):
            x0, y0, x1, y1 = bx[k:k + 4]
            w[i, :, y0:y1, x0:x1] = torch.maximum(w[i, :, y0:y1, x0:x1], torch.tensor(EYE_W))
    return w * b["mask"]


def augment_drive(d):
    """Against identity leakage: the encoder sees the driver through random scale/rotation/shift, blur, tone, noise."""
    n = d.shape[0]
    ang = (torch.rand(n) - 0.5) * 2 * math.radians(8)
    sc = 1 + (torch.rand(n) - 0.5) * 0.2
    tx = (torch.rand(n) - 0.5) * 0.12
    ty = (torch.rand(n) - 0.5) * 0.12
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) / sc
    theta[:, 0, 1] = -torch.sin(ang) / sc
    theta[:, 1, 0] = torch.sin(ang) / sc
    theta[:, 1, 1] = torch.cos(ang) / sc
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, d.shape, align_corners=False)
    d = F.grid_sample(d, grid, padding_mode="border", align_corners=False)
    blur = torch.rand(n) < 0.5
    if blur.any():
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        k = (k[:, None] * k[None, :]) / 256.0
        db = F.conv2d(F.pad(d, (2, 2, 2, 2), mode="replicate"), k[None, None])
        d = torch.where(blur[:, None, None, None], db, d)
    contrast = 1 + (torch.rand(n, 1, 1, 1) - 0.5) * 0.6
    bright = (torch.rand(n, 1, 1, 1) - 0.5) * 0.3
    mean = d.mean(dim=(2, 3), keepdim=True)
    d = (d - mean) * contrast + mean + bright
    d = d + torch.randn_like(d) * 0.02
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
        xh = net(x, b["warp"], b["src"], b["mask"], torch.full((n, 1), t), code)
        x = xh if i == k - 1 else (dt / t) * xh + (1 - dt / t) * x
    return x


def wl1(a, b, w):
    return ((a - b).abs() * w).sum() / (w.sum() * 3 + 1e-6)


# ------------------------------------------------------------------------------------------------------ training
def save(path, **state):
    tmp = path + ".partial"
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_teacher(data, enc, net, args, ckpt):
    params = list(enc.parameters()) + list(net.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    step, elapsed = 0, 0.0
    if os.path.exists(ckpt) and not args.fresh:
        st = torch.load(ckpt)
        enc.load_state_dict(st["enc"])
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        log(f"teacher: resumed at step {step} ({elapsed / 60:.1f} min)")
    budget = args.minutes * 60
    last_save = time.time()
    t_start = time.time() - elapsed
    losses = []
    while time.time() - t_start < budget:
        idx = data.train_idx[torch.randint(len(data.train_idx), (args.batch,))]
        b = data.batch(idx)
        n = idx.shape[0]
        t = torch.where(torch.rand(n, 1) < 0.5, torch.ones(n, 1), torch.rand(n, 1).clamp(min=0.02))
        xt = (1 - t[:, :, None, None]) * b["truth"] + t[:, :, None, None] * b["warp"]
        xt = xt + torch.randn_like(xt) * 0.01 * t[:, :, None, None]
        code = enc(augment_drive(b["drive"]))
        pred = net(xt, b["warp"], b["src"], b["mask"], t, code)
        loss = wl1(pred, b["truth"], weight_map(b))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        # Cosine decay over the budget.
        frac = min(1.0, (time.time() - t_start) / budget)
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % 100 == 0:
            log(f"teacher: step {step}, {(time.time() - t_start) / 60:.1f}/{args.minutes} min, loss {np.mean(losses[-100:]):.5f}")
        if time.time() - last_save > 120:
            save(ckpt, enc=enc.state_dict(), net=net.state_dict(), opt=opt.state_dict(), step=step, elapsed=time.time() - t_start)
            last_save = time.time()
    elapsed = time.time() - t_start
    save(ckpt, enc=enc.state_dict(), net=net.state_dict(), opt=opt.state_dict(), step=step, elapsed=elapsed)
    return step, elapsed


def train_student(data, enc, teacher, student, args, ckpt):
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr * 0.5, weight_decay=1e-4)
    step, elapsed = 0, 0.0
    if os.path.exists(ckpt) and not args.fresh:
        st = torch.load(ckpt)
        student.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st["elapsed"]
        log(f"student: resumed at step {step}")
    budget = args.student_minutes * 60
    last_save = time.time()
    t_start = time.time() - elapsed
    losses = []
    bs = max(2, args.batch // 2)
    while time.time() - t_start < budget:
        idx = data.train_idx[torch.randint(len(data.train_idx), (bs,))]
        b = data.batch(idx)
        with torch.no_grad():
            code = enc(b["drive"])
            target = sample(teacher, b, code, TEACHER_STEPS)
        k = random.choice(STUDENT_STEPS)
        out = sample(student, b, code, k)
        w = weight_map(b)
        loss = wl1(out, target, w) + 0.25 * wl1(out, b["truth"], w)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            log(f"student: step {step}, {(time.time() - t_start) / 60:.1f}/{args.student_minutes} min, loss {np.mean(losses[-50:]):.5f}")
        if time.time() - last_save > 120:
            save(ckpt, net=student.state_dict(), opt=opt.state_dict(), step=step, elapsed=time.time() - t_start)
            last_save = time.time()
    elapsed = time.time() - t_start
    save(ckpt, net=student.state_dict(), opt=opt.state_dict(), step=step, elapsed=elapsed)
    return step, elapsed


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
        n, _, r, _ = m.shape
        mouth = torch.zeros(n, 1, r, r)
        eyes = torch.zeros(n, 1, r, r)
        for i in range(n):
            bx = b["boxes"][i].tolist()
            mouth[i, :, bx[1]:bx[3], bx[0]:bx[2]] = 1
            eyes[i, :, bx[5]:bx[7], bx[4]:bx[6]] = 1
            eyes[i, :, bx[9]:bx[11], bx[8]:bx[10]] = 1
        regions = [m, m * mouth, m * eyes]
        for j, w in enumerate(regions):
            wsum[j] += w.sum().item() * 3
            for nme, o in outs.items():
                acc[nme][j] += ((o.clamp(0, 1) - b["truth"]).abs() * w).sum().item()
    for nme in names:
        res[nme] = {"l1": acc[nme][0] / wsum[0], "mouth_l1": acc[nme][1] / max(1, wsum[1]), "eyes_l1": acc[nme][2] / max(1, wsum[2])}
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


def export(enc, teacher, student, out_dir, size):
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
        files.append((name, role, step_inputs, [("x0", [1, 3, r, r])]))
    return [
        {
            "path": p,
            "role": role,
            "sha256": sha256(os.path.join(out_dir, p)),
            "inputs": [{"name": n, "dtype": "float32", "shape": s} for n, s in ins],
            "outputs": [{"name": n, "dtype": "float32", "shape": s} for n, s in outs],
        }
        for p, role, ins, outs in files
    ]


def write_card(out_dir, tr, steps):
    """MODEL_CARD.md: what the pack is, what it was trained on, how, and its validation scores. The held-out scores
    (the shared evaluation clips, never trained or tuned on) are measured by `npm run bench -- quality` and added
    under "Held-out scores" by whoever runs it; this part is regenerated on every training run."""
    v = tr["validation"]
    rows = "\n".join(
        f"| {k} | {v[k]['l1']:.5f} | {v[k]['mouth_l1']:.5f} | {v[k]['eyes_l1']:.5f} |" for k in v
    ) or "| (no validation clips) | | | |"
    card = f"""# Refiner pack: model card (generated by models/tools/train_refiner.py)

**What:** the learned part of the default engine. An expression encoder reads the driving face (FFHQ-aligned from the
tracker's 68 landmarks, grey 64x64) and outputs a {CODE}-number expression code; a refiner turns the warp output
(the default engine's landmark warp) into the real frame inside the paste region, resampled to {tr["crop"]}x{tr["crop"]}.
Method: InDI (Delbracio and Milanfar, 2023) from the warped image: x_t = (1 - t) x + t y between the true frame x and
the warp y; the network predicts x from (x_t, t, y, the portrait's region, the paste mask) with the code entering only
through FiLM (per-channel scale and shift at every scale, never as a spatial map). The teacher samples in
{tr["student"]["teacher_steps"]} steps from t = 1; the student (refiner.onnx) is the teacher distilled to match its
{tr["student"]["teacher_steps"]}-step output in k = 1, 2 or 4 steps (k drawn per batch), plus a quarter-weight L1 to
the truth. Default steps in manifest.json: {steps} (the student's best k on the validation clips).

**Architecture:** encoder {tr["parameters"]["encoder"]:,} parameters (4 strided 4x4 convs, 16-64 channels, linear to
{CODE}); refiner {tr["parameters"]["refiner"]:,} parameters (pixel-unshuffle x4 of the {tr["crop"]}x{tr["crop"]} inputs, a
U-Net at 1/4, 1/8 and 1/16 of the crop with 48/96/128 channels, residual 3x3 blocks with FiLM, pixel-shuffle x4 back;
predicts a residual over x_t; ~0.45 G multiply-adds per step). One ONNX graph per step (opset 16); the engine runs
the step loop.

**Data:** {tr["clips"]} talking-face clips of ../shared/train (see its MANIFEST.md: public repositories of
talking-head and portrait-animation projects; identities disjoint from the evaluation clips of ../shared/media),
{tr["samples"]} samples (self-reenactment: the clip's first frame is the portrait, every 2nd later frame drives the
project's own warp; at most 120 per clip), of which {tr["validation_samples"]} from {len(tr["validation_clips"])}
validation clips ({", ".join(tr["validation_clips"]) or "none"}) were never trained on. Augmentation of the encoder's
input against identity leakage: random scale (+-10%), rotation (+-8 deg), shift, blur, contrast, brightness, noise; the
encoder also normalises each face's mean and contrast. None of the data, frames or caches are in the repository.

**Training:** `npm run train -- --data ../shared/train` (dataset cache and checkpoints in ~/.cache/live-avatar/refiner;
resumable). Teacher {tr["teacher"]["steps"]} steps of batch {tr["teacher"]["batch"]} in {tr["teacher"]["minutes"]} min
(AdamW, lr {tr["teacher"]["lr"]}, cosine decay, weighted L1: mouth box x{MOUTH_W:g}, eye boxes x{EYE_W:g}, zero
outside the paste mask); student {tr["student"]["steps"]} steps in {tr["student"]["minutes"]} min. Hardware:
{tr["hardware"]}, a shared 2-core VM, no GPU. Seed {tr["seed"]}. Wall time of the training script {tr["wall_minutes"]} min.

**Validation** (the validation clips above; L1 of 0..1 RGB inside the paste mask, and in the mouth and eye boxes):

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
        i = old.find("## Held-out scores")
        if i >= 0:
            card += "\n" + old[i:]
    with open(path, "w") as f:
        f.write(card)


def count(m):
    return sum(p.numel() for p in m.parameters())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--clips", required=True, help="comma-separated clip names (cache file stems)")
    ap.add_argument("--minutes", type=float, default=40)
    ap.add_argument("--student-minutes", type=float, default=10)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--val-every", type=int, default=8, help="one clip in N (by name hash) is kept for validation")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()
    data = Data(args.cache, [c for c in args.clips.split(",") if c], args.val_every)
    log(f"data: {len(data.clip_names)} clips, {len(data.train_idx)} train / {len(data.val_idx)} validation samples, crop {data.size}")
    ck = os.path.join(args.cache, "checkpoints")
    os.makedirs(ck, exist_ok=True)
    enc, teacher = Encoder(), Refiner()
    log(f"encoder {count(enc)} parameters, refiner {count(teacher)} parameters")
    t_steps, t_time = train_teacher(data, enc, teacher, args, os.path.join(ck, "teacher.pt"))
    student = copy.deepcopy(teacher)
    for p in enc.parameters():
        p.requires_grad_(False)
    for p in teacher.parameters():
        p.requires_grad_(False)
    s_steps, s_time = train_student(data, enc, teacher, student, args, os.path.join(ck, "student.pt"))
    val = validate(data, enc, teacher, student)
    for k, v in val.items():
        log(f"validation {k}: l1 {v['l1']:.5f}, mouth_l1 {v['mouth_l1']:.5f}, eyes_l1 {v['eyes_l1']:.5f}")
    files = export(enc, teacher, student, args.out, data.size)
    n_frames = int(len(data.owner))
    training = {
        "clips": len(data.clip_names),
        "validation_clips": [data.clip_names[i] for i in data.val_clips],
        "train_samples": int(len(data.train_idx)),
        "validation_samples": int(len(data.val_idx)),
        "samples": n_frames,
        "crop": data.size,
        "teacher": {"steps": t_steps, "minutes": round(t_time / 60, 1), "batch": args.batch, "lr": args.lr},
        "student": {"steps": s_steps, "minutes": round(s_time / 60, 1), "k": list(STUDENT_STEPS), "teacher_steps": TEACHER_STEPS},
        "parameters": {"encoder": count(enc), "refiner": count(student)},
        "seed": args.seed,
        "hardware": f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "wall_minutes": round((time.time() - t0) / 60, 1),
        "validation": val,
    }
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(training, f, indent=2)
    # The default k: the student's best on the validation clips (part of the training data, never the held-out
    # evaluation clips); ties and no validation go to the cheaper k.
    steps = STUDENT_STEPS[0]
    if val:
        steps = min(STUDENT_STEPS, key=lambda k: (round(val[f"student_k{k}"]["l1"], 4), k))
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
