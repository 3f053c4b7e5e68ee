"""refiner.export, weights and model_card: the ONNX graphs pass onnx's checker and shape inference with the manifest's
shapes, the weights read back from them (an untrained pack's Identity aliases too), the .npz hand-back round trip,
and the model card's contents. onnxruntime is not a Debian package: the graphs are run by the engine's tests
(tests/learned) through onnxruntime-node instead."""
from __future__ import annotations

import json
import os
from typing import List, Tuple

import numpy as np
import pytest
import torch

from refiner.constants import CODE
from refiner.errors import NOT_A_PACK, RefinerError
from refiner.export import export, sha256, write_manifest
from refiner.model_card import write_card
from refiner.networks import Encoder, Refiner
from refiner.validate import default_steps
from refiner.weights import check_pack, load_pack_weights, load_weights, save_weights

onnx = pytest.importorskip("onnx")

CH = (16, 32, 48)


def modules(*ms: torch.nn.Module) -> List[torch.nn.Module]:
    return list(ms)


def nets(seed: int, trained: bool) -> Tuple[Encoder, Refiner, Refiner]:
    torch.manual_seed(seed)
    enc, teacher, student = Encoder(), Refiner(CH), Refiner(CH)
    if trained:  # no two parameters equal, as after training
        with torch.no_grad():
            for m in modules(enc, teacher, student):
                for p in m.parameters():
                    p.add_(torch.randn_like(p) * 0.01)
    return enc, teacher, student


def dims(vi) -> list:
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


@pytest.mark.parametrize("trained", [True, False])
def test_export_checks_and_reads_back(tmp_path, trained: bool) -> None:
    enc, teacher, student = nets(0, trained)
    teacher.aligned = True
    d = str(tmp_path)
    files = export(enc, teacher, student, d, 32, residual="features")
    assert [f["path"] for f in files] == ["encoder.onnx", "refiner.onnx", "refiner_teacher.onnx"]
    assert [f.get("source") for f in files] == [None, "region", "aligned"]
    assert [f.get("residual") for f in files] == [None, "features", None]
    for f in files:
        assert f["sha256"] == sha256(os.path.join(d, f["path"]))
        model = onnx.load(os.path.join(d, f["path"]))
        onnx.checker.check_model(model)
        inferred = onnx.shape_inference.infer_shapes(model).graph
        assert [(i.name, dims(i)) for i in inferred.input] == [(i["name"], i["shape"]) for i in f["inputs"]]
        assert [(o.name, dims(o)) for o in inferred.output] == [(o["name"], o["shape"]) for o in f["outputs"]]
    assert files[0]["outputs"][0]["shape"] == [1, CODE]
    write_manifest(d, files, 32, 2)
    with open(os.path.join(d, "manifest.json")) as fh:
        man = json.load(fh)
    assert list(man) == ["name", "version", "license", "description", "resolution", "steps", "files"]
    assert (man["resolution"], man["steps"], man["files"]) == (32, 2, files)
    # Read back into fresh networks: every parameter equal (an untrained pack's equal zero layers come through the
    # exporter's Identity aliases), and the source of each step network from the manifest.
    if not trained:
        names = {i.name for i in onnx.load(os.path.join(d, "refiner_teacher.onnx")).graph.initializer}
        assert any("net." + k not in names for k in teacher.state_dict())
    e2, t2, s2 = nets(1, True)
    load_pack_weights(d, e2, t2, s2)
    for m1, m2 in zip(modules(enc, teacher, student), modules(e2, t2, s2)):
        for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
            assert torch.equal(a, b), k
    assert (t2.aligned, s2.aligned) == (True, False)


def test_npz_weights_round_trip(tmp_path) -> None:
    enc, teacher, student = nets(0, True)
    path = str(tmp_path / "weights.npz")
    save_weights(path, enc, teacher, student)
    assert os.path.exists(str(tmp_path / "weights.teacher.npz"))
    with np.load(path) as z:
        assert all(k.startswith(("enc.", "student.")) for k in z.files)
    e2, t2, s2 = nets(5, True)
    load_weights(path, e2, t2, s2)
    for m1, m2 in zip(modules(enc, teacher, student), modules(e2, t2, s2)):
        assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_not_a_pack(tmp_path) -> None:
    with pytest.raises(RefinerError) as e:
        check_pack(str(tmp_path))
    assert e.value.code == NOT_A_PACK and "no training.json" in e.value.message


