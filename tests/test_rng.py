"""Per-sample noise: item i's draws depend on (seed, i) only."""

from __future__ import annotations

import torch

from difflab.rng import PerSampleNoise, derived_seed


def test_derived_seed_is_the_documented_formula():
    assert derived_seed(0, 7) == 7 and derived_seed(3, 5) == 3 * 1_000_003 + 5


def test_an_item_draws_the_same_noise_in_any_batch():
    whole = PerSampleNoise.for_items(4, 0, 6).randn((3,))
    part = PerSampleNoise.for_items(4, 2, 5).randn((3,))
    assert torch.equal(whole[2:5], part)
    alone = torch.randn(3, generator=torch.Generator().manual_seed(derived_seed(4, 3)))
    assert torch.equal(whole[3], alone)
