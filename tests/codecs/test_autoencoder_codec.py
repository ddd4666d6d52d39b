"""The latent codec: z = s E(x), x = clamp(D(z / s)) for every downsample factor and channel count; its weights read
against their SHA-256; the latent cache keyed by the autoencoder (a changed one is never served the old latents)
and rebuilt, never trusted, when damaged."""

from __future__ import annotations

import warnings

import pytest
import torch

from difflab.codecs import AutoencoderCodec, build_codec, codec_data_spec
from difflab.codecs.autoencoder import WEIGHTS
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.io import tensor_bytes, tensors_sha256
from difflab.networks.autoencoder import AutoencoderConfig, build_autoencoder
from difflab.pipelines.latents import cache_folder, cached_latents

SMALL = dict(base_channels=8, channel_mults=(1, 2, 2, 2), norm_groups=4)


def make_codec(tmp_path, kind: str = "kl", downsample: int = 2, channels: int = 1, latent: int = 3, size: int = 8,
               seed: int = 0, scale: float = 0.5) -> tuple[AutoencoderCodec, torch.nn.Module]:
    """A codec around a random autoencoder whose weights are written to tmp_path, as a latent run keeps them."""
    cfg = AutoencoderConfig(kind=kind, in_channels=channels, image_size=size, latent_channels=latent,
                            downsample=downsample, codebook_size=16, **SMALL)
    torch.manual_seed(seed)
    module = build_autoencoder(cfg).eval()
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    blob = tensor_bytes(state)
    (tmp_path / WEIGHTS).write_bytes(blob)
    config = {"name": "autoencoder", "network": cfg.to_json(), "scale": scale, "weights": WEIGHTS,
              "sha256": tensors_sha256(state), "source": "test"}
    spec = DataSpec.pixels(channels, size, size)
    return build_codec(config, spec, tmp_path), module


@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("downsample,channels,latent", [(1, 1, 2), (2, 3, 4), (4, 1, 3), (8, 3, 1)])
def test_encode_decode_shapes_and_scale(tmp_path, kind, downsample, channels, latent):
    codec, module = make_codec(tmp_path, kind, downsample, channels, latent, size=16)
    assert codec.model_spec == DataSpec("latents", (latent, 16 // downsample, 16 // downsample))
    assert codec.data_spec == DataSpec.pixels(channels, 16, 16)
    assert codec_data_spec(codec.config(), codec.model_spec) == codec.data_spec
    x = torch.rand(3, channels, 16, 16) * 2 - 1
    with torch.no_grad():
        z = codec.encode(x)
        assert z.shape == (3, *codec.model_spec.shape)
        torch.testing.assert_close(z, 0.5 * module.encode_latent(x))               # z = s E(x)
        back = codec.decode(z)
        torch.testing.assert_close(back, module.decode(z / 0.5).clamp(-1, 1))      # x = clamp(D(z / s))
    assert back.shape == x.shape and back.min() >= -1 and back.max() <= 1


def test_decode_is_differentiable_for_guidance_through_the_decoder(tmp_path):
    codec, _ = make_codec(tmp_path)
    z = torch.randn(2, *codec.model_spec.shape, requires_grad=True)
    codec.decode(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_chunked_encoding_matches_one_call(tmp_path):
    codec, module = make_codec(tmp_path)
    x = torch.rand(600, 1, 8, 8) * 2 - 1          # more than a chunk
    with torch.no_grad():
        torch.testing.assert_close(codec.encode(x), 0.5 * module.encode_latent(x), atol=1e-5, rtol=1e-5)


def test_weights_are_checked_against_their_sha256(tmp_path):
    codec, _ = make_codec(tmp_path)
    blob = bytearray((tmp_path / WEIGHTS).read_bytes())
    blob[-3] ^= 0xFF
    (tmp_path / WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(DifflabError, match="damaged"):
        codec.decode(torch.zeros(1, *codec.model_spec.shape))


def test_a_codec_without_its_run_folder_knows_its_spaces_only(tmp_path):
    codec, _ = make_codec(tmp_path)
    bare = build_codec(codec.config(), codec.data_spec)
    assert bare.model_spec == codec.model_spec
    with pytest.raises(DifflabError, match="run folder"):
        bare.decode(torch.zeros(1, *codec.model_spec.shape))


def test_autoencoder_and_data_of_different_sizes_or_channels_are_refused(tmp_path):
    codec, _ = make_codec(tmp_path)
    for spec in (DataSpec.pixels(3, 8, 8), DataSpec.pixels(1, 16, 16)):
        with pytest.raises(DifflabError, match="--image-size 8 --channels 1"):
            build_codec(codec.config(), spec, tmp_path)


def test_the_cache_serves_the_latents_of_this_autoencoder_only(tmp_path):
    images = torch.rand(20, 1, 8, 8) * 2 - 1
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, module_a = make_codec(tmp_path / "a", seed=0)
    b, module_b = make_codec(tmp_path / "b", seed=1)
    cache = tmp_path / "cache"
    z_a, hit = cached_latents(a, images, cache_dir=cache)
    assert not hit
    with torch.no_grad():
        torch.testing.assert_close(z_a, module_a.encode_latent(images))      # unscaled E(x)
    assert cached_latents(a, images, cache_dir=cache)[1]                      # the second time: from the cache
    z_b, hit = cached_latents(b, images, cache_dir=cache)                     # a changed autoencoder: recomputed
    assert not hit
    with torch.no_grad():
        torch.testing.assert_close(z_b, module_b.encode_latent(images))
    assert not torch.allclose(z_a, z_b)
    _, hit = cached_latents(a, images[:10], cache_dir=cache)                  # other images: recomputed
    assert not hit


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong shape"])
def test_a_damaged_cache_is_rebuilt_never_trusted(tmp_path, damage):
    images = torch.rand(12, 1, 8, 8) * 2 - 1
    codec, module = make_codec(tmp_path)
    cache = tmp_path / "cache"
    cached_latents(codec, images, cache_dir=cache)
    from difflab.metrics.stats_cache import data_hash
    folder = cache_folder(codec.sha256, data_hash(images), cache)
    tensors = folder / "tensors.safetensors"
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "garbage":
        tensors.write_bytes(b"\x00" * 64)
    else:
        tensors.write_bytes(tensor_bytes({"latents": torch.zeros(3, 1, 1, 1)}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z, hit = cached_latents(codec, images, cache_dir=cache)
    assert not hit and any("cache entry" in str(w.message) for w in caught)
    with torch.no_grad():
        torch.testing.assert_close(z, module.encode_latent(images))
    assert cached_latents(codec, images, cache_dir=cache)[1]                  # written again, whole
