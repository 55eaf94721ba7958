import math

import pytest
import torch

from fewstep.processes.masked import (
    SCHEDULES, apply_mask, forward_mask, get_schedule, mask_counts, random_positions_mask,
)


def test_schedule_values():
    t = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(get_schedule("arccos")(t), torch.tensor([1.0, 2 / 3, 0.0]), atol=1e-6)
    assert torch.allclose(get_schedule("cosine")(t), torch.tensor([1.0, math.cos(math.pi / 4), 0.0]), atol=1e-6)
    assert torch.allclose(get_schedule("linear")(t), torch.tensor([1.0, 0.5, 0.0]))
    for name in SCHEDULES:
        vals = get_schedule(name)(torch.linspace(0, 1, 50))
        assert (vals[1:] <= vals[:-1]).all(), f"{name} must decrease"


def test_unknown_schedule_is_a_clear_error():
    from fewstep.errors import FewstepError

    with pytest.raises(FewstepError, match="unknown mask schedule 'cosin'.*did you mean 'cosine'"):
        get_schedule("cosin")


def test_exact_mask_counts():
    torch.manual_seed(0)
    L = 37
    ratios = torch.rand(500)
    counts = mask_counts(ratios, L)
    assert torch.equal(counts, torch.round(ratios * L).long().clamp(1, L))
    mask = random_positions_mask(counts, L)
    assert torch.equal(mask.sum(1), counts)
    # at least one masked token even at ratio 0
    assert int(mask_counts(torch.zeros(1), L)) == 1


def test_mask_positions_are_uniform():
    torch.manual_seed(0)
    counts = torch.full((20000,), 3)
    freq = random_positions_mask(counts, 10).float().mean(0)
    assert torch.allclose(freq, torch.full((10,), 0.3), atol=0.015)


def test_forward_mask_only_replaces_masked_positions():
    torch.manual_seed(1)
    x0 = torch.randint(0, 17, (64, 64))
    t = torch.rand(64)
    xt, mask = forward_mask(x0, "arccos", mask_id=17, t=t)
    assert torch.equal(mask.sum(1), mask_counts(get_schedule("arccos")(t), 64))
    assert (xt[mask] == 17).all()
    assert torch.equal(xt[~mask], x0[~mask])
    assert torch.equal(apply_mask(x0, mask, 17), xt)
