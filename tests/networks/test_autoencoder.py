"""Autoencoders for latent diffusion and the patch discriminator: shapes for every factor and channel count, the KL
against its closed form, a KL autoencoder that learns to reconstruct digits, the vector quantiser's nearest codes,
straight-through gradients and EMA codebook update against hand-computed values, and exact state-dict resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.networks.autoencoder import (AutoencoderConfig, DiagonalGaussian, KLAutoencoder, VQAutoencoder,
                                          VectorQuantizer, build_autoencoder, perplexity)
from difflab.networks.discriminator import PatchDiscriminator, PatchDiscriminatorConfig


def small(kind: str = "kl", **change) -> AutoencoderConfig:
    values = dict(kind=kind, in_channels=1, image_size=16, latent_channels=4, downsample=2, base_channels=8,
                  codebook_size=16)
    return AutoencoderConfig(**{**values, **change})


# ---- shapes and config ----

@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("downsample", [1, 2, 4, 8])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("latent_channels", [1, 3, 4])
def test_every_factor_and_channel_count_gives_the_right_shapes(kind, downsample, in_channels, latent_channels):
    torch.manual_seed(0)
    model = build_autoencoder(small(kind, in_channels=in_channels, latent_channels=latent_channels,
                                    downsample=downsample))
    x = torch.randn(2, in_channels, 16, 16)
    z = model.encode_latent(x)
    assert z.shape == (2, latent_channels, 16 // downsample, 16 // downsample) == (2, *model.config.latent_shape)
    assert model.decode(z).shape == x.shape
    out = model(x, torch.Generator().manual_seed(0))
    assert out.reconstruction.shape == x.shape and out.regulariser.shape == (2,)
    assert torch.isfinite(out.reconstruction).all() and (out.regulariser >= 0).all()
    assert all(v.ndim == 0 and not v.requires_grad for v in out.stats.values())


@pytest.mark.parametrize("change,match", [({"image_size": 12, "downsample": 8}, "not divisible"),
                                          ({"image_size": 28, "downsample": 8}, "not divisible"),
                                          ({"kind": "vae"}, "unknown autoencoder kind"),
                                          ({"downsample": 3}, "downsample must be one of"),
                                          ({"downsample": 16}, "downsample must be one of"),
                                          ({"downsample": 4, "channel_mults": (1, 2)}, "channel_mults"),
                                          ({"ema_decay": 1.0}, "ema_decay"),
                                          ({"latent_channels": 0}, "latent_channels")])
def test_bad_configs_are_one_line_errors(change, match):
    with pytest.raises(DifflabError, match=match) as info:
        small(**{"kind": "kl", **change})
    assert "\n" not in str(info.value)


def test_config_survives_json():
    cfg = small("vq", channel_mults=(1, 3))
    assert AutoencoderConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    with pytest.raises(DifflabError, match="unknown keys"):
        AutoencoderConfig.from_json({**cfg.to_json(), "wings": 2})


def test_wrong_shapes_are_refused():
    model = KLAutoencoder(small("kl"))
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        model.encode_latent(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\)"):
        model.decode(torch.randn(2, 4, 4, 4))


# ---- KL autoencoder ----

def test_kl_matches_the_closed_form_on_a_hand_example():
    # Example 0: mu = (1, -2), s = (1/2, 2): 1/2 [(1 + 1/4 - 1 - log 1/4) + (4 + 4 - 1 - log 4)] = 3.625.
    # Example 1: mu = 0, s = 1: 0.
    mean = torch.tensor([[1.0, -2.0], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    std = torch.tensor([[0.5, 2.0], [1.0, 1.0]]).reshape(2, 1, 1, 2)
    q = DiagonalGaussian(mean, torch.log(std**2))
    torch.testing.assert_close(q.kl(), torch.tensor([3.625, 0.0]))
    torch.testing.assert_close(q.std, std)


def test_the_log_variance_is_clamped_as_in_ldm():
    moments = torch.tensor([0.0, 0.0, 100.0, -100.0]).reshape(1, 4, 1, 1)   # C = 2: means, then log-variances
    q = DiagonalGaussian.from_moments(moments)
    assert q.logvar.flatten().tolist() == [20.0, -30.0]


def test_posterior_samples_have_its_mean_and_std():
    n = 20000
    mean = torch.tensor([0.5, -1.0]).reshape(1, 2, 1, 1).expand(n, 2, 1, 1)
    std = torch.tensor([2.0, 0.1]).reshape(1, 2, 1, 1).expand(n, 2, 1, 1)
    q = DiagonalGaussian(mean, torch.log(std**2))
    z = q.sample(torch.Generator().manual_seed(0)).flatten(1)               # (n, 2)
    se = torch.tensor([2.0, 0.1]) / math.sqrt(n)
    assert ((z.mean(0) - torch.tensor([0.5, -1.0])).abs() < 4 * se).all()
    torch.testing.assert_close(z.std(0), torch.tensor([2.0, 0.1]), rtol=0.03, atol=0.0)
    assert torch.equal(q.sample(torch.Generator().manual_seed(0)).flatten(1), z)


def test_kl_autoencoder_learns_to_reconstruct_digits():
    """beta = 0, no GAN: 200 Adam steps of the MSE on 64 digits (8x8 in [-1, 1], per-pixel variance 0.288) bring
    the MSE of decode(encode_latent(x)) from ~0.8 to ~0.005 (measured: 0.0051, about 8 s on one core)."""
    x = load_dataset("digits").data[:64]                                     # (64, 1, 8, 8)
    variance = float(((x - x.mean(0)) ** 2).mean())
    torch.manual_seed(0)
    model = KLAutoencoder(AutoencoderConfig(kind="kl", latent_channels=2, downsample=2, base_channels=8,
                                            attention=False))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)

    def mse() -> float:
        with torch.no_grad():
            return float(((model.decode(model.encode_latent(x)) - x) ** 2).mean())

    before = mse()
    for _ in range(200):
        loss = ((model(x, generator).reconstruction - x) ** 2).flatten(1).mean(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = mse()
    assert before > variance and after < 0.05 * variance, (before, after, variance)


# ---- vector quantiser ----

def quantizer(codebook: list[list[float]], **options) -> VectorQuantizer:
    """A quantiser over a hand-made codebook, its EMA counts 1 and sums equal to the codes."""
    e = torch.tensor(codebook)
    vq = VectorQuantizer(e.shape[0], e.shape[1], **options)
    vq.codebook.copy_(e)
    vq.embed_sum.copy_(e)
    return vq


def as_latent(vectors: list[list[float]]) -> torch.Tensor:
    """(M, C) vectors -> a (1, C, 1, M) latent whose positions are the vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T[None, :, None, :].contiguous()


