"""refiner.networks: forward shapes, the zero-initialised residual, InDI sampling and the sizes reported."""
from __future__ import annotations

import pytest
import torch

from refiner.constants import CODE
from refiner.errors import OLD_CACHE, RefinerError
from refiner.networks import Encoder, Refiner, count, gmacs, sample, src_of


def batch(n: int = 2, r: int = 32) -> dict:
    torch.manual_seed(0)
    return {"warp": torch.rand(n, 3, r, r), "src": torch.rand(n, 3, r, r), "src_al": torch.rand(n, 3, r, r),
            "mask": torch.ones(n, 1, r, r)}


def test_encoder_shape() -> None:
    assert Encoder()(torch.rand(3, 1, 64, 64)).shape == (3, CODE)


def test_refiner_shape_and_zero_initialised_residual() -> None:
    net = Refiner((16, 32, 48))
    b = batch()
    xt = torch.rand(2, 3, 32, 32)
    out = net(xt, b["warp"], b["src"], b["mask"], torch.ones(2, 1), torch.zeros(2, CODE))
    assert out.shape == (2, 3, 32, 32)
    # The output conv starts at zero: an untrained step returns its input.
    assert torch.equal(out, xt)
    assert net.out.bias is not None
    with torch.no_grad():
        net.out.bias.fill_(0.01)
    out = net(xt, b["warp"], b["src"], b["mask"], torch.ones(2, 1), torch.zeros(2, CODE))
    assert torch.allclose(out, xt + 0.01)


def test_sampling_reads_the_right_source() -> None:
    torch.manual_seed(1)
    net = Refiner((16, 32, 48))
    with torch.no_grad():
        for p in net.out.parameters():
            p.normal_(0, 0.01)
    b = batch()
    code = torch.zeros(2, CODE)
    region = sample(net, b, code, 2)
    assert region.shape == (2, 3, 32, 32) and not torch.equal(region, b["warp"])
    net.aligned = True
    assert src_of(net, b) is b["src_al"]
    assert not torch.equal(sample(net, b, code, 2), region)
    del b["src_al"]
    with pytest.raises(RefinerError) as e:
        sample(net, b, code, 1)
    assert e.value.code == OLD_CACHE


def test_sizes() -> None:
    net = Refiner((16, 32, 48))
    assert count(net) == sum(p.numel() for p in net.parameters()) > 0
    g32, g64 = gmacs(net, 32), gmacs(net, 64)
    # Convolutions only: the cost grows with the area.
    assert g32 > 0 and g64 == pytest.approx(4 * g32, rel=1e-9)
    # The stem alone: 160 input channels (10 x 4 x 4) -> 16, 3x3, at 8x8 for a 32 crop.
    assert g32 * 1e9 >= 16 * 8 * 8 * 160 * 9
