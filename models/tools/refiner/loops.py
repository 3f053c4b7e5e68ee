"""The three training regimes and the loop they share:
- teacher: the encoder and the InDI teacher jointly, from scratch (InDI training inputs between truth and warp);
- student: a copy of the teacher distilled so that its k-step sample matches the teacher's 8-step one (encoder and
  teacher frozen);
- fine-tune: an exported pack's student trained on the truth with roll / zoom / shift / wedge augmentation.
Each regime's loss is losses.Loss built from the config's spec for it. Checkpoints make a stopped run resume."""
from __future__ import annotations

import math
import os
import random
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .augment import augment_drive
from .config import TrainConfig
from .constants import TEACHER_STEPS
from .data import Data
from .losses import Aux, Loss, LossInputs, weight_map
from .networks import sample, src_of
from .validate import quick_val, write_sheet

# (steps, seconds of wall time including a resumed run's) of one regime.
Trained = Tuple[int, float]


def log(msg: str) -> None:
    """One progress line on stderr (scripts/train.ts passes it through; the tests read it)."""
    sys.stderr.write(f"refiner: {msg}\n")
    sys.stderr.flush()


def save_checkpoint(path: str, **state: object) -> None:
    """torch.save through a temporary file, so that a run stopped while writing keeps the previous checkpoint."""
    tmp = path + ".partial"
    torch.save(state, tmp)
    os.replace(tmp, path)


def amp(dev: torch.device) -> torch.autocast:
    """bf16 autocast on a GPU (the loss and the weights stay float32); nothing on the CPU."""
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