def scores(k1: float, k2: float, k4: float) -> dict:
    return {f"student_k{k}": {"l1": v, "mouth_l1": v, "eyes_l1": v} for k, v in ((1, k1), (2, k2), (4, k4))}


def test_default_steps_is_the_cheapest_within_one_percent() -> None:
    assert default_steps({}) == 1
    assert default_steps(scores(0.0500, 0.0484, 0.0480)) == 2  # 0.0484 <= 1.01 * 0.0480
    assert default_steps(scores(0.0500, 0.0490, 0.0480)) == 4  # 0.0490 > 1.01 * 0.0480
    assert default_steps(scores(0.0600, 0.0500, 0.0480)) == 4
    assert default_steps(scores(0.0474, 0.0470, 0.0480)) == 1  # 0.0474 <= 1.01 * 0.0470


def training(**extra: object) -> dict:
    tr = {
        "clips": 2, "validation_clips": ["b"], "train_samples": 6, "validation_samples": 6, "samples": 12,
        "max_samples_per_clip": 6, "stride": [4], "crop": 128,
        "teacher": {"steps": 7, "minutes": 0.1, "batch": 12, "lr": 0.001},
        "student": {"steps": 3, "minutes": 0.0, "k": [1, 2, 4], "teacher_steps": 8, "k_drawn": [1, 2, 4]},
        "augment": True, "parameters": {"encoder": 139728, "refiner": 1699536}, "channels": [16, 32, 48],
        "residual": "paste", "source": {"student": "aligned", "teacher": "aligned"}, "gmac_per_step": 0.123,
        "seed": 7, "hardware": "CPU, torch 1.13, 2 threads", "wall_minutes": 0.3,
        "validation": {"warp": {"l1": 0.015, "mouth_l1": 0.03, "eyes_l1": 0.02},
                       "student_k1 (rolled)": {"l1": 0.02, "mouth_l1": None, "eyes_l1": None}},
    }
    tr.update(extra)
    return tr


def test_model_card_contents_and_the_kept_hand_written_section(tmp_path) -> None:
    d = str(tmp_path)
    write_card(d, training(), 2)
    with open(os.path.join(d, "MODEL_CARD.md")) as f:
        card = f.read()
    assert card.startswith("# Refiner pack: model card (generated by models/tools/refiner)")
    for text in ("16/32/48 channels", "Default steps in manifest.json: 2", "2 talking-face clips", "12 samples",
                 "validation clips (b)", "Teacher 7 steps of batch 12", "student 3 steps of batch 6", "Seed 7",
                 "encoder 139,728 parameters", "~0.12 G multiply-adds", "a shared 2-core VM, no GPU",
                 "| warp | 0.01500 | 0.03000 | 0.02000 |", "| student_k1 (rolled) | 0.02000 | - | - |",
                 "Augmentation of every sample"):
        assert text in card, text
    assert "**Fine-tune:**" not in card
    # A hand-written section is kept when the card is regenerated; a fine-tune adds its paragraph.
    with open(os.path.join(d, "MODEL_CARD.md"), "a") as f:
        f.write("\n## Held-out scores\n\nmeasured by hand\n")
    ft = {"from": "refiner", "steps": 5, "minutes": 0.1, "batch": 4, "lr": 0.001, "k_drawn": [1], "source": "region",
          "roll_deg": 15.0, "scale": 0.1, "shift": 0.0, "wedges": True, "hardware": "CPU", "wall_minutes": 0.2}
    write_card(d, training(finetune=ft, prior_validation={"student_k1": {"l1": 0.05}}), 1)
    with open(os.path.join(d, "MODEL_CARD.md")) as f:
        card = f.read()
    assert card.count("## Held-out scores\n\nmeasured by hand") == 1
    assert "**Fine-tune:** the student above was then fine-tuned on the truth (`--finetune-from refiner`" in card
    assert "head roll of up to 15 degrees" in card and "zoom of up to +-0.1" in card and "black wedges" in card
    assert "Validation before it: student k = 1 L1 0.05000" in card
