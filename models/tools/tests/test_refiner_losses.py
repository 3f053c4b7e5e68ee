"""refiner.losses: the weight map, the weighted L1 and a regime's sum of terms, on tiny tensors computed by hand."""
from __future__ import annotations

import pytest
import torch

from refiner.losses import TERMS, Loss, LossInputs, register, weight_map, wl1


def tiny_batch() -> dict:
    r = 8
    mask = torch.zeros(1, 1, r, r)
    mask[..., 1:7, 1:7] = 1
    # Mouth box x 2..6, y 5..7; eyes at (1..3, 1..3) and (5..7, 1..3).
    boxes = torch.tensor([[2, 5, 6, 7, 1, 1, 3, 3, 5, 1, 7, 3]])
    return {"warp": torch.zeros(1, 3, r, r), "truth": torch.zeros(1, 3, r, r), "mask": mask, "boxes": boxes}


def test_weight_map_regions() -> None:
    b = tiny_batch()
    w = weight_map(b)[0, 0]
    assert w[5, 3] == 4.0  # mouth box, inside the mask
    assert w[2, 2] == 3.0 and w[2, 5] == 3.0  # eyes
    assert w[4, 4] == 1.0  # elsewhere in the mask
    assert w[0, 0] == 0.0 and w[7, 3] == 0.0  # outside the paste mask (row 7 is in no box either)
    assert w[6, 6] == 1.0  # right of the mouth box (x1 is exclusive)


def test_wl1_by_hand() -> None:
    a = torch.zeros(1, 3, 2, 2)
    a[0, :, 0, 0] = 1.0  # error 1 on every channel of one pixel
    b = torch.zeros(1, 3, 2, 2)
    w = torch.tensor([[[[2.0, 0.0], [1.0, 1.0]]]])
    # sum |a-b| w = 3 channels * 1 * 2 = 6; normaliser 3 * sum(w) = 12.
    assert wl1(a, b, w).item() == pytest.approx(0.5, abs=1e-6)


def test_a_regimes_loss_is_the_weighted_sum_of_its_terms() -> None:
    b = tiny_batch()
    b["truth"] = torch.full((1, 3, 8, 8), 0.5)
    out = torch.full((1, 3, 8, 8), 0.2)
    target = torch.full((1, 3, 8, 8), 0.1)
    x = LossInputs(out=out, batch=b, weights=weight_map(b), target=target)
    # Constant images: the weighted L1 is the constant difference, whatever the weights.
    assert TERMS["truth_l1"](x).item() == pytest.approx(0.3, abs=1e-5)
    assert TERMS["teacher_l1"](x).item() == pytest.approx(0.1, abs=1e-5)
    student = Loss((("teacher_l1", 1.0), ("truth_l1", 0.25)), has_target=True)
    assert student.needs_target
    assert student(x).item() == pytest.approx(0.1 + 0.25 * 0.3, abs=1e-5)
    assert not Loss((("truth_l1", 1.0),)).needs_target


def test_a_new_term_plugs_in_by_name() -> None:
    @register("test_mean_out")
    def mean_out(x: LossInputs) -> torch.Tensor:
        return x.out.mean()

    try:
        b = tiny_batch()
        x = LossInputs(out=torch.full((1, 3, 8, 8), 0.4), batch=b, weights=weight_map(b))
        loss = Loss((("truth_l1", 1.0), ("test_mean_out", 2.0)))
        assert loss(x).item() == pytest.approx(0.4 + 0.8, abs=1e-5)
        with pytest.raises(ValueError, match="registered twice"):
            register("test_mean_out")(mean_out)
    finally:
        del TERMS["test_mean_out"]
