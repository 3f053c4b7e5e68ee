"""The training losses: named terms, each a function of one batch's output, summed with the weights a regime's loss
spec gives (config.py: teacher_loss, student_loss, finetune_loss). A new term (a face network's identity or
perceptual distance, a discriminator) is one function or callable object registered here under a new name, and
enters a regime by naming it in that regime's spec; the training loops do not change.

Every term reads a LossInputs: the network's output (float32), the batch, the loss weight map (weight_map: the
paste mask, the mouth box x4, the eye boxes x3) and, for the student only, the teacher's sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .constants import EYE_W, MOUTH_W, Batch
from .errors import UNKNOWN_LOSS, RefinerError
from .geometry import box_mask, eyes_mask


@dataclass
class Aux:
    """What the face-network and adversarial terms read besides the batch: the face networks (facenets.FaceNets) and
    the discriminators (adversarial.Critic), whichever the regime's terms need."""

    faces: Any = None
    critic: Any = None


@dataclass(frozen=True)
class LossInputs:
    """What a loss term may read."""

    out: torch.Tensor  # the network's output (float32), n x 3 x r x r
    batch: Batch
    weights: torch.Tensor  # weight_map(batch), n x 1 x r x r
    target: Optional[torch.Tensor] = None  # the teacher's sample (distillation only)
    aux: Optional[Aux] = None  # face networks and discriminators (the terms below that need them)
    memo: Dict[str, Any] = field(default_factory=dict)  # values several terms share, computed once per batch


Term = Callable[[LossInputs], torch.Tensor]
TERMS: Dict[str, Term] = {}
# Terms that read LossInputs.target: only a regime that has a teacher's sample may name them.
NEEDS_TARGET = {"teacher_l1"}
# Terms that read a face network (facenets.py) or the discriminators (adversarial.py) through LossInputs.aux.
NEEDS_ID_NET = {"id", "perceptual"}
NEEDS_MESH = {"landmarks"}
NEEDS_CRITIC = {"adv", "fm"}


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


def _pair(x: LossInputs) -> Tuple[torch.Tensor, torch.Tensor]:
    """(fake, real) composed as the engine pastes (adversarial.composite), once per batch."""
    if "pair" not in x.memo:
        from .adversarial import composite

        x.memo["pair"] = composite(x.out, x.batch)
    pair: Tuple[torch.Tensor, torch.Tensor] = x.memo["pair"]
    return pair


def _aux(x: LossInputs, what: str, name: str) -> Any:
    got = getattr(x.aux, what, None) if x.aux is not None else None
    if got is None:
        raise RefinerError(UNKNOWN_LOSS, f"loss term {name!r} needs the {what} (the training loop did not load them)")
    return got


def _two_terms(x: LossInputs, key: str, what: str, name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Terms computed in pairs, once per batch: "id" (identity, perceptual) from the face networks' method
    identity_and_perceptual(fake, real, boxes), "gan" (adv, fm) from the discriminators' g_losses(real, fake, boxes)."""
    if key not in x.memo:
        fake, real = _pair(x)
        owner = _aux(x, what, name)
        boxes = x.batch["boxes"]
        x.memo[key] = owner.identity_and_perceptual(fake, real, boxes) if key == "id" else owner.g_losses(real, fake, boxes)
    terms: Tuple[torch.Tensor, torch.Tensor] = x.memo[key]
    return terms


def _id_terms(x: LossInputs) -> Tuple[torch.Tensor, torch.Tensor]:
    return _two_terms(x, "id", "faces", "id")


@register("id")
def identity(x: LossInputs) -> torch.Tensor:
    """1 - the cosine between MobileFace's embeddings of the output and of the truth (facenets.py)."""
    return _id_terms(x)[0]


@register("perceptual")
def perceptual(x: LossInputs) -> torch.Tensor:
    """The face-perceptual distance: MobileFace's channel-normalised activations, output vs truth (facenets.py)."""
    return _id_terms(x)[1]


@register("landmarks")
def landmarks(x: LossInputs) -> torch.Tensor:
    """FaceMesh's lids, lips and brows (and the lids' and lips' openings) of the output vs the truth (facenets.py)."""
    fake, real = _pair(x)
    d: torch.Tensor = _aux(x, "faces", "landmarks").landmark_distance(fake, real, x.batch["boxes"])
    return d


def _g_terms(x: LossInputs) -> Tuple[torch.Tensor, torch.Tensor]:
    return _two_terms(x, "gan", "critic", "adv")


@register("adv")
def adversarial(x: LossInputs) -> torch.Tensor:
    """The generator's hinge loss against the discriminators (adversarial.py): -D(output)."""
    return _g_terms(x)[0]


@register("fm")
def feature_matching(x: LossInputs) -> torch.Tensor:
    """Feature matching: the L1 between the discriminators' inner features of the output and of the truth."""
    return _g_terms(x)[1]


class Loss:
    """A regime's loss: the weighted sum of its spec's terms, checked when built (an unknown name, or a term that
    needs the teacher's sample in a regime without one, is refused with UNKNOWN_LOSS)."""

    def __init__(self, spec: Tuple[Tuple[str, float], ...], has_target: bool = False) -> None:
        self.terms: List[Tuple[str, Term, float]] = []
        self.sums: Dict[str, float] = {}
        self.count = 0
        for name, w in spec:
            if name not in TERMS:
                raise RefinerError(UNKNOWN_LOSS, f"loss term {name!r}: not one of {', '.join(sorted(TERMS))}")
            if name in NEEDS_TARGET and not has_target:
                raise RefinerError(UNKNOWN_LOSS, f"loss term {name!r} needs the teacher's sample: only the student has one")
            self.terms.append((name, TERMS[name], w))
        if not any(w > 0 for _, _, w in self.terms):
            raise RefinerError(UNKNOWN_LOSS, "a loss needs at least one term with a weight above 0")

    def _needs(self, names: set) -> bool:
        return any(name in names and w > 0 for name, _, w in self.terms)

    @property
    def needs_target(self) -> bool:
        return self._needs(NEEDS_TARGET)

    @property
    def needs_id_net(self) -> bool:
        return self._needs(NEEDS_ID_NET)

    @property
    def needs_mesh(self) -> bool:
        return self._needs(NEEDS_MESH)

    @property
    def needs_critic(self) -> bool:
        return self._needs(NEEDS_CRITIC)

    def describe(self) -> str:
        """Each term's mean (unweighted) since the last call, e.g. 'truth_l1 0.0512, id 0.213'; resets the means."""
        text = ", ".join(f"{k} {v / max(1, self.count):.4f}" for k, v in self.sums.items())
        self.sums, self.count = {}, 0
        return text

    def __call__(self, x: LossInputs) -> torch.Tensor:
        total: Optional[torch.Tensor] = None
        self.count += 1
        for name, term, w in self.terms:
            if w == 0:
                continue
            v = term(x)
            self.sums[name] = self.sums.get(name, 0.0) + float(v.detach())
            v = v if w == 1.0 else w * v
            total = v if total is None else total + v
        assert total is not None  # __init__ refuses an empty spec
        return total
