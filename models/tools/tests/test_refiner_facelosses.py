"""The adversarial fine-tune's pieces: the face crops the face networks read (a similarity from the eye and mouth
boxes), the discriminators' views and losses, the loss spec on the command line, the face-network terms on the real
pinned networks (MobileFace and FaceMesh, converted by tfjs_convert), and a short adversarial fine-tune through
`python3 -m refiner` that checkpoints and resumes its discriminators."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from conftest import write_cache_clip
from refiner.__main__ import main
from refiner.adversarial import EYE_SIDE, MOUTH_SIDE, Critic, composite, region_grid, regions
from refiner.config import parse_args, parse_loss
from refiner.errors import BAD_ARGUMENT, UNKNOWN_LOSS, RefinerError
from refiner.facenets import TEMPLATE_112, box_centres, face_grid, similarity
from refiner.losses import Aux, Loss, LossInputs

pytest.importorskip("onnx")


def _boxes(points: torch.Tensor, half: float = 3.0) -> torch.Tensor:
    """Boxes (mouth, eye, eye) of side 2 * half around n x 3 x 2 points given as (left eye, right eye, mouth)."""
    le, re, m = points[:, 0], points[:, 1], points[:, 2]
    rows = []
    for p in (m, re, le):  # the right eye first: box_centres must sort the eyes by x
        rows += [p[:, 0] - half, p[:, 1] - half, p[:, 0] + half, p[:, 1] + half]
    return torch.stack(rows, 1)


def test_similarity_recovers_a_rotation_scale_and_shift() -> None:
    src = torch.tensor(TEMPLATE_112)
    ang, s, t = 0.3, 1.7, torch.tensor([5.0, -3.0])
    rot = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]]) * s
    dst = (src @ rot.T + t)[None]
    m = similarity(src, dst)[0]
    assert torch.allclose(m[:, :2], rot, atol=1e-4) and torch.allclose(m[:, 2], t, atol=1e-3)


def test_face_grid_reads_the_template_out_of_the_crop() -> None:
    # A 224 crop holding the template at twice its size: the 112 face read from it samples every second pixel.
    r = 224
    pts = torch.tensor(TEMPLATE_112)[None] * 2
    boxes = _boxes(pts)
    assert torch.allclose(box_centres(boxes), pts, atol=1e-5)
    grid = face_grid(boxes, r, 112)
    px = (grid[0] + 1) * r / 2 - 0.5  # back to crop pixels
    assert torch.allclose(px[0, 0], torch.tensor([0.0, 0.0]), atol=1e-3)
    assert torch.allclose(px[56, 30], torch.tensor([60.0, 112.0]), atol=1e-3)
    # With a margin of 2, twice the reach about the same centre (template point 55.5, the middle of 112 pixels): output
    # pixel 56 reads template point 56.5, crop pixel 113.
    wide = (face_grid(boxes, r, 112, 2.0)[0] + 1) * r / 2 - 0.5
    assert torch.allclose(wide[56, 56], torch.tensor([113.0, 113.0]), atol=1e-2)
    assert torch.allclose(wide[0, 0], torch.tensor([-111.0, -111.0]), atol=1e-2)


def test_regions_and_the_critic() -> None:
    torch.manual_seed(0)
    n, r = 3, 64
    img = torch.rand(n, 3, r, r)
    boxes = torch.tensor([[24, 40, 40, 50, 10, 16, 22, 24, 41, 16, 53, 24]] * n)  # eyes at x 16 and 47 (63 - 16)
    v = regions(img, boxes)
    assert v["face"].shape == (n, 3, r, r) and v["face_half"].shape == (n, 3, r // 2, r // 2)
    assert v["eyes"].shape == (2 * n, 3, EYE_SIDE, EYE_SIDE) and v["mouth"].shape == (n, 3, MOUTH_SIDE, MOUTH_SIDE)
    # The mouth view covers its box grown around the box centre: its middle pixel reads the box centre.
    g = region_grid(boxes, 0, r, MOUTH_SIDE)
    mid = (g[0, MOUTH_SIDE // 2, MOUTH_SIDE // 2] + 1) * r / 2 - 0.5
    assert torch.allclose(mid, torch.tensor([32.0, 45.0]), atol=0.6)
    # The image-right eye is mirrored: a picture symmetric about the face's middle gives two equal eye views.
    sym = torch.rand(1, 3, r, r // 2)
    sym = torch.cat([sym, sym.flip(-1)], -1)
    e = regions(sym, boxes[:1])["eyes"]
    assert torch.allclose(e[0], e[1], atol=1e-5)
    critic = Critic()
    d, stats = critic.d_loss(img, img.flip(-1).detach(), boxes)
    assert set(stats) == set(Critic.VIEWS) and 0 < d.item() < 4 * 3 * 2
    d.backward()
    assert all(p.grad is not None for p in critic.parameters())
    fake = img.clone().requires_grad_(True)
    adv, fm = critic.g_losses(img, fake, boxes)
    (adv + fm).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_composite_keeps_the_warp_outside_the_mask() -> None:
    out, warp, truth = torch.full((1, 3, 4, 4), 0.2), torch.full((1, 3, 4, 4), 0.5), torch.full((1, 3, 4, 4), 0.9)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 1
    fake, real = composite(out, {"warp": warp, "truth": truth, "mask": mask})
    assert fake[0, 0, 0, 0] == 0.5 and real[0, 0, 0, 0] == 0.5 and fake[0, 0, 1, 1] == 0.2 and real[0, 0, 1, 1] == 0.9


def test_the_loss_spec_on_the_command_line() -> None:
    assert parse_loss("--finetune-loss", "truth_l1=1, id=0.1,adv") == (("truth_l1", 1.0), ("id", 0.1), ("adv", 1.0))
    with pytest.raises(RefinerError) as e:
        parse_loss("--finetune-loss", "id=lots")
    assert e.value.code == BAD_ARGUMENT and "--finetune-loss" in e.value.message
    cfg = parse_args(["--cache", "c", "--out", "o", "--clips", "a", "--finetune-loss", "truth_l1=1,landmarks=2",
                      "--d-lr", "1e-3"])
    assert cfg.finetune_loss == (("truth_l1", 1.0), ("landmarks", 2.0)) and cfg.d_lr == 1e-3
    with pytest.raises(RefinerError) as e:
        parse_args(["--cache", "c", "--out", "o", "--clips", "a", "--d-lr", "0"])
    assert e.value.code == BAD_ARGUMENT and "--d-lr" in e.value.message
    loss = Loss((("truth_l1", 1.0), ("id", 0.1), ("landmarks", 0.0), ("fm", 1.0)))
    assert loss.needs_id_net and not loss.needs_mesh and loss.needs_critic and not loss.needs_target
    for spec in ((("truth_l1", 0.0),), (("sharpness", 1.0),)):
        with pytest.raises(RefinerError) as e:
            Loss(spec)
        assert e.value.code == UNKNOWN_LOSS
    # A face-network term without the networks is refused by name, not a crash.
    x = LossInputs(out=torch.rand(1, 3, 32, 32), batch={"truth": torch.rand(1, 3, 32, 32), "warp": torch.rand(1, 3, 32, 32),
                   "mask": torch.ones(1, 1, 32, 32), "boxes": torch.tensor([[12, 20, 20, 26, 6, 8, 12, 12, 20, 8, 26, 12]])},
                   weights=torch.ones(1, 1, 32, 32))
    with pytest.raises(RefinerError) as e:
        Loss((("id", 1.0),))(x)
    assert e.value.code == UNKNOWN_LOSS and "faces" in e.value.message


def _face_batch() -> dict:
    """A 128 crop holding a drawn face (skin disc, dark eyes, a mouth) at the template's place, as a batch."""
    r = 128
    y, x = torch.meshgrid(torch.arange(r).float(), torch.arange(r).float(), indexing="ij")
    img = torch.stack([torch.full((r, r), 0.85), torch.full((r, r), 0.65), torch.full((r, r), 0.55)])
    img = img * (((x - 64) ** 2 / 40 ** 2 + (y - 66) ** 2 / 52 ** 2) < 1).float() + 0.2
    pts = torch.tensor(TEMPLATE_112)[None] * (r / 112)
    for (cx, cy), rad in zip(pts[0].tolist(), (5, 5, 7)):
        img = img * (1 - 0.8 * (((x - cx) ** 2 + (y - cy) ** 2) < rad ** 2).float())
    img = img.clamp(0, 1)[None]
    return {"truth": img, "warp": img, "mask": torch.ones(1, 1, r, r), "boxes": _boxes(pts, 6).round().long()}


