"""Restoration metrics between a restored image and its reference, per image: PSNR and SSIM.

Images are (B, C, H, W) in [-1, 1], so the data range is 2. SSIM goes through torchmetrics, imported only
when it is called (importing difflab never loads it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.errors import DifflabError

SSIM_SIGMA = 1.5                   # Wang et al. 2004: a Gaussian window of std 1.5 pixels, 11 taps
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)   # 5: the window truncated at 3.5 sigma (torchmetrics, scikit-image)


def _check_pair(x: Tensor, ref: Tensor) -> None:
    if x.ndim != 4 or x.shape != ref.shape:
        raise DifflabError(f"restoration metrics compare two batches of images (B, C, H, W) of one shape, got "
                           f"{tuple(x.shape)} and {tuple(ref.shape)}")


def psnr(x: Tensor, ref: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio (B,) float64 in dB: 10 log10(data_range^2 / MSE), the MSE over each image's
    C H W values; +inf where x equals ref."""
    _check_pair(x, ref)
    mse = (x.to(torch.float64) - ref.to(torch.float64)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim_window(height: int, width: int) -> int:
    """The SSIM window size k on an H x W image: the largest odd k <= min(11, H, W) (7 on 8 x 8 digits)."""
    k = min(11, height, width)
    return k if k % 2 else k - 1


def ssim(x: Tensor, ref: Tensor, data_range: float = 2.0) -> Tensor:
    """Structural similarity (B,) float64 (Wang et al. 2004, eq. 13; k1 = 0.01, k2 = 0.03), the mean over
    channels and the valid part of the image of the SSIM map of a Gaussian window (sigma 1.5, 11 taps).

    The convention of scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, win_size=k)``: the local statistics see the image mirrored at its edges
    (half-sample symmetric), and the map is averaged only over the pixels at least (k - 1) / 2 from an edge,
    with k = :func:`ssim_window` (7 on 8 x 8 digits, so the mean covers the central 2 x 2; 11 from 11 x 11
    up). The map itself comes from torchmetrics (``structural_similarity_index_measure``), fed the image
    mirrored by the window's radius so that its own reflect padding and uncropped mean do not enter.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(x, ref)
    H, W = x.shape[-2:]
    c = (ssim_window(H, W) - 1) // 2
    p = SSIM_RADIUS
    _, full = structural_similarity_index_measure(
        _mirror(x.to(torch.float64), p), _mirror(ref.to(torch.float64), p), gaussian_kernel=True,
        sigma=SSIM_SIGMA, data_range=data_range, reduction="none", return_full_image=True)   # (B, C, H+2p, W+2p)
    return full[..., p + c:p + H - c, p + c:p + W - c].flatten(1).mean(1)


def _mirror(x: Tensor, p: int) -> Tensor:
    """x (B, C, H, W) padded by p on each side by half-sample symmetric reflection (d c b a | a b c d | d c b a),
    scipy.ndimage's "reflect", repeated as often as a small image needs."""
    def index(n: int) -> Tensor:
        i = torch.arange(-p, n + p, device=x.device) % (2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i)
    return x[..., index(x.shape[-2]), :][..., index(x.shape[-1])]
