"""Sampling a trained run: seed-stable across batch sizes, EMA by default, every sampler option."""

from __future__ import annotations

import pytest
import torch

from difflab.pipelines.run import load_model
from difflab.pipelines.sample import sample_run
from difflab.viz import to_uint8


def test_same_seed_same_images_whatever_the_batch_size(trained_run):
    m = load_model(trained_run, device="cpu")
    kw = dict(device="cpu")
    a = sample_run(m.network, m.process, m.config, "ddpm", 30, 12, seed=7, batch_size=12, **kw).x
    b = sample_run(m.network, m.process, m.config, "ddpm", 30, 12, seed=7, batch_size=5, **kw).x
    c = sample_run(m.network, m.process, m.config, "ddpm", 30, 4, seed=7, batch_size=1, **kw).x
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(a[:4], c, rtol=0, atol=1e-5)
    assert (to_uint8(a).astype(int) - to_uint8(b).astype(int)).__abs__().max() <= 1
    d = sample_run(m.network, m.process, m.config, "ddpm", 30, 12, seed=8, **kw).x
    assert (a - d).abs().mean() > 0.05


def test_ema_is_the_default_and_differs_from_raw(trained_run):
    ema, raw = load_model(trained_run, device="cpu"), load_model(trained_run, ema=False, device="cpu")
    pe, pr = dict(ema.network.named_parameters()), dict(raw.network.named_parameters())
    assert any(not torch.equal(pe[k], pr[k]) for k in pe)


@pytest.mark.parametrize("sampler,opts", [("ddpm", {"variance": "beta"}), ("ddpm", {"variance": "posterior"}),
                                          ("ddim", {"eta": 0.0}), ("ddim", {"eta": 1.0})])
def test_samplers_produce_images_in_range(trained_run, sampler, opts):
    m = load_model(trained_run, device="cpu")
    out = sample_run(m.network, m.process, m.config, sampler, 10, 6, seed=0, options=opts, device="cpu")
    assert out.x.shape == (6, 1, 8, 8) and out.nfe == 10
    assert out.x.min() >= -1 and out.x.max() <= 1  # x0 clipping is on by default for ddpm/ddim on images