def test_face_network_terms_on_the_real_networks() -> None:
    from refiner.facenets import FaceNets

    nets = FaceNets(True, True)
    b = _face_batch()
    same = LossInputs(out=b["truth"].clone().requires_grad_(True), batch=b, weights=b["mask"], aux=Aux(faces=nets))
    loss = Loss((("id", 1.0), ("perceptual", 1.0), ("landmarks", 1.0)))
    v = loss(same)
    assert v.item() < 1e-4  # the output is the truth: every term is 0
    shut = b["truth"].clone()
    shut[..., 40:70, 20:110] = shut[..., 40:70, 20:110].mean()  # the eyes painted over
    other = LossInputs(out=shut.requires_grad_(True), batch=b, weights=b["mask"], aux=Aux(faces=nets))
    w = loss(other)
    assert w.item() > 10 * max(v.item(), 1e-4)
    w.backward()
    assert other.out.grad is not None and other.out.grad.abs().sum() > 0
    assert "id" in loss.describe() and loss.describe() == ""


def test_an_adversarial_finetune_runs_checkpoints_and_resumes(tmp_path, capsys) -> None:
    cache, pack = str(tmp_path / "cache"), str(tmp_path / "pack")
    for i in range(2):
        write_cache_clip(cache, f"clip{i}", n=3, seed=i)
    base = ["--cache", cache, "--clips", "clip0,clip1", "--channels", "8,16,16", "--batch", "2", "--val-every", "2",
            "--student-k", "1", "--log-every", "1"]
    assert main(base + ["--out", pack, "--minutes", "0.005", "--student-minutes", "0.003"]) == 0
    capsys.readouterr()
    tuned = str(tmp_path / "tuned")
    ft = base + ["--out", tuned, "--finetune-from", pack, "--finetune-minutes", "0.02", "--finetune-loss",
                 "truth_l1=1,adv=0.05,fm=1", "--d-lr", "1e-4"]
    assert main(ft) == 0
    err = capsys.readouterr().err
    assert "discriminators of" in err and "D margin face" in err and "adv " in err
    with open(os.path.join(tuned, "training.json")) as f:
        tr = json.load(f)
    assert tr["finetune"]["loss"] == [["truth_l1", 1.0], ["adv", 0.05], ["fm", 1.0]] and tr["finetune"]["d_lr"] == 1e-4
    ck = torch.load(os.path.join(cache, "checkpoints", "finetune.pt"))
    assert {"net", "critic", "opt", "d_opt"} <= set(ck)
    assert main(ft) == 0
    assert "fine-tune: resumed at step" in capsys.readouterr().err
