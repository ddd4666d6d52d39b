"""The noise-aware encoder classifier (classifier guidance's p_phi(y | x_t, t)): shapes, size, the registry's
roles, JSON round trip, that it reads the noise level and refuses a condition, and that it learns."""

from __future__ import annotations

import json
import math

import pytest
import torch

from difflab.condition import NULL_LABEL, Condition
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.networks import build_network
from difflab.networks.classifier import CLASSIFIER_PRESETS, EncoderClassifier, EncoderClassifierConfig
from difflab.networks.registry import (BACKBONES, CLASSIFIER, DEFAULT_PRESETS, PRESETS,
                                       PRESETS_BY_ROLE, ROLES, network_config, presets_for, resolve_preset)
from difflab.networks.unet import UNET_PRESETS, UNet

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def randomised(net: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """``net`` with every parameter moved by seeded noise: at initialisation the residual branches and the head
    are zero (the logits are exactly 0), which would make the checks below trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("preset", list(CLASSIFIER_PRESETS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_logits_have_one_row_per_example_and_one_column_per_class(preset, shape):
    cfg = network_config(preset, DataSpec.pixels(*shape), num_classes=7, role=CLASSIFIER)
    net = randomised(build_network(cfg))
    logits = net(torch.randn(3, *shape), torch.tensor([-5.0, 0.0, 5.0]))
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()


def test_parameter_counts_are_those_of_the_unets_encoder_half():
    counts = {name: sum(p.numel() for p in EncoderClassifier(cfg).parameters())
              for name, cfg in CLASSIFIER_PRESETS.items()}
    assert 2.5e5 < counts["classifier-tiny"] < 4e5            # 0.32M
    assert 1.5e6 < counts["classifier-small"] < 2.0e6         # 1.75M
    for name, unet in (("classifier-tiny", "tiny"), ("classifier-small", "small")):
        unet_count = sum(p.numel() for p in UNet(UNET_PRESETS[unet]).parameters())
        assert 0.3 * unet_count < counts[name] < 0.6 * unet_count


def test_an_untrained_classifier_is_uniform():
    """The head is zero-initialised: log p(y | x_t) = -log K everywhere, so it steers nothing before training."""
    net = build_network(network_config("auto", DataSpec.pixels(1, 8, 8), num_classes=4, role=CLASSIFIER))
    assert torch.equal(net(torch.randn(5, 1, 8, 8), torch.zeros(5)), torch.zeros(5, 4))


def test_it_refuses_a_condition_and_misshapen_input():
    net = EncoderClassifier(EncoderClassifierConfig(base_channels=16, norm_groups=8, num_classes=3))
    x, noise = torch.randn(2, 1, 8, 8), torch.zeros(2)
    for labels in ([1, 2], [NULL_LABEL, NULL_LABEL]):
        with pytest.raises(ValueError, match="classifier was not built to read the condition's labels"):
            net(x, noise, Condition(labels=torch.tensor(labels)))
    with pytest.raises(ValueError, match="image"):
        net(x, noise, Condition(image=torch.randn(2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.randn(2, 3, 8, 8), noise)
    with pytest.raises(ValueError, match="noise levels"):
        net(x, torch.zeros(()))
    with pytest.raises(ValueError, match="num_classes >= 2"):
        EncoderClassifier(EncoderClassifierConfig(num_classes=1))


def test_config_survives_json_and_rebuilds_the_same_classifier():
    cfg = network_config("classifier-tiny", DataSpec.pixels(3, 16, 16), num_classes=5, role=CLASSIFIER)
    torch.manual_seed(0)
    a = randomised(build_network(cfg))
    torch.manual_seed(0)
    b = randomised(build_network(json.loads(json.dumps(cfg))))          # lists where tuples were
    assert isinstance(b, EncoderClassifier) and b.config == a.config
    x, noise = torch.randn(4, 3, 16, 16), torch.linspace(-8, 8, 4)
    assert torch.equal(a(x, noise), b(x, noise))


def test_the_logits_depend_on_the_noise_level_and_are_differentiable_in_x():
    net = randomised(build_network(network_config("classifier-tiny", DataSpec.pixels(1, 8, 8), 3, role=CLASSIFIER)))
    x = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1).clone().requires_grad_(True)
    logits = net(x, torch.tensor([-6.0, 6.0]))                        # the same image, two noise levels
    assert (logits[0] - logits[1]).abs().max() > 1e-3
    (grad,) = torch.autograd.grad(torch.log_softmax(logits, -1)[:, 0].sum(), x)   # what classifier guidance reads
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_the_registry_keeps_classifiers_out_of_the_denoiser_presets():
    assert set(ROLES) == {b.role for b in BACKBONES.values()}
    assert BACKBONES["unet-encoder"].role == CLASSIFIER
    assert BACKBONES["unet"].role == BACKBONES["mlp"].role == "denoiser"
    assert PRESETS == PRESETS_BY_ROLE["denoiser"] and not set(PRESETS) & set(PRESETS_BY_ROLE[CLASSIFIER])
    assert set(PRESETS_BY_ROLE[CLASSIFIER]) == set(CLASSIFIER_PRESETS)
    names = [p for b in BACKBONES.values() for p in b.presets]
    assert len(names) == len(set(names))                              # preset names are unique across roles
    assert DEFAULT_PRESETS == {"image": "tiny", "vector": "mlp"}
    images = DataSpec.pixels(1, 8, 8)
    assert presets_for("image") == ["tiny", "small", "medium", "ddpm-cifar10"]
    assert presets_for("image", CLASSIFIER) == ["classifier-tiny", "classifier-small"]
    assert resolve_preset("auto", images) == "tiny" and resolve_preset("auto", images, CLASSIFIER) == "classifier-tiny"
    assert network_config("auto", images)["kind"] == "unet"


@pytest.mark.parametrize("args,match", [
    (("classifier-tiny", DataSpec.pixels(1, 8, 8)), "'classifier-tiny' is a classifier, not a denoiser"),
    (("tiny", DataSpec.pixels(1, 8, 8), 3, CLASSIFIER), "'tiny' is a denoiser, not a classifier"),
    (("auto", DataSpec.points(2), 3, CLASSIFIER), "classifier guidance needs image data"),
    (("classifier-tiny", DataSpec.points(2), 3, CLASSIFIER), "classifier guidance needs image data"),
    (("auto", DataSpec.pixels(1, 8, 8), None, CLASSIFIER), "needs labelled data"),
    (("auto", DataSpec.pixels(1, 8, 8), 3, "generator"), "unknown network role"),
])
def test_a_preset_of_the_wrong_role_or_data_is_a_one_line_error(args, match):
    with pytest.raises(DifflabError, match=match):
        network_config(*args)


def blobs(labels: torch.Tensor) -> torch.Tensor:
    """8x8 images in [-1, 1]: a Gaussian blob at the top-left (label 0) or the bottom-right (label 1)."""
    r = torch.arange(8.0)
    centre = torch.where(labels[:, None] == 0, 1.5, 5.5)                             # (B, 1)
    d2 = (r[None, :, None] - centre[:, :, None]) ** 2 + (r[None, None, :] - centre[:, :, None]) ** 2
    return (2 * torch.exp(-d2 / 4) - 1)[:, None]                                    # (B, 1, 8, 8)


def noisy(x0: torch.Tensor, log_snr: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """x_t on the variance-preserving path at log-SNR lambda: alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)."""
    alpha, sigma = torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()
    return alpha[:, None, None, None] * x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=g)


def test_it_learns_two_separated_classes_in_100_steps():
    """100 Adam steps of cross-entropy on noisy blobs (about 2 s on one CPU core)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = build_network(network_config("classifier-tiny", DataSpec.pixels(1, 8, 8), 2, role=CLASSIFIER,
                                       base_channels=16, norm_groups=8))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(100):
        y = torch.randint(0, 2, (32,), generator=g)
        log_snr = -4 + 10 * torch.rand(32, generator=g)                             # lambda in [-4, 6]
        loss = torch.nn.functional.cross_entropy(net(noisy(blobs(y), log_snr, g), log_snr), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    y = torch.randint(0, 2, (512,), generator=g)
    with torch.no_grad():
        low = torch.full((512,), 4.0)                                               # sigma = 0.13
        accuracy = (net(noisy(blobs(y), low, g), low).argmax(-1) == y).double().mean().item()
        chance = net(torch.randn(512, 1, 8, 8, generator=g), torch.full((512,), -math.inf)).softmax(-1)
    assert accuracy > 0.9
    assert torch.isfinite(chance).all()                                             # lambda = -inf: pure noise