def test_the_nearest_code_is_chosen():
    vq = quantizer([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]).eval()
    z = as_latent([[0.1, 0.1], [0.9, -0.2], [0.2, 1.5], [0.6, 0.0], [0.5, 0.0]])   # the last is a tie of 0 and 1
    out = vq(z)
    assert out.indices.flatten().tolist() == [0, 1, 2, 1, 0]
    torch.testing.assert_close(out.z_q, as_latent([[0, 0], [1, 0], [0, 2], [1, 0], [0, 0]]))


def test_the_commitment_loss_is_beta_times_the_mean_squared_distance_to_the_code():
    vq = quantizer([[0.0, 0.0], [1.0, 0.0]], beta=0.25).eval()
    z = torch.cat([as_latent([[0.1, 0.2], [1.0, 0.4]]), as_latent([[0.0, 0.0], [0.9, 0.0]])])   # (2, 2, 1, 2)
    # example 0: (0.01 + 0.04 + 0 + 0.16) / 4; example 1: (0 + 0 + 0.01 + 0) / 4
    torch.testing.assert_close(vq(z).commitment, 0.25 * torch.tensor([0.21, 0.01]) / 4)


def test_straight_through_copies_the_gradient_of_the_quantised_output_to_the_encoder_output():
    torch.manual_seed(0)
    vq = quantizer([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]).eval()
    z = torch.randn(2, 2, 3, 3, requires_grad=True)
    weights = torch.randn(2, 2, 3, 3)

    def f(t: torch.Tensor) -> torch.Tensor:                                  # a downstream loss, not linear
        return (torch.sin(t) * weights).sum()

    z_q = vq(z).z_q
    grad_z, = torch.autograd.grad(f(z_q), z)
    leaf = z_q.detach().clone().requires_grad_()
    grad_zq, = torch.autograd.grad(f(leaf), leaf)
    torch.testing.assert_close(grad_z, grad_zq)
    assert not torch.allclose(grad_z, torch.autograd.grad(f(z), z)[0])     # it is the gradient at z_q, not at z


