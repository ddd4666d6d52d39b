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
from difflab.networks.unet import CrossAttention, ResBlock, SelfAttention, UNet, UNetConfig

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


# ------------------------------------------------------------------------------------------------ text conditioning
E = 16   # the width of the test contexts (a real encoder's is e.g. 384)


def text_unet(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(network_config("tiny", IMAGES[0], context_dim=E, **overrides))


def perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with its zero-initialised layers (output convolutions, attention projections) made random, so
    that every path reaches the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.2)
    return net


def prompt_condition(B: int = 3, L: int = 5, lengths: tuple[int, ...] = (5, 2, 0)) -> Condition:
    mask = torch.arange(L) < torch.tensor(lengths)[:, None]              # (B, L), rows of 5, 2 and 0 tokens
    return Condition(context=torch.randn(B, L, E), context_mask=mask)


def test_a_text_unet_maps_a_batch_to_its_shape_and_is_zero_at_initialisation():
    net = text_unet()
    x, noise = torch.randn(3, 1, 8, 8), torch.zeros(3)
    out = net(x, noise, prompt_condition())
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))
    assert any(isinstance(m, CrossAttention) for m in net.modules())
    attention = CrossAttention(32, context_dim=E, head_channels=8, groups=8)
    cond = prompt_condition()
    h = torch.randn(3, 32, 4, 4)
    torch.testing.assert_close(attention(h, cond.context, cond.context_mask), h, rtol=0, atol=0)


def test_masked_tokens_are_ignored_and_an_all_masked_row_is_the_null_condition():
    net = perturbed(text_unet())
    x, noise = torch.randn(3, 1, 8, 8), torch.full((3,), 1.5)
    cond = prompt_condition()
    out = net(x, noise, cond)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    # other values at every masked position: the same output (row 2 is masked throughout)
    other = Condition(context=torch.where(cond.context_mask[..., None], cond.context, 1e3 * torch.randn(3, 5, E)),
                      context_mask=cond.context_mask)
    torch.testing.assert_close(net(x, noise, other), out, rtol=0, atol=1e-6)
    # the null condition: dropping every row, a context of another length, or no context at all
    null = net(x, noise, cond.null_like())
    torch.testing.assert_close(null[2], out[2], rtol=0, atol=1e-6)
    torch.testing.assert_close(net(x, noise, Condition(context=torch.randn(3, 9, E),
                                                        context_mask=torch.zeros(3, 9, dtype=torch.bool))), null,
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(net(x, noise, None), null, rtol=0, atol=1e-6)
    assert not torch.allclose(null[:2], out[:2])


def test_an_unmasked_token_changes_the_output():
    net = perturbed(text_unet())
    x, noise = torch.randn(3, 1, 8, 8), torch.full((3,), 1.5)
    cond = prompt_condition()
    context = cond.context.clone()
    context[1, 1] += 1.0                                                # the last token of row 1's two
    out, changed = net(x, noise, cond), net(x, noise, Condition(context=context, context_mask=cond.context_mask))
    assert not torch.allclose(changed[1], out[1])
    torch.testing.assert_close(changed[[0, 2]], out[[0, 2]], rtol=0, atol=1e-6)   # rows do not mix


def test_a_text_unet_checks_its_context():
    net = text_unet()
    x, noise = torch.randn(2, 1, 8, 8), torch.zeros(2)
    with pytest.raises(ValueError, match="E=16"):
        net(x, noise, Condition(context=torch.randn(2, 3, E + 1), context_mask=torch.ones(2, 3, dtype=torch.bool)))
    with pytest.raises(ValueError, match="labels"):
        net(x, noise, Condition(labels=torch.tensor([1, 2])))
    with pytest.raises(DifflabError, match="cross_attention_levels"):
        text_unet(cross_attention_levels=(2,))
    both = text_unet(num_classes=3)        # labels and a prompt together
    out = both(x, noise, Condition(labels=torch.tensor([0, 1]), context=torch.randn(2, 3, E),
                                   context_mask=torch.ones(2, 3, dtype=torch.bool)))
    assert out.shape == x.shape


def test_cross_attention_sits_at_the_chosen_levels_and_the_middle():
    def placed(net: torch.nn.Module) -> set[str]:
        return {name for name, m in net.named_modules() if isinstance(m, CrossAttention)}

    # tiny: two levels of one res block; level 1 is down.2 (after down.0 and the stride-2 conv down.1) and
    # the first num_res_blocks + 1 = 2 decoder stages, up.0 and up.1
    assert placed(text_unet()) == {"down.2.2", "up.0.2", "up.1.2", "mid_cross"}
    assert placed(text_unet(cross_attention_levels=(0,))) == {"down.0.2", "up.3.2", "up.4.2", "mid_cross"}
    assert placed(text_unet(cross_attention_levels=())) == {"mid_cross"}


def test_a_unet_without_text_has_the_parameters_it_always_had():
    """The keys and shapes of a 0.1 run's weights (tests/fixtures/legacy_v0_1): old checkpoints still load."""
    from pathlib import Path

    from safetensors.torch import load_file

    run = Path(__file__).parents[1] / "fixtures" / "legacy_v0_1" / "digits-ddpm-classcond"
    network = json.loads((run / "config.json").read_text())["network"]
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in network.items() if k != "kind"}
    net = UNet(UNetConfig(**fields))
    saved = load_file(str(run / "checkpoints" / "step_0000030" / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in saved.items()}
    assert net.mid_cross is None and not any(isinstance(m, CrossAttention) for m in net.modules())
