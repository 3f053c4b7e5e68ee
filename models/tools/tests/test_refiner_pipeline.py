"""The whole run through `python3 -m refiner`'s main on a synthetic cache (tiny widths, a second of training): the
pack, training.json and the model card it writes, a resumed second run, and refusals as `refiner: error CODE`.
(The real thing, on real clips through npm run train, is tests/learned/train.test.ts.)"""
from __future__ import annotations

import json
import os

import pytest

from conftest import write_cache_clip
from refiner.__main__ import main

pytest.importorskip("onnx")


def test_trains_exports_and_resumes(tmp_path, capsys) -> None:
    cache, out = str(tmp_path / "cache"), str(tmp_path / "pack")
    for i in range(3):
        write_cache_clip(cache, f"clip{i}", n=4, seed=i)
    args = ["--cache", cache, "--out", out, "--clips", "clip0,clip1,clip2", "--minutes", "0.01", "--student-minutes",
            "0.005", "--channels", "16,32,48", "--batch", "2", "--val-every", "2", "--student-k", "1,2", "--log-every", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "refiner: data: 3 clips" in err and "crop 32, on cpu" in err and "refiner: teacher: step 1," in err
    with open(os.path.join(out, "manifest.json")) as f:
        man = json.load(f)
    with open(os.path.join(out, "training.json")) as f:
        tr = json.load(f)
    assert man["resolution"] == 32 and man["steps"] in (1, 2, 4)
    assert [(e["role"], e.get("source")) for e in man["files"]] == [("encoder", None), ("refiner", "aligned"), ("refiner_teacher", "aligned")]
    assert tr["samples"] == 12 and tr["clips"] == 3 and tr["channels"] == [16, 32, 48] and tr["seed"] == 7
    assert tr["student"]["k_drawn"] == [1, 2] and tr["teacher"]["steps"] >= 1 and tr["stride"] == [2]
    assert tr["train_samples"] + tr["validation_samples"] == 12
    if tr["validation_samples"]:
        assert set(tr["validation"]) >= {"warp", "teacher_k8", "student_k1", "student_k4", "warp (rolled)", "student_k1 (moved)"}
    with open(os.path.join(out, "MODEL_CARD.md")) as f:
        assert "16/32/48 channels" in f.read()
    # Again, handing the weights back instead of exporting (the lent-GPU path): the checkpoints say the time is spent,
    # nothing is trained; the weights and training.json are written beside each other.
    weights = str(tmp_path / "handback" / "weights.npz")
    os.makedirs(os.path.dirname(weights))
    out_at = args.index("--out") + 1
    again = args[:out_at] + ["-"] + args[out_at + 1:] + ["--save-weights", weights]
    assert main(again) == 0
    err = capsys.readouterr().err
    assert "refiner: teacher: resumed at step" in err and "refiner: student: resumed at step" in err
    assert "refiner: exported" not in err
    with open(str(tmp_path / "handback" / "training.json")) as f:
        assert json.load(f)["teacher"]["steps"] == tr["teacher"]["steps"]
    assert os.path.exists(weights) and os.path.exists(str(tmp_path / "handback" / "weights.teacher.npz"))


def test_refusals_exit_2_with_their_code(tmp_path, capsys) -> None:
    cache = str(tmp_path / "cache")
    os.makedirs(cache)
    base = ["--cache", cache, "--out", str(tmp_path / "pack"), "--clips", "old"]
    assert main(base) == 2
    assert "refiner: error NO_DATA: no cached clips" in capsys.readouterr().err
    write_cache_clip(cache, "old", n=2, version=1)
    assert main(base) == 2
    assert "refiner: error OLD_CACHE: --source aligned needs a version 2 dataset cache" in capsys.readouterr().err
    assert main(base + ["--student-k", "3"]) == 2
    assert "refiner: error BAD_ARGUMENT: --student-k" in capsys.readouterr().err
    assert main(base + ["--finetune-from", cache, "--source", "region"]) == 2
    assert "refiner: error NOT_A_PACK: --finetune-from" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "pack"))
