"""The training losses: named terms, each a function of one batch's output, summed with the weights a regime's loss
spec gives (config.py: teacher_loss, student_loss, finetune_loss). A new term (a face network's identity or
perceptual distance, a discriminator) is one function or callable object registered here under a new name, and
enters a regime by naming it in that regime's spec; the training loops do not change.

Every term reads a LossInputs: the network's output (float32), the batch, the loss weight map (weight_map: the
paste mask, the mouth box x4, the eye boxes x3) and, for the student only, the teacher's sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .constants import EYE_W, MOUTH_W, Batch
from .errors import UNKNOWN_LOSS, RefinerError
from .geometry import box_mask, eyes_mask


@dataclass(frozen=True)
class LossInputs:
    """What a loss term may read."""

    out: torch.Tensor  # the network's output (float32), n x 3 x r x r
    batch: Batch
    weights: torch.Tensor  # weight_map(batch), n x 1 x r x r
    target: Optional[torch.Tensor] = None  # the teacher's sample (distillation only)


Term = Callable[[LossInputs], torch.Tensor]
TERMS: Dict[str, Term] = {}
# Terms that read LossInputs.target: only a regime that has a teacher's sample may name them.
NEEDS_TARGET = {"teacher_l1"}


def register(name: str) -> Callable[[Term], Term]:
    """Registers a loss term under name (a decorator)."""

    def add(term: Term) -> Term:
        if name in TERMS:
            raise ValueError(f"loss term {name} is registered twice")
        TERMS[name] = term
        return term

    return add


def weight_map(b: Batch) -> torch.Tensor:
    """Loss weights: the paste mask (where the refiner can change pixels), x4 in the mouth box, x3 in the eye boxes."""
    r = b["warp"].shape[-1]
    mouth = box_mask(b["boxes"], 0, r)
    eyes = eyes_mask(b["boxes"], r)
    w = 1 + (MOUTH_W - 1) * mouth
    w = torch.maximum(w, EYE_W * eyes)
    return w * b["mask"]


def wl1(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The weighted L1 of RGB images a and b, normalised by the weights' sum (per channel)."""
    return ((a - b).abs() * w).sum() / (w.sum() * 3 + 1e-6)


@register("truth_l1")
def truth_l1(x: LossInputs) -> torch.Tensor:
    """Weighted L1 to the true frame."""
    return wl1(x.out, x.batch["truth"], x.weights)


@register("teacher_l1")
def teacher_l1(x: LossInputs) -> torch.Tensor:
    """Weighted L1 to the teacher's sample (distillation)."""
    if x.target is None:
        raise RefinerError(UNKNOWN_LOSS, "teacher_l1 needs the teacher's sample (the student's loss only)")
    return wl1(x.out, x.target, x.weights)


class Loss:
    """A regime's loss: the weighted sum of its spec's terms, checked when built (an unknown name, or a term that
    needs the teacher's sample in a regime without one, is refused with UNKNOWN_LOSS)."""

    def __init__(self, spec: Tuple[Tuple[str, float], ...], has_target: bool = False) -> None:
        self.terms: List[Tuple[str, Term, float]] = []
        for name, w in spec:
            if name not in TERMS:
                raise RefinerError(UNKNOWN_LOSS, f"loss term {name!r}: not one of {', '.join(sorted(TERMS))}")
            if name in NEEDS_TARGET and not has_target:
                raise RefinerError(UNKNOWN_LOSS, f"loss term {name!r} needs the teacher's sample: only the student has one")
            self.terms.append((name, TERMS[name], w))
        if not self.terms:
            raise RefinerError(UNKNOWN_LOSS, "a loss needs at least one term")

    @property
    def needs_target(self) -> bool:
        return any(name in NEEDS_TARGET for name, _, _ in self.terms)

    def __call__(self, x: LossInputs) -> torch.Tensor:
        total: Optional[torch.Tensor] = None
        for _, term, w in self.terms:
            v = term(x)
            v = v if w == 1.0 else w * v
            total = v if total is None else total + v
        assert total is not None  # __init__ refuses an empty spec
        return total
