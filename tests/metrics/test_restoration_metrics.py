"""PSNR and SSIM: the formula by hand, the identities, and scikit-image's SSIM as the reference."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from difflab.errors import DifflabError
from difflab.metrics.restoration import psnr, ssim, ssim_window


def pair(shape: tuple[int, ...], noise: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random image batch in [-1, 1] and a noisy copy of it, clamped to [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    return (ref + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(-1, 1), ref


def test_psnr_is_the_formula_per_image():
    x, ref = pair((3, 2, 8, 8))
    for i in range(3):
        mse = ((x[i] - ref[i]) ** 2).sum().item() / (2 * 64)
        assert psnr(x, ref)[i].item() == pytest.approx(10 * math.log10(4 / mse), rel=1e-12)
    mse0 = ((x[0] - ref[0]) ** 2).mean().item()
    assert psnr(x, ref, data_range=1.0)[0].item() == pytest.approx(10 * math.log10(1 / mse0), rel=1e-12)
    # a constant error of 0.2 on range 2: 10 log10(4 / 0.04) = 20 dB
    assert psnr(ref + 0.2, ref).tolist() == pytest.approx([20.0] * 3, abs=1e-10)


def test_psnr_is_infinite_for_equal_images():
    x, ref = pair((2, 1, 8, 8))
    x[1] = ref[1]
    out = psnr(x, ref)
    assert out.shape == (2,) and math.isfinite(out[0].item()) and out[1].item() == math.inf


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 16, 16), (1, 1, 5, 7)])
def test_ssim_is_one_for_identical_images(shape):
    _, ref = pair(shape)
    assert torch.allclose(ssim(ref, ref), torch.ones(shape[0], dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("hw", [8, 16, 28])
def test_ssim_decreases_with_added_noise(hw):
    _, ref = pair((2, 1, hw, hw))
    g = torch.Generator().manual_seed(1)
    n = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    values = torch.stack([ssim(ref + s * n, ref) for s in (0.0, 0.05, 0.2, 0.5)])   # (4, B)
    assert (values[1:] < values[:-1]).all(), values


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 8, 8), (3, 8, 8), (1, 11, 9)])
def test_ssim_matches_scikit_image(shape):
    metrics = pytest.importorskip("skimage.metrics")
    x, ref = pair((2, *shape), seed=3)
    k = ssim_window(*shape[-2:])
    ours = ssim(x, ref)
    for i in range(2):
        theirs = metrics.structural_similarity(
            x[i].numpy(), ref[i].numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=2.0, win_size=k, channel_axis=0)
        assert ours[i].item() == pytest.approx(theirs, abs=1e-10)     # the same convention, to rounding


def test_ssim_window_is_the_largest_odd_size_up_to_eleven():
    assert [ssim_window(n, n) for n in (1, 2, 7, 8, 11, 12, 64)] == [1, 1, 7, 7, 11, 11, 11]
    assert ssim_window(8, 28) == 7


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_mismatched_shapes_are_one_line_errors(metric):
    with pytest.raises(DifflabError, match=r"\(B, C, H, W\)") as error:
        metric(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 7))
    assert "\n" not in str(error.value)
    with pytest.raises(DifflabError):
        metric(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))


def test_importing_difflab_does_not_import_torchmetrics():
    """torchmetrics is loaded by ssim only: the package and its metrics import without it."""
    code = ("import sys, difflab, difflab.metrics, difflab.metrics.restoration, difflab.restoration; "
            "print('torchmetrics' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