def test_the_ema_codebook_update_matches_a_hand_computation():
    """gamma = 1/2, eps = 0.1, codes (0, 0), (4, 0), (0, 4) with N = 1 and m = e. Vectors (1, 0), (0, 1) -> code 0;
    (3, 0), (5, 0), (4, 2) -> code 1; none -> code 2. So n = (2, 3, 0), sums (1, 1), (12, 2), (0, 0):
      N = (1 + n) / 2 = (1.5, 2, 0.5);  m_0 = (0.5, 0.5), m_1 = ((4 + 12) / 2, (0 + 2) / 2) = (8, 1), m_2 = (0, 2)
      N~ = (N + 0.1) * 4 / 4.3 = (64, 84, 24) / 43;  e = m / N~ = (43/128, 43/128), (344/84, 43/84), (0, 86/24)."""
    vq = quantizer([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], decay=0.5, eps=0.1, dead_code_threshold=0.0).train()
    z = as_latent([[1, 0], [0, 1], [3, 0], [5, 0], [4, 2]])
    out = vq(z)
    torch.testing.assert_close(out.z_q, as_latent([[0, 0], [0, 0], [4, 0], [4, 0], [4, 0]]))   # the codes before
    torch.testing.assert_close(vq.cluster_size, torch.tensor([1.5, 2.0, 0.5]))
    torch.testing.assert_close(vq.embed_sum, torch.tensor([[0.5, 0.5], [8.0, 1.0], [0.0, 2.0]]))
    torch.testing.assert_close(vq.codebook, torch.tensor([[43 / 128, 43 / 128], [344 / 84, 43 / 84], [0, 86 / 24]]))
    torch.testing.assert_close(out.usage, torch.tensor(2 / 3))
    torch.testing.assert_close(out.perplexity, torch.tensor(math.exp(-(0.4 * math.log(0.4) + 0.6 * math.log(0.6)))))
    assert int(vq.updates) == 1 and float(out.restarted) == 0


def test_eval_mode_leaves_the_codebook_alone():
    vq = quantizer([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], decay=0.5).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(as_latent([[1, 0], [3, 0]]))
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_a_dead_code_is_restarted_to_a_vector_of_the_batch_reproducibly():
    """As the hand example, with threshold 1: code 2's count 0.5 < 1, so it restarts to one of the five vectors,
    with count 1 and sum = the vector; codes 0 and 1 are updated as before."""
    vectors = [[1, 0], [0, 1], [3, 0], [5, 0], [4, 2]]

    def step(generator: torch.Generator | None) -> VectorQuantizer:
        vq = quantizer([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], decay=0.5, eps=0.1, dead_code_threshold=1.0).train()
        out = vq(as_latent(vectors), generator)
        assert float(out.restarted) == 1
        return vq

    vq = step(torch.Generator().manual_seed(0))
    assert vq.codebook[2].tolist() in [[float(a), float(b)] for a, b in vectors]
    assert float(vq.cluster_size[2]) == 1.0 and torch.equal(vq.embed_sum[2], vq.codebook[2])
    torch.testing.assert_close(vq.codebook[:2], torch.tensor([[43 / 128, 43 / 128], [344 / 84, 43 / 84]]))
    assert torch.equal(step(torch.Generator().manual_seed(0)).codebook, vq.codebook)
    assert torch.equal(step(None).codebook, step(None).codebook)       # without a generator: seeded by the step


