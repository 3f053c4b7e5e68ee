"""refiner.augment: the flip keeps boxes consistent, the roll moves boxes with the content, the encoder's input stays a
driving crop, and the moved validation is exact."""
from __future__ import annotations

import math

import torch

from refiner.augment import augment_batch, augment_drive, moved_batch, roll_pair
from refiner.geometry import rotation_theta


def square_batch(n: int = 6, r: int = 32) -> dict:
    """Black crops with a white mouth box (x 8..16, y 20..26) and eye boxes; the boxes say where the squares are."""
    img = torch.zeros(n, 3, r, r)
    img[:, :, 20:26, 8:16] = 1.0
    boxes = torch.tensor([[8, 20, 16, 26, 4, 6, 10, 10, 20, 6, 28, 10]] * n)
    return {"warp": img.clone(), "truth": img.clone(), "drive": torch.rand(n, 1, 64, 64), "src": torch.rand(n, 3, r, r),
            "mask": torch.ones(n, 1, r, r), "boxes": boxes}


def test_flip_mirrors_boxes_and_swaps_the_eyes() -> None:
    b0 = square_batch(n=8)
    torch.manual_seed(0)
    expected = (torch.rand(8) < 0.5).tolist()  # the flip is augment_batch's first draw
    torch.manual_seed(0)
    b = augment_batch({k: v.clone() for k, v in b0.items()}, 32)
    assert 0 < sum(expected) < 8
    for i in range(8):
        if not expected[i]:
            assert torch.equal(b["boxes"][i], b0["boxes"][i])
            assert b["warp"][i, 0, 22, 12] > 0.5
            continue
        assert b["boxes"][i].tolist() == [32 - 16, 20, 32 - 8, 26, 32 - 28, 6, 32 - 20, 10, 32 - 10, 6, 32 - 4, 10]
        # The white square moved with its box (after the colour change, still far brighter than the black).
        assert b["warp"][i, 0, 22, 32 - 12] > 0.5 and b["warp"][i, 0, 22, 12] < 0.1
    for k in ("warp", "truth", "src"):
        assert float(b[k].min()) >= 0.0 and float(b[k].max()) <= 1.0


def test_roll_moves_the_boxes_with_the_content() -> None:
    torch.manual_seed(3)
    b = square_batch(n=16)
    warp, truth, boxes, al = roll_pair(b["warp"], b["truth"], b["boxes"], 20.0, p=1.0, max_scale=0.1, max_shift=0.05)
    assert al is None and torch.equal(warp, truth)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    for i in range(16):
        m = warp[i, 0]
        cx, cy = float((m * xs).sum() / m.sum()), float((m * ys).sum() / m.sum())
        bx = boxes[i].float()
        # The box centre (pixel edges, so minus half a pixel for the centroid of pixel centres) follows the square.
        assert abs((bx[0] + bx[2]) / 2 - 0.5 - cx) < 1.0 and abs((bx[1] + bx[3]) / 2 - 0.5 - cy) < 1.0, i


def test_no_roll_is_the_identity() -> None:
    b = square_batch()
    warp, _, boxes, _ = roll_pair(b["warp"], b["truth"], b["boxes"], 0.0, p=1.0)
    assert torch.allclose(warp, b["warp"], atol=1e-5) and torch.equal(boxes, b["boxes"])


def test_augment_drive_shape_range_and_seed() -> None:
    d = torch.rand(5, 1, 64, 64)
    torch.manual_seed(1)
    a = augment_drive(d, wedges=True)
    torch.manual_seed(1)
    b = augment_drive(d, wedges=True)
    assert a.shape == d.shape and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.equal(a, d)


def test_moved_batch_half_turn_and_rotation_matrix() -> None:
    b = square_batch(n=1)
    b["src_al"] = b["warp"].clone()
    m = moved_batch(b, 180.0)
    assert torch.allclose(m["warp"], b["warp"].flip(-1).flip(-2), atol=1e-4)
    assert torch.allclose(m["src_al"], m["warp"]) and m["src"] is b["src"]  # the region source stays
    th = rotation_theta(torch.tensor([math.pi / 2]), torch.tensor([2.0]))
    assert torch.allclose(th[0, :, :2], torch.tensor([[0.0, -0.5], [0.5, 0.0]]), atol=1e-6)
