"""Networks: shapes for every preset, identity at initialisation where layers are zero-initialised, the
registry, the noise-level embedding and how networks read a Condition."""

from __future__ import annotations

import json

import pytest
import torch

from difflab.condition import NULL_LABEL, Condition
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.networks import BACKBONES, PRESETS, build_network, network_config
from difflab.networks.embeddings import LOG_SNR_RANGE, noise_position, sinusoidal_embedding
from difflab.networks.unet import ResBlock, SelfAttention

IMAGES = [DataSpec.pixels(1, 8, 8), DataSpec.pixels(3, 16, 16), DataSpec("latents", (4, 8, 8))]
POINTS = [DataSpec.points(2), DataSpec.points(5)]


def fits(preset: str, spec: DataSpec) -> bool:
    return BACKBONES[PRESETS[preset]].layout == spec.layout


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "ddpm-cifar10"])   # ddpm-cifar10: 36M, slow on CPU
@pytest.mark.parametrize("spec", IMAGES + POINTS, ids=lambda s: f"{s.kind}{s.shape}")
def test_every_preset_maps_a_batch_to_its_own_shape(preset, spec):
    if not fits(preset, spec):
        with pytest.raises(DifflabError, match="--model auto"):
            network_config(preset, spec)
        return
    net = build_network(network_config(preset, spec, num_classes=3))
    x = torch.randn(2, *spec.shape)
    out = net(x, torch.tensor([-3.0, 4.0]), Condition(labels=torch.tensor([0, NULL_LABEL])))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_auto_picks_a_unet_for_images_and_an_mlp_for_points():
    assert network_config("auto", IMAGES[0])["kind"] == "unet"
    assert network_config("auto", POINTS[0])["kind"] == "mlp"
    cfg = network_config("auto", IMAGES[1], num_classes=10)
    assert (cfg["in_channels"], cfg["image_size"], cfg["num_classes"]) == (3, 16, 10)


def test_config_survives_json_and_rebuilds_the_same_network():
    cfg = network_config("tiny", IMAGES[0])
    torch.manual_seed(0)
    a = build_network(cfg)
    torch.manual_seed(0)
    b = build_network(json.loads(json.dumps(cfg)))          # lists where tuples were
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("change,match", [({"kind": "dit"}, "network kind"), ({"wings": 2}, "wings"),
                                          ({"noise_input": "sigma"}, "noise_input"), ({"hidden": "wide"}, "hidden"),
                                          ({"depth": None}, "depth")])
def test_bad_network_configs_are_one_line_errors(change, match):
    with pytest.raises(DifflabError, match=match):
        build_network({**network_config("mlp", POINTS[0]), **change})


def test_a_network_config_missing_a_field_is_refused_not_filled_with_a_default():
    cfg = network_config("tiny", IMAGES[0])
    del cfg["noise_input"]
    with pytest.raises(DifflabError, match="lacks noise_input"):
        build_network(cfg)


def test_unet_is_zero_at_initialisation():
    """conv_out is zero-initialised (Ho et al.'s code), so an untrained U-Net predicts exactly 0."""
    net = build_network(network_config("tiny", IMAGES[0]))
    out = net(torch.randn(3, 1, 8, 8), torch.zeros(3))
    assert torch.equal(out, torch.zeros_like(out))


def test_residual_blocks_and_attention_are_the_identity_at_initialisation():
    x = torch.randn(2, 32, 4, 4)
    block = ResBlock(32, 32, emb_dim=16, dropout=0.0, groups=8)
    torch.testing.assert_close(block(x, torch.randn(2, 16)), x, rtol=0, atol=0)
    attention = SelfAttention(32, head_channels=8, groups=8)
    torch.testing.assert_close(attention(x), x, rtol=0, atol=0)


def test_noise_position_maps_the_log_snr_range_onto_0_to_1000():
    lam = torch.tensor([float("inf"), LOG_SNR_RANGE, 0.0, -LOG_SNR_RANGE, -float("inf")])
    torch.testing.assert_close(noise_position(lam, "log-snr"), torch.tensor([0.0, 0.0, 500.0, 1000.0, 1000.0]))
    torch.testing.assert_close(noise_position(torch.tensor([0.25]), "t"), torch.tensor([250.0]))


def test_sinusoidal_embedding_values():
    emb = sinusoidal_embedding(torch.tensor([0.0, 2.0]), 4)            # frequencies 1 and 10000^-1/2
    expected = torch.tensor([[1.0, 1.0, 0.0, 0.0],
                             [torch.cos(torch.tensor(2.0)), torch.cos(torch.tensor(0.02)),
                              torch.sin(torch.tensor(2.0)), torch.sin(torch.tensor(0.02))]])
    torch.testing.assert_close(emb, expected)


def test_a_missing_label_and_the_null_label_are_the_same_unconditional_input():
    net = build_network(network_config("mlp-small", POINTS[0], num_classes=4))
    x, noise = torch.randn(3, 2), torch.zeros(3)
    null = net(x, noise, Condition(labels=torch.full((3,), NULL_LABEL)))
    torch.testing.assert_close(net(x, noise, None), null, rtol=0, atol=0)
    torch.testing.assert_close(net(x, noise, Condition(labels=torch.tensor([0, 1, 2]))).shape, null.shape)
    assert not torch.allclose(net(x, noise, Condition(labels=torch.tensor([0, 1, 2]))), null)


def test_a_network_rejects_condition_fields_it_was_not_built_for():
    net = build_network(network_config("tiny", IMAGES[0]))
    x, noise = torch.randn(2, 1, 8, 8), torch.zeros(2)
    with pytest.raises(ValueError, match="labels"):
        net(x, noise, Condition(labels=torch.tensor([1, 2])))
    with pytest.raises(ValueError, match="context"):
        net(x, noise, Condition(context=torch.randn(2, 3, 4), context_mask=torch.ones(2, 3, dtype=torch.bool)))
