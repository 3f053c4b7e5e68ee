"""refiner.config: the command line -> one validated TrainConfig, and each refusal's stable code and flag."""
from __future__ import annotations

import dataclasses

import pytest

from refiner.config import STUDENT_LOSS, TrainConfig, parse_args
from refiner.errors import BAD_ARGUMENT, UNKNOWN_LOSS, RefinerError
from refiner.losses import Loss

BASE = ["--cache", "/tmp/c", "--out", "/tmp/o", "--clips", "a,b"]


def test_defaults_match_the_dataclass_and_the_former_script() -> None:
    cfg = parse_args(BASE)
    assert cfg == TrainConfig(cache="/tmp/c", out="/tmp/o", clips=("a", "b"))
    assert (cfg.minutes, cfg.student_minutes, cfg.batch, cfg.lr, cfg.seed, cfg.val_every) == (40.0, 10.0, 12, 1e-3, 7, 8)
    assert (cfg.channels, cfg.student_k, cfg.source, cfg.residual, cfg.device) == ((48, 96, 128), (1, 2, 4), "aligned", "paste", "cpu")
    assert cfg.regime == "train"
    assert cfg.student_loss == STUDENT_LOSS == (("teacher_l1", 1.0), ("truth_l1", 0.25))


def test_every_flag_reaches_its_field() -> None:
    cfg = parse_args(["--cache", "c", "--packed", "p", "--out", "-", "--clips", "all", "--minutes", "0.5",
                      "--student-minutes", "0.25", "--batch", "4", "--lr", "3e-4", "--warmup", "9", "--augment",
                      "--device", "cuda:1", "--channels", "16,32,48", "--student-k", "1,1,2,4", "--log-every", "5",
                      "--val-seconds", "30", "--seed", "3", "--val-every", "2", "--fresh", "--save-weights", "w.npz",
                      "--roll", "15", "--wedges", "--scale", "0.1", "--shift", "0.05", "--source", "region",
                      "--residual", "features"])
    assert cfg.packed == "p" and cfg.clips == ("all",) and cfg.out == "-" and cfg.save_weights == "w.npz"
    assert (cfg.minutes, cfg.student_minutes, cfg.batch, cfg.lr, cfg.warmup) == (0.5, 0.25, 4, 3e-4, 9)
    assert cfg.augment and cfg.fresh and cfg.wedges
    assert (cfg.device, cfg.channels, cfg.student_k) == ("cuda:1", (16, 32, 48), (1, 1, 2, 4))
    assert (cfg.log_every, cfg.val_seconds, cfg.seed, cfg.val_every) == (5, 30.0, 3, 2)
    assert (cfg.roll, cfg.scale, cfg.shift, cfg.source, cfg.residual) == (15.0, 0.1, 0.05, "region", "features")
    assert parse_args(BASE + ["--finetune-from", "pack"]).regime == "finetune"
    assert parse_args(BASE + ["--from-weights", "w.npz"]).regime == "export"


@pytest.mark.parametrize("extra, flag", [
    (["--student-k", "3"], "--student-k: each k must be one of (1, 2, 4)"),
    (["--student-k", "1,x"], "--student-k: comma-separated integers"),
    (["--channels", "16,32"], "--channels: three widths"),
    (["--channels", "16,0,48"], "--channels: three positive widths"),
    (["--from-weights", "w.npz", "--finetune-from", "p"], "--from-weights and --finetune-from: one or the other"),
    (["--batch", "0"], "--batch: at least 1"),
    (["--val-every", "0"], "--val-every: at least 1"),
    (["--log-every", "0"], "--log-every: at least 1"),
    (["--minutes", "-1"], "--minutes: a number >= 0"),
    (["--roll", "nan"], "--roll: a number >= 0"),
    (["--lr", "0"], "--lr: a number > 0"),
    (["--warmup", "-2"], "--warmup: at least 0"),
    (["--device", "gpu"], "--device: cpu, cuda, cuda:N or auto, not gpu"),
])
def test_refusals_name_the_flag(extra: list, flag: str) -> None:
    with pytest.raises(RefinerError) as e:
        parse_args(BASE + extra)
    assert e.value.code == BAD_ARGUMENT
    assert flag in e.value.message


def test_refusals_of_combinations() -> None:
    with pytest.raises(RefinerError, match="BAD_ARGUMENT: --clips all: only with --packed"):
        parse_args(["--cache", "c", "--out", "o", "--clips", "all"])
    with pytest.raises(RefinerError, match="BAD_ARGUMENT: --out -: only with --save-weights"):
        parse_args(["--cache", "c", "--out", "-", "--clips", "a"])
    with pytest.raises(RefinerError, match="BAD_ARGUMENT: --clips: at least one"):
        parse_args(["--cache", "c", "--out", "o", "--clips", ","])


def test_argparse_refuses_unknown_flags_and_choices() -> None:
    with pytest.raises(SystemExit) as e:
        parse_args(BASE + ["--no-such-flag"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        parse_args(BASE + ["--source", "sideways"])


def test_loss_specs_are_checked() -> None:
    cfg = TrainConfig(cache="c", out="o", clips=("a",))
    with pytest.raises(RefinerError, match="BAD_ARGUMENT: student loss"):
        dataclasses.replace(cfg, student_loss=()).validate()
    with pytest.raises(RefinerError, match="BAD_ARGUMENT: teacher loss"):
        dataclasses.replace(cfg, teacher_loss=(("truth_l1", -1.0),)).validate()
    # Names are the losses module's: an unknown one, or a distillation term without a teacher, is refused there.
    with pytest.raises(RefinerError) as e:
        Loss((("lpips_vgg", 1.0),))  # not a term (no VGG here: the face-perceptual term is "perceptual")
    assert e.value.code == UNKNOWN_LOSS and "truth_l1" in e.value.message
    with pytest.raises(RefinerError, match="UNKNOWN_LOSS: .*teacher_l1.* needs the teacher's sample"):
        Loss((("teacher_l1", 1.0),), has_target=False)