def lr_at(cfg: TrainConfig, frac: float, step: int) -> float:
    """Linear warm-up over cfg.warmup steps, then cosine decay over the time budget (frac of it spent) down to 10%."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    return cfg.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def optimise(tag: str, data: Data, cfg: TrainConfig, minutes: float, opt: torch.optim.Optimizer,
             params: List[nn.Parameter], modules: Dict[str, nn.Module], ckpt: str,
             batch_loss: Callable[[], torch.Tensor], log_every: int, schedule: bool = True,
             val: Optional[Callable[[], str]] = None, describe: Optional[Callable[[], str]] = None,
             extra: Optional[Dict[str, Any]] = None) -> Trained:
    """The training loop shared by the regimes: batches until `minutes` of wall time (counting a resumed run's time),
    gradient clipping at 1, the warm-up + cosine learning rate when `schedule`, a log line every `log_every` steps,
    `val()` (a progress string) every cfg.val_seconds, and a checkpoint of `modules` (name -> module) and the optimiser
    every 2 minutes and at the end, from which a stopped run resumes (not with cfg.fresh). `describe()` adds to each
    log line (the loss terms' means); `extra` (name -> object with state_dict / load_state_dict, e.g. the
    discriminators' optimiser) is checkpointed beside the modules."""
    dev = data.device
    step, elapsed = 0, 0.0
    if os.path.exists(ckpt) and not cfg.fresh:
        st = torch.load(ckpt, map_location=dev)
        for k, m in modules.items():
            m.load_state_dict(st[k])
        opt.load_state_dict(st["opt"])
        for k, o in (extra or {}).items():
            o.load_state_dict(st[k])
        step, elapsed = st["step"], st["elapsed"]
        log(f"{tag}: resumed at step {step} ({elapsed / 60:.1f} min)")
    budget = minutes * 60
    last_save = last_val = time.time()
    t_start = time.time() - elapsed
    loss_sum, loss_n = torch.zeros((), device=dev), 0

    def checkpoint() -> None:
        save_checkpoint(ckpt, **{k: m.state_dict() for k, m in modules.items()}, opt=opt.state_dict(), step=step,
                        elapsed=time.time() - t_start, **{k: o.state_dict() for k, o in (extra or {}).items()})

    while time.time() - t_start < budget:
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if schedule:
            frac = min(1.0, (time.time() - t_start) / budget)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, frac, step)
        opt.step()
        step += 1
        loss_sum += loss.detach()
        loss_n += 1
        if step % log_every == 0:
            terms = f" ({describe()})" if describe else ""
            log(f"{tag}: step {step}, {(time.time() - t_start) / 60:.1f}/{minutes} min, loss {loss_sum.item() / loss_n:.5f}{terms}")
            loss_sum, loss_n = torch.zeros((), device=dev), 0
        if val and cfg.val_seconds and time.time() - last_val > cfg.val_seconds:
            log(f"{tag}: step {step}, {val()}")
            last_val = time.time()
        if time.time() - last_save > 120:
            checkpoint()
            last_save = time.time()
    checkpoint()
    return step, time.time() - t_start


def teacher_batch_loss(data: Data, enc: nn.Module, net: nn.Module, cfg: TrainConfig, loss: Loss) -> torch.Tensor:
    """One teacher batch: InDI inputs x_t = (1 - t) x + t y (t = 1 half of the time, else uniform in [0.02, 1)) with a
    little noise, the encoder on an augmented driving crop, the loss of the network's prediction of x."""
    dev = data.device
    idx = data.train_idx[torch.randint(len(data.train_idx), (cfg.batch,), device=dev)]
    b = data.batch(idx, aug=cfg.augment)
    n = idx.shape[0]
    t = torch.where(torch.rand(n, 1, device=dev) < 0.5, torch.ones(n, 1, device=dev), torch.rand(n, 1, device=dev).clamp(min=0.02))
    xt = (1 - t[:, :, None, None]) * b["truth"] + t[:, :, None, None] * b["warp"]
    xt = xt + torch.randn_like(xt) * 0.01 * t[:, :, None, None]
    with amp(dev):
        code = enc(augment_drive(b["drive"]))
        pred = net(xt, b["warp"], src_of(net, b), b["mask"], t, code)
    return loss(LossInputs(out=pred.float(), batch=b, weights=weight_map(b)))


def student_batch_loss(data: Data, enc: nn.Module, teacher: nn.Module, student: nn.Module, cfg: TrainConfig,
                       loss: Loss) -> torch.Tensor:
    """One student batch (half the teacher's batch): the student's k-step sample (k drawn from cfg.student_k) against
    the teacher's 8-step sample and the truth."""
    dev = data.device
    idx = data.train_idx[torch.randint(len(data.train_idx), (max(2, cfg.batch // 2),), device=dev)]
    b = data.batch(idx, aug=cfg.augment)
    target = None
    with torch.no_grad(), amp(dev):
        code = enc(b["drive"])
        if loss.needs_target:
            target = sample(teacher, b, code, TEACHER_STEPS).float()
    code = code.float()
    k = random.choice(cfg.student_k)
    with amp(dev):
        out = sample(student, b, code, k)
    return loss(LossInputs(out=out.float(), batch=b, weights=weight_map(b), target=target))


class Adversary:
    """The discriminators of an adversarial fine-tune and their optimiser (Adam, betas 0.5 / 0.999): one hinge-loss
    step on each batch's output (detached) before the generator's loss reads them."""

    def __init__(self, dev: torch.device, lr: float) -> None:
        from .adversarial import Critic

        self.critic = Critic().to(dev)
        self.opt = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.5, 0.999))
        self.stats: Dict[str, float] = {}
        self.n = 0

    def step(self, out: torch.Tensor, b: Dict[str, torch.Tensor]) -> None:
        from .adversarial import composite

        fake, real = composite(out.detach(), b)
        d_loss, stats = self.critic.d_loss(real, fake, b["boxes"])
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt.step()
        self.n += 1
        for k, v in stats.items():
            self.stats[k] = self.stats.get(k, 0.0) + v

    def describe(self) -> str:
        """The mean real-minus-fake logit per view since the last call (how well each discriminator separates)."""
        text = "D margin " + " ".join(f"{k} {v / max(1, self.n):.2f}" for k, v in self.stats.items())
        self.stats, self.n = {}, 0
        return text


def finetune_batch_loss(data: Data, enc: nn.Module, student: nn.Module, cfg: TrainConfig, loss: Loss,
                        aux: Optional[Aux] = None, adversary: Optional[Adversary] = None) -> torch.Tensor:
    """One fine-tune batch: every sample augmented (flip, colour, roll / zoom / shift, wedges over the driving crop),
    the student's k-step sample against the truth (and, with an adversary, the discriminators' step first)."""
    dev = data.device
    idx = data.train_idx[torch.randint(len(data.train_idx), (cfg.batch,), device=dev)]
    b = data.batch(idx, aug=True, roll=cfg.roll, move=(cfg.scale, cfg.shift))
    with torch.no_grad(), amp(dev):
        code = enc(augment_drive(b["drive"], wedges=cfg.wedges)).float()
    k = random.choice(cfg.student_k)
    with amp(dev):
        out = sample(student, b, code, k)
    if adversary is not None:
        adversary.step(out.float(), b)
    return loss(LossInputs(out=out.float(), batch=b, weights=weight_map(b), aux=aux))


def train_teacher(data: Data, enc: nn.Module, net: nn.Module, cfg: TrainConfig, ckpt: str) -> Trained:
    """The encoder and the teacher jointly, for cfg.minutes."""
    params = list(enc.parameters()) + list(net.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    loss = Loss(cfg.teacher_loss)
    return optimise("teacher", data, cfg, cfg.minutes, opt, params, {"enc": enc, "net": net}, ckpt,
                    lambda: teacher_batch_loss(data, enc, net, cfg, loss), cfg.log_every,
                    val=lambda: f"validation l1 (k = 1) {quick_val(data, enc, net):.5f}")


def train_student(data: Data, enc: nn.Module, teacher: nn.Module, student: nn.Module, cfg: TrainConfig,
                  ckpt: str) -> Trained:
    """The student distilled from the (frozen) teacher for cfg.student_minutes, at half the learning rate, no schedule."""
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr * 0.5, weight_decay=1e-4)
    loss = Loss(cfg.student_loss, has_target=True)
    return optimise("student", data, cfg, cfg.student_minutes, opt, list(student.parameters()), {"net": student}, ckpt,
                    lambda: student_batch_loss(data, enc, teacher, student, cfg, loss), max(1, cfg.log_every // 2),
                    schedule=False)


def finetune_student(data: Data, enc: nn.Module, student: nn.Module, cfg: TrainConfig, ckpt: str) -> Trained:
    """Fine-tunes a trained student (the encoder and the teacher stay frozen) on the truth directly: its k-step sample
    (k drawn from --student-k) against the true frame with the same weighted L1, every sample augmented (flip,
    colour, --roll head roll between portrait and driver, black wedges over the driving crop's edges). For a pack
    whose student was distilled elsewhere (--finetune-from): a few CPU minutes teach it what its data lacked."""
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    loss = Loss(cfg.finetune_loss)
    aux, adversary = None, None
    modules: Dict[str, nn.Module] = {"net": student}
    extra: Dict[str, Any] = {}
    if loss.needs_id_net or loss.needs_mesh:
        from .facenets import face_nets

        aux = Aux(faces=face_nets(loss.needs_id_net, loss.needs_mesh, data.device))
        log(f"fine-tune: face networks loaded ({'MobileFace ' if loss.needs_id_net else ''}"
            f"{'FaceMesh' if loss.needs_mesh else ''})")
    if loss.needs_critic:
        adversary = Adversary(data.device, cfg.d_lr)
        aux = aux or Aux()
        aux.critic = adversary.critic
        modules["critic"] = adversary.critic
        extra["d_opt"] = adversary.opt
        log(f"fine-tune: discriminators of {sum(p.numel() for p in adversary.critic.parameters())} parameters "
            f"(face, face at half size, eyes, mouth), lr {cfg.d_lr}")

    def describe() -> str:
        return loss.describe() + ("; " + adversary.describe() if adversary else "")

    return optimise("fine-tune", data, cfg, cfg.finetune_minutes, opt, params, modules, ckpt,
                    lambda: finetune_batch_loss(data, enc, student, cfg, loss, aux, adversary), cfg.log_every,
                    val=lambda: finetune_progress(data, enc, student, ckpt), describe=describe, extra=extra)


def finetune_progress(data: Data, enc: nn.Module, student: nn.Module, ckpt: str) -> str:
    """The fine-tune's progress line (validation L1, plain and rolled) and a contact sheet beside the checkpoint
    (sheets/finetune-HHMMSS.png: warp | output | truth of validation samples)."""
    sheet = os.path.join(os.path.dirname(ckpt), "sheets", time.strftime("finetune-%H%M%S.png"))
    write_sheet(data, enc, student, sheet)
    return (f"validation l1 (k = 1) {quick_val(data, enc, student):.5f}, "
            f"rolled {quick_val(data, enc, student, roll=True):.5f}; sheet {sheet}")
