"""A U-Net that reads an image condition (SR3): channels concatenated to its input before conv_in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from difflab.condition import NULL_LABEL, Condition
from difflab.dataspec import DataSpec
from difflab.networks import build_network, network_config
from difflab.networks.unet import UNet, UNetConfig

GRAY, RGB = DataSpec.pixels(1, 8, 8), DataSpec.pixels(3, 16, 16)
LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_v0_1" / "digits-ddpm-classcond"


def image_unet(spec: DataSpec = GRAY, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny U-Net reading an image of the data's channels, its zero-initialised layers made random so that
    the image reaches the output."""
    torch.manual_seed(seed)
    net = build_network(network_config("tiny", spec, cond_channels=spec.shape[0], **overrides))
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.2)
    return net


@pytest.mark.parametrize("spec", [GRAY, RGB], ids=lambda s: f"{s.shape}")
def test_the_output_has_the_data_shape_and_conv_in_reads_both(spec):
    net = image_unet(spec)
    C, H, W = spec.shape
    assert net.conv_in.in_channels == 2 * C and net.conv_out.out_channels == C
    x = torch.randn(2, C, H, W)
    out = net(x, torch.tensor([-2.0, 3.0]), Condition(image=torch.randn(2, C, H, W)))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_the_output_depends_on_the_image():
    net = image_unet()
    x, noise, image = torch.randn(3, 1, 8, 8), torch.zeros(3), torch.randn(3, 1, 8, 8)
    out = net(x, noise, Condition(image=image))
    torch.testing.assert_close(net(x, noise, Condition(image=image.clone())), out, rtol=0, atol=0)
    other = image.clone()
    other[1] = torch.randn(1, 8, 8)                                     # change one row's image only
    changed = net(x, noise, Condition(image=other))
    assert not torch.allclose(changed[1], out[1], atol=1e-4)
    torch.testing.assert_close(changed[[0, 2]], out[[0, 2]])           # the other rows read their own


def test_labels_and_an_image_together_and_the_null_condition_keeps_the_image():
    net = image_unet(num_classes=4)
    x, noise, image = torch.randn(2, 1, 8, 8), torch.zeros(2), torch.randn(2, 1, 8, 8)
    cond = Condition(labels=torch.tensor([1, 3]), image=image)
    null = cond.null_like()
    assert torch.equal(null.labels, torch.full((2,), NULL_LABEL)) and null.image is image
    assert not torch.allclose(net(x, noise, cond), net(x, noise, null))   # the labels are read too
    dropped = cond.drop(torch.tensor([True, False]))
    assert dropped.labels.tolist() == [NULL_LABEL, 3] and dropped.image is image


def test_without_cond_channels_a_unet_has_exactly_its_old_parameters():
    """cond_channels = 0 builds the U-Net of a 0.3 run: a 0.1 run's weights (names and shapes) still load."""
    network = json.loads((LEGACY / "config.json").read_text())["network"]
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in network.items() if k != "kind"}
    net = UNet(UNetConfig(**fields))
    assert net.config.cond_channels == 0
    saved = load_file(str(LEGACY / "checkpoints" / "step_0000030" / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in saved.items()}
    net.load_state_dict(saved)
    with_image = UNet(UNetConfig(**fields, cond_channels=1))
    plain, read = dict(net.named_parameters()), dict(with_image.named_parameters())
    assert plain.keys() == read.keys()                                   # only conv_in's input widens
    assert [k for k in plain if plain[k].shape != read[k].shape] == ["conv_in.weight"]
    assert sum(p.numel() for p in read.values()) - sum(p.numel() for p in plain.values()) == net.config.base_channels * 1 * 3 * 3


@pytest.mark.parametrize("cond,match", [
    (None, "none"),
    (Condition(labels=torch.tensor([0, 1])), "labels"),              # a U-Net without classes: refused as before
    (Condition(image=torch.randn(2, 2, 8, 8)), r"\(2, 1, 8, 8\)"),   # wrong channels
    (Condition(image=torch.randn(2, 1, 4, 4)), r"\(2, 1, 8, 8\)"),   # the low-resolution image, not upsampled
])
def test_a_missing_or_misshapen_image_is_a_clear_error(cond, match):
    net = image_unet()
    with pytest.raises(ValueError, match=match):
        net(torch.randn(2, 1, 8, 8), torch.zeros(2), cond)


def test_a_unet_without_cond_channels_refuses_an_image():
    net = build_network(network_config("tiny", GRAY))
    with pytest.raises(ValueError, match="image"):
        net(torch.randn(2, 1, 8, 8), torch.zeros(2), Condition(image=torch.randn(2, 1, 8, 8)))


def test_negative_cond_channels_are_refused():
    with pytest.raises(ValueError, match="cond_channels"):
        UNet(UNetConfig(cond_channels=-1))