def test_perplexity_of_a_uniform_usage_is_the_number_of_codes_used():
    torch.testing.assert_close(perplexity(torch.tensor([3.0, 0.0, 3.0, 3.0, 0.0, 3.0])), torch.tensor(4.0))
    torch.testing.assert_close(perplexity(torch.tensor([5.0, 0.0])), torch.tensor(1.0))
    codes = [[float(k), 0.0] for k in range(8)]
    vq = quantizer(codes).eval()
    out = vq(as_latent(codes[:4] * 2))                                  # codes 0..3, twice each
    torch.testing.assert_close(out.perplexity, torch.tensor(4.0))
    torch.testing.assert_close(out.usage, torch.tensor(0.5))


# ---- VQ autoencoder ----

def test_vq_decode_quantises_the_latent_it_is_given():
    torch.manual_seed(0)
    model = VQAutoencoder(small("vq")).eval()
    x = torch.randn(3, 1, 16, 16)
    z = model.encode_latent(x)
    snapped = model.quantizer.quantize(z)[0]
    assert not torch.equal(z, snapped)
    torch.testing.assert_close(model.decode(z), model.decode(snapped))
    torch.testing.assert_close(model.decode(z), model(x).reconstruction)


def test_a_vq_state_dict_round_trip_gives_identical_outputs_and_resumes_exactly():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 16, 16)
    model = VQAutoencoder(small("vq")).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):                                                  # moves weights, codebook, counts, restarts
        loss = ((model(x).reconstruction - x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = model.state_dict()
    assert {"quantizer.codebook", "quantizer.cluster_size", "quantizer.embed_sum", "quantizer.updates"} <= set(state)
    torch.manual_seed(1)
    copy = VQAutoencoder(small("vq"))
    copy.load_state_dict({k: v.clone() for k, v in state.items()})
    model.eval(), copy.eval()
    assert torch.equal(model(x).reconstruction, copy(x).reconstruction)
    assert torch.equal(model.encode_latent(x), copy.encode_latent(x))
    model.train(), copy.train()
    a, b = model(x), copy(x)                                            # one more EMA step, restarts included
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert all(torch.equal(v, copy.state_dict()[k]) for k, v in model.state_dict().items())


# ---- patch discriminator ----

@pytest.mark.parametrize("n_layers,side8,side28", [(1, 4, 14), (2, 2, 7), (3, 1, 3)])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_the_discriminator_maps_8x8_and_28x28_images_to_patch_logits(n_layers, side8, side28, channels, norm):
    d = PatchDiscriminator(PatchDiscriminatorConfig(in_channels=channels, base_channels=16, n_layers=n_layers,
                                                    norm=norm))
    assert d(torch.randn(2, channels, 8, 8)).shape == (2, 1, side8, side8)
    assert d(torch.randn(2, channels, 28, 28)).shape == (2, 1, side28, side28)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_the_discriminator_receptive_field_is_as_documented(n_layers):
    cfg = PatchDiscriminatorConfig(base_channels=8, n_layers=n_layers, norm="batch")
    torch.manual_seed(0)
    d = PatchDiscriminator(cfg).eval()                                  # running statistics: no mixing of positions
    size = 2 * cfg.receptive_field + 2**n_layers * 4
    x = torch.randn(1, 1, size, size, requires_grad=True)
    logits = d(x)
    centre = logits.shape[-1] // 2
    grad, = torch.autograd.grad(logits[0, 0, centre, centre], x)
    rows = grad[0, 0].abs().sum(1).nonzero().flatten()
    assert int(rows.max() - rows.min()) + 1 == cfg.receptive_field == 7 * 2**n_layers - 2


def test_the_discriminator_refuses_images_too_small_for_its_layers():
    d = PatchDiscriminator(PatchDiscriminatorConfig(n_layers=4, base_channels=8))
    with pytest.raises(DifflabError, match="lower n_layers"):
        d(torch.randn(2, 1, 8, 8))
    with pytest.raises(DifflabError, match="unknown discriminator norm"):
        PatchDiscriminatorConfig(norm="instance")
