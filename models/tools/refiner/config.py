"""The one typed configuration of a training / export run: `TrainConfig`, built from the command line by `parse_args`
and checked by `TrainConfig.validate` (a `RefinerError` BAD_ARGUMENT naming the flag). Every other module takes the
config (or the few values it needs) as arguments; nothing below this module reads sys.argv or the environment.

The flags are those of the former models/tools/train_refiner.py, unchanged (scripts/train.ts passes them on). The loss
of each regime is a tuple of (term, weight) pairs naming terms registered in losses.py; the defaults are the recipe
the committed pack was trained with, and a new term plugs in by name.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from .constants import STUDENT_STEPS
from .errors import BAD_ARGUMENT, RefinerError

LossSpec = Tuple[Tuple[str, float], ...]

# The training recipe's losses (losses.py): the weighted L1 to the true frame, and for the student also to the
# teacher's 8-step sample (with a quarter weight on the truth).
TEACHER_LOSS: LossSpec = (("truth_l1", 1.0),)
STUDENT_LOSS: LossSpec = (("teacher_l1", 1.0), ("truth_l1", 0.25))
FINETUNE_LOSS: LossSpec = (("truth_l1", 1.0),)


@dataclass(frozen=True)
class TrainConfig:
    """What one run does. Defaults are the command line's; durations in minutes (wall time) or seconds as named."""

    cache: str  # the dataset cache (and checkpoints/ inside it)
    out: str  # the pack folder to export to, or "-" (with save_weights: no export)
    clips: Tuple[str, ...]  # clip names (cache file stems), or ("all",) with packed
    packed: Optional[str] = None  # read the samples from this packed folder (packed.py) instead of cache
    minutes: float = 40.0  # teacher (and encoder) training time
    student_minutes: float = 10.0  # student distillation time
    batch: int = 12  # teacher / fine-tune batch; the student's is max(2, batch // 2)
    lr: float = 1e-3  # AdamW learning rate (the student's is half)
    warmup: int = 0  # linear learning-rate warm-up steps
    augment: bool = False  # flip and colour augmentation of the samples (teacher and student)
    device: str = "cpu"  # cpu, cuda, cuda:N or auto
    channels: Tuple[int, int, int] = (48, 96, 128)  # the refiner U-Net's widths at 1/4, 1/8 and 1/16 of the crop
    student_k: Tuple[int, ...] = (1, 2, 4)  # the k drawn (uniformly; repeats weigh more) per student batch
    log_every: int = 100  # a loss line every N steps (the student's every N // 2)
    val_seconds: float = 0.0  # log the validation L1 (k = 1) this often (0: never)
    seed: int = 7
    val_every: int = 8  # one clip in N (by name hash) is kept for validation
    val_max: int = 0  # at most this many validation samples per validation clip, evenly spaced (0: all)
    fresh: bool = False  # ignore checkpoints
    save_weights: Optional[str] = None  # also write the weights here (.npz) and training.json beside them
    from_weights: Optional[str] = None  # skip training: load these weights (with training.json beside), export
    finetune_from: Optional[str] = None  # fine-tune the student of this exported pack instead of training
    finetune_minutes: float = 60.0
    roll: float = 0.0  # fine-tune: head roll (degrees, up to) between portrait and driver for half the samples
    wedges: bool = False  # fine-tune: black wedges over the driving crop's edges
    scale: float = 0.0  # fine-tune: with roll's samples, a zoom of up to +-this fraction
    shift: float = 0.0  # fine-tune: with roll's samples, a shift of up to +-this fraction of the crop
    source: str = "aligned"  # the portrait picture the networks trained here read: aligned or region
    residual: str = "paste"  # where the engine keeps the student's change: paste or features (manifest only)
    teacher_loss: LossSpec = field(default=TEACHER_LOSS)
    student_loss: LossSpec = field(default=STUDENT_LOSS)
    finetune_loss: LossSpec = field(default=FINETUNE_LOSS)
    d_lr: float = 2e-4  # the discriminators' learning rate (a fine-tune whose loss names adv or fm)

    @property
    def regime(self) -> str:
        """train (teacher then student), finetune (--finetune-from) or export (--from-weights)."""
        return "export" if self.from_weights else ("finetune" if self.finetune_from else "train")

    def validate(self) -> "TrainConfig":
        """Returns self, or raises RefinerError BAD_ARGUMENT naming the first flag that is wrong."""
        if not self.student_k or any(k not in STUDENT_STEPS for k in self.student_k):
            _bad(f"--student-k: each k must be one of {STUDENT_STEPS}")
        if len(self.channels) != 3 or any(c < 1 for c in self.channels):
            _bad(f"--channels: three positive widths (at 1/4, 1/8 and 1/16 of the crop), not {self.channels}")
        if not self.clips:
            _bad("--clips: at least one clip name (or 'all' with --packed)")
        if self.clips == ("all",) and not self.packed:
            _bad("--clips all: only with --packed (the raw cache is read by clip name)")
        if self.from_weights and self.finetune_from:
            _bad("--from-weights and --finetune-from: one or the other")
        if self.out == "-" and not self.save_weights:
            _bad("--out -: only with --save-weights (otherwise nothing would be written)")
        for flag, v in (("--batch", self.batch), ("--log-every", self.log_every), ("--val-every", self.val_every)):
            if v < 1:
                _bad(f"{flag}: at least 1, not {v}")
        for flag, x in (("--minutes", self.minutes), ("--student-minutes", self.student_minutes),
                        ("--finetune-minutes", self.finetune_minutes), ("--val-seconds", self.val_seconds),
                        ("--roll", self.roll), ("--scale", self.scale), ("--shift", self.shift)):
            if not math.isfinite(x) or x < 0:
                _bad(f"{flag}: a number >= 0, not {x}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            _bad(f"--lr: a number > 0, not {self.lr}")
        if not math.isfinite(self.d_lr) or self.d_lr <= 0:
            _bad(f"--d-lr: a number > 0, not {self.d_lr}")
        if self.val_max < 0:
            _bad(f"--val-max: at least 0, not {self.val_max}")
        if self.warmup < 0:
            _bad(f"--warmup: at least 0, not {self.warmup}")
        if not (self.device in ("cpu", "cuda", "auto") or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            _bad(f"--device: cpu, cuda, cuda:N or auto, not {self.device}")
        if self.source not in ("aligned", "region"):
            _bad(f"--source: aligned or region, not {self.source}")
        if self.residual not in ("paste", "features"):
            _bad(f"--residual: paste or features, not {self.residual}")
        for name, spec in (("teacher", self.teacher_loss), ("student", self.student_loss), ("finetune", self.finetune_loss)):
            if not spec or any(not math.isfinite(w) or w < 0 for _, w in spec):
                _bad(f"{name} loss: at least one (term, weight) pair with weights >= 0, not {spec}")
        return self


def _bad(message: str) -> None:
    raise RefinerError(BAD_ARGUMENT, message)


def _int_list(flag: str, text: str) -> List[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise RefinerError(BAD_ARGUMENT, f"{flag}: comma-separated integers, not {text!r}") from None


def parse_loss(flag: str, text: str) -> LossSpec:
    """'truth_l1=1,id=0.1,adv=0.05' -> (("truth_l1", 1.0), ("id", 0.1), ("adv", 0.05)); the names are checked by
    losses.Loss when the regime's loss is built."""
    spec = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, sep, w = item.partition("=")
        try:
            weight = float(w) if sep else 1.0
        except ValueError:
            raise RefinerError(BAD_ARGUMENT, f"{flag}: TERM=WEIGHT pairs separated by commas, not {item!r}") from None
        spec.append((name.strip(), weight))
    if not spec:
        _bad(f"{flag}: at least one TERM=WEIGHT pair")
    return tuple(spec)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python3 -m refiner` (the flags of the former train_refiner.py)."""
    ap = argparse.ArgumentParser(prog="python3 -m refiner", description="Trains the learned refiner pack (an expression "
                                 "encoder, an InDI teacher and its distilled few-step student), validates it and exports "
                                 "it to ONNX with manifest.json, training.json and MODEL_CARD.md.")
    ap.add_argument("--cache", required=True, help="the dataset cache (and checkpoints/ inside it)")
    ap.add_argument("--packed", help="read the samples from this packed folder (python3 -m refiner.packed) instead of --cache")
    ap.add_argument("--out", required=True, help="the pack folder to write, or - (with --save-weights: no export)")
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
    ap.add_argument("--val-max", type=int, default=0, help="at most N validation samples per validation clip, evenly "
                    "spaced over it (a cheaper validation of a large dataset; 0: all)")
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
    ap.add_argument("--finetune-loss", default="truth_l1=1", help="the fine-tune's loss as TERM=WEIGHT pairs, e.g. "
                    "truth_l1=1,id=0.1,perceptual=0.5,landmarks=1,adv=0.05,fm=1 (terms: losses.py; id and perceptual "
                    "read MobileFace, landmarks FaceMesh, adv and fm train patch discriminators alongside)")
    ap.add_argument("--d-lr", type=float, default=2e-4, help="the discriminators' learning rate (with adv or fm)")
    ap.add_argument("--shift", type=float, default=0, help="fine-tune: with --roll's samples, a shift of up to +-this "
                    "fraction of the crop between portrait and driver")
    return ap


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """The command line -> a validated TrainConfig (argparse exits 2 on an unknown flag; RefinerError otherwise)."""
    a = build_parser().parse_args(argv)
    ch = _int_list("--channels", a.channels)
    if len(ch) != 3:
        raise RefinerError(BAD_ARGUMENT, f"--channels: three widths (at 1/4, 1/8 and 1/16 of the crop), not {a.channels!r}")
    return TrainConfig(
        cache=a.cache, out=a.out, clips=tuple(c for c in a.clips.split(",") if c), packed=a.packed,
        minutes=a.minutes, student_minutes=a.student_minutes, batch=a.batch, lr=a.lr, warmup=a.warmup,
        augment=a.augment, device=a.device, channels=(ch[0], ch[1], ch[2]),
        student_k=tuple(_int_list("--student-k", a.student_k)), log_every=a.log_every, val_seconds=a.val_seconds,
        seed=a.seed, val_every=a.val_every, val_max=a.val_max, fresh=a.fresh, save_weights=a.save_weights, from_weights=a.from_weights,
        finetune_from=a.finetune_from, finetune_minutes=a.finetune_minutes, roll=a.roll, wedges=a.wedges,
        scale=a.scale, shift=a.shift, source=a.source, residual=a.residual,
        finetune_loss=parse_loss("--finetune-loss", a.finetune_loss), d_lr=a.d_lr,
    ).validate()
