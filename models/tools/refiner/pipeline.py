"""One run, as the config says: load the samples, then train from scratch (teacher, then student), fine-tune an
exported pack's student, or take weights trained elsewhere; validate; write the weights and/or export the pack with
its manifest, training.json and model card."""
from __future__ import annotations

import copy
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from .config import TrainConfig
from .constants import STUDENT_STEPS, TEACHER_STEPS
from .data import Data
from .errors import OLD_CACHE, RefinerError
from .export import export, write_manifest
from .losses import Loss
from .loops import Trained, finetune_student, log, train_student, train_teacher
from .model_card import write_card
from .networks import Encoder, Refiner, count, gmacs
from .validate import Scores, default_steps, log_lines, quick_val, validate
from .weights import check_pack, load_pack_weights, load_weights, save_weights


@dataclass(frozen=True)
class Trainings:
    """How the networks of this run were trained (here or, for export and fine-tune, before)."""

    teacher: Trained
    student: Trained
    batch: int
    lr: float
    hardware: str
    wall_minutes: float
    finetune: Optional[Trained] = None


def seed_all(seed: int) -> None:
    """Python's, numpy's and torch's generators (the student's k is drawn by Python's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """cpu, cuda[:N], or auto (cuda when there is one); on a GPU, cuDNN autotuning and TF32 matmuls."""
    dev = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


def hardware(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, bf16 autocast"
    return f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def _prior_trainings(prior: Dict[str, Any], finetune: Optional[Trained] = None) -> Trainings:
    return Trainings(teacher=(prior["teacher"]["steps"], prior["teacher"]["minutes"] * 60),
                     student=(prior["student"]["steps"], prior["student"]["minutes"] * 60),
                     batch=prior["teacher"]["batch"], lr=prior["teacher"]["lr"], hardware=prior["hardware"],
                     wall_minutes=prior["wall_minutes"], finetune=finetune)


def _freeze(*modules: nn.Module) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)


def training_record(cfg: TrainConfig, data: Data, prior: Optional[Dict[str, Any]], channels: Tuple[int, ...],
                    enc: nn.Module, teacher: Refiner, student: Refiner, tr: Trainings, val: Scores, dev: torch.device,
                    t0: float) -> Dict[str, Any]:
    """training.json: the data, the recipe, the hardware and the validation scores (the model card's source)."""
    training: Dict[str, Any] = {
        "clips": len(data.clip_names),
        "validation_clips": [data.clip_names[i] for i in data.val_clips],
        "train_samples": int(len(data.train_idx)),
        "validation_samples": int(len(data.val_idx)),
        "validation_max_per_clip": cfg.val_max or None,
        "samples": int(len(data.owner)),
        "max_samples_per_clip": max(data.per_clip),
        "stride": sorted(data.strides),
        "crop": data.size,
        "teacher": {"steps": tr.teacher[0], "minutes": round(tr.teacher[1] / 60, 1), "batch": tr.batch, "lr": tr.lr},
        "student": {"steps": tr.student[0], "minutes": round(tr.student[1] / 60, 1), "k": list(STUDENT_STEPS), "teacher_steps": TEACHER_STEPS,
                    "k_drawn": prior["student"].get("k_drawn", list(STUDENT_STEPS)) if prior is not None else list(cfg.student_k)},
        "augment": cfg.augment if prior is None else prior.get("augment", False),
        "parameters": {"encoder": count(enc), "refiner": count(student)},
        "channels": list(channels),
        "residual": cfg.residual,
        "source": {"student": "aligned" if student.aligned else "region", "teacher": "aligned" if teacher.aligned else "region"},
        "gmac_per_step": round(gmacs(student, data.size), 3),
        "seed": cfg.seed,
        "hardware": tr.hardware,
        "wall_minutes": tr.wall_minutes,
        "validation": val,
    }
    if cfg.from_weights and prior is not None:
        training["validation_on_training_machine"] = prior.get("validation")
        training["exported_on"] = hardware(dev)
    if cfg.finetune_from and prior is not None and tr.finetune is not None:
        for k in ("validation_on_training_machine", "exported_on"):
            if k in prior:
                training[k] = prior[k]
        training["prior_validation"] = prior.get("validation")
        if prior.get("finetune"):
            training["prior_finetunes"] = list(prior.get("prior_finetunes", [])) + [prior["finetune"]]
        training["finetune"] = {
            "from": os.path.basename(os.path.abspath(cfg.finetune_from)),
            "steps": tr.finetune[0], "minutes": round(tr.finetune[1] / 60, 1), "batch": cfg.batch, "lr": cfg.lr,
            "k_drawn": list(cfg.student_k), "source": cfg.source, "roll_deg": cfg.roll, "scale": cfg.scale, "shift": cfg.shift, "wedges": cfg.wedges,
            "hardware": hardware(dev), "wall_minutes": round((time.time() - t0) / 60, 1),
            "loss": [[name, w] for name, w in cfg.finetune_loss],
            "validation_l1_before": prior.get("validation_before_finetune_l1"),
            "clips": len(data.clip_names),
        }
        if any(name in ("adv", "fm") for name, w in cfg.finetune_loss if w > 0):
            training["finetune"]["d_lr"] = cfg.d_lr
    return training


def _train(cfg: TrainConfig, data: Data, enc: Encoder, teacher: Refiner, ch: Tuple[int, ...],
           prior: Optional[Dict[str, Any]], dev: torch.device, t0: float) -> Tuple[Refiner, Trainings]:
    """The networks of the config's regime (trained, fine-tuned or loaded) -> the student and how they were trained.
    Trained here, the student is a copy of the teacher (no network is created that would draw from the generator)."""
    if cfg.from_weights and prior is not None:
        student = Refiner(ch).to(dev)
        load_weights(cfg.from_weights, enc, teacher, student)
        src = prior.get("source", {})
        student.aligned, teacher.aligned = src.get("student") == "aligned", src.get("teacher") == "aligned"
        log(f"weights from {cfg.from_weights} (trained on {prior['hardware']})")
        return student, _prior_trainings(prior)
    ck = os.path.join(cfg.cache, "checkpoints")
    os.makedirs(ck, exist_ok=True)
    if cfg.finetune_from and prior is not None:
        student = Refiner(ch).to(dev)
        load_pack_weights(cfg.finetune_from, enc, teacher, student)
        if student.aligned != (cfg.source == "aligned"):
            log(f"fine-tune: the student's source changes from {'aligned' if student.aligned else 'region'} to {cfg.source}")
        student.aligned = cfg.source == "aligned"
        _freeze(enc, teacher)
        if len(data.val_idx) and not os.path.exists(os.path.join(ck, "finetune.pt")) or cfg.fresh:
            # The student as it came, on this run's validation clips (the prior pack's own scores were on its data).
            before = quick_val(data, enc, student) if len(data.val_idx) else None
            prior["validation_before_finetune_l1"] = before
            log(f"fine-tune: validation l1 (k = 1) before: {before}")
        log(f"fine-tuning the student of {cfg.finetune_from} (trained on {prior['hardware']}) for {cfg.finetune_minutes} min")
        f = finetune_student(data, enc, student, cfg, os.path.join(ck, "finetune.pt"))
        return student, _prior_trainings(prior, finetune=f)
    teacher.aligned = cfg.source == "aligned"
    t = train_teacher(data, enc, teacher, cfg, os.path.join(ck, "teacher.pt"))
    student = copy.deepcopy(teacher)
    _freeze(enc, teacher)
    s = train_student(data, enc, teacher, student, cfg, os.path.join(ck, "student.pt"))
    return student, Trainings(teacher=t, student=s, batch=cfg.batch, lr=cfg.lr, hardware=hardware(dev),
                              wall_minutes=round((time.time() - t0) / 60, 1))


def run(cfg: TrainConfig) -> None:
    """The whole run (see the module docstring); refusals raise RefinerError before any file is written."""
    # Each regime's loss terms are known and have their inputs (refused before the data is read).
    Loss(cfg.teacher_loss), Loss(cfg.student_loss, has_target=True), Loss(cfg.finetune_loss)
    seed_all(cfg.seed)
    dev = resolve_device(cfg.device)
    t0 = time.time()
    data = Data(cfg.cache, list(cfg.clips), cfg.val_every, packed=cfg.packed, device=dev)
    if cfg.source == "aligned" and data.canvas_all is None and not cfg.from_weights:
        raise RefinerError(OLD_CACHE, "--source aligned needs a version 2 dataset cache (portrait canvas and per-sample "
                           "alignments); this cache is older: rebuild it (npm run train rebuilds outdated clips) or pass --source region")
    data.cap_validation(cfg.val_max)
    log(f"data: {len(data.clip_names)} clips, {len(data.train_idx)} train / {len(data.val_idx)} validation samples, crop {data.size}, on {dev}")
    ch: Tuple[int, ...] = cfg.channels
    prior: Optional[Dict[str, Any]] = None
    if cfg.from_weights or cfg.finetune_from:
        base = os.path.dirname(os.path.abspath(cfg.from_weights)) if cfg.from_weights else str(cfg.finetune_from)
        if cfg.finetune_from:
            check_pack(base)
        loaded: Dict[str, Any] = _read_json(os.path.join(base, "training.json"))
        prior = loaded
        ch = tuple(loaded.get("channels", ch))
    enc, teacher = Encoder().to(dev), Refiner(ch).to(dev)
    log(f"encoder {count(enc)} parameters, refiner {count(teacher)} parameters")
    student, trainings = _train(cfg, data, enc, teacher, ch, prior, dev, t0)
    for m in (enc, teacher, student):
        m.eval()
    val = validate(data, enc, teacher, student)
    for line in log_lines(val):
        log(line)
    training = training_record(cfg, data, prior, ch, enc, teacher, student, trainings, val, dev, t0)
    if cfg.save_weights:
        save_weights(cfg.save_weights, enc, teacher, student)
        with open(os.path.join(os.path.dirname(os.path.abspath(cfg.save_weights)), "training.json"), "w") as f:
            json.dump(training, f, indent=2)
        log(f"weights saved to {cfg.save_weights}")
        if cfg.out == "-":
            return
    enc, teacher, student = enc.cpu(), teacher.cpu(), student.cpu()
    files = export(enc, teacher, student, cfg.out, data.size, cfg.residual)
    with open(os.path.join(cfg.out, "training.json"), "w") as f:
        json.dump(training, f, indent=2)
    steps = default_steps(val)
    write_manifest(cfg.out, files, data.size, steps)
    write_card(cfg.out, training, steps)
    log(f"exported {', '.join(f['path'] for f in files)} and manifest.json (steps {steps}) to {cfg.out}")
