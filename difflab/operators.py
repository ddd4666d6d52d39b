"""Measurement operators A of inverse problems, y = A(x) + sigma_y n, on batches of images x (B, C, H, W).

Each is linear, batched and differentiable (DPS takes gradients through it):

  denoise          A x = x
  inpaint-box      A x = m * x, m zero on the centre box (half the side)
  inpaint-random   A x = m * x, m zero on a random ``fraction`` of the pixels, a mask per image (seeded)
  inpaint-half     A x = m * x, m zero on the right half
  sr2, sr4         A x = the mean of each f x f block (average pooling): (B, C, H/f, W/f)
  blur             A x = x convolved with a normalised Gaussian kernel (size k, width w), zero padding

An inpainting measurement keeps the image's shape with zeros where nothing is measured, so ||y - A(x)|| counts
the measured pixels only. The adjoint A^T and A as a dense matrix (for the exact Gaussian-mixture posterior)
are derived from the forward map by autograd, so they cannot disagree with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.errors import DifflabError
from difflab.rng import derived_seed

TASKS = ("inpaint-box", "inpaint-random", "inpaint-half", "sr2", "sr4", "blur", "denoise")
DEFAULT_FRACTION = 0.7      # inpaint-random: the fraction of pixels removed (DPS evaluates 70 - 95 %)
DEFAULT_BLUR_SIZE = 5
DEFAULT_BLUR_WIDTH = 1.0


class Operator:
    """A linear measurement operator on images (B, C, H, W). Subclasses define :meth:`__call__` and, where the
    measurement is not the image itself, :meth:`baseline`."""

    name: str = "operator"

    def __call__(self, x: Tensor) -> Tensor:
        """A(x): (B, C, H, W) -> the measurement (B, ...)."""
        raise NotImplementedError

    def rows(self, index: slice) -> Operator:
        """The operator of a slice of the batch (an operator with a mask per image slices its masks)."""
        return self

    @property
    def mask(self) -> Tensor | None:
        """(B or 1, 1, H, W) bool, True where a pixel is measured as it is (inpainting); None otherwise."""
        return None

    def adjoint(self, y: Tensor, image_shape: tuple[int, ...]) -> Tensor:
        """A^T y (B, C, H, W), the vector-Jacobian product of the linear map A at 0."""
        x = torch.zeros((y.shape[0], *image_shape), dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self(x), x, grad_outputs=y)
        return grad

    def matrix(self, image_shape: tuple[int, ...]) -> Tensor:
        """A as a dense (M, D) float64 matrix on flattened images of ``image_shape`` (D = C H W), M the
        measurement's size; for one image (an operator with a mask per image uses the first)."""
        D = math.prod(image_shape)
        basis = torch.eye(D, dtype=torch.float64).reshape(D, *image_shape)
        return self.rows(slice(0, 1))._apply_rows(basis).reshape(D, -1).T

    def _apply_rows(self, x: Tensor) -> Tensor:
        """A applied to many images of one measurement (the first image's mask, broadcast)."""
        return self(x)

    def measure(self, x: Tensor, sigma_y: float, noise: Tensor | None = None) -> Tensor:
        """y = A(x) + sigma_y n; ``noise`` n is shaped like A(x) (None: no noise). Unmeasured pixels stay 0."""
        y = self(x)
        if sigma_y > 0:
            if noise is None:
                raise ValueError("a noisy measurement needs its noise")
            y = y + sigma_y * noise * self._measured(y)
        return y

    def _measured(self, y: Tensor) -> Tensor:
        """1 where y holds a measurement, 0 elsewhere (the zeros an inpainting measurement keeps)."""
        return torch.ones_like(y) if self.mask is None else self.mask.to(y.dtype).expand_as(y)

    def residual(self, y: Tensor, x: Tensor) -> Tensor:
        """||y - A(x)|| per image (B,): how far x is from explaining the measurement."""
        return (y - self(x)).flatten(1).norm(dim=1)

    def baseline(self, y: Tensor, image_shape: tuple[int, ...]) -> Tensor:
        """The trivial restoration (B, C, H, W): the measurement itself where it is an image."""
        return y


@dataclass(frozen=True)
class Identity(Operator):
    name: str = "denoise"

    def __call__(self, x: Tensor) -> Tensor:
        return x


@dataclass(frozen=True, eq=False)
class Inpaint(Operator):
    """A x = m * x with ``known`` (B or 1, 1, H, W) bool the measured pixels."""

    known: Tensor
    name: str = "inpaint"

    @property
    def mask(self) -> Tensor:
        return self.known

    def __call__(self, x: Tensor) -> Tensor:
        m = self.known.to(x.device)
        if m.shape[0] not in (1, x.shape[0]) or m.shape[-2:] != x.shape[-2:]:
            raise DifflabError(f"an inpainting mask of shape {tuple(m.shape)} does not fit images {tuple(x.shape)}")
        return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))

    def _apply_rows(self, x: Tensor) -> Tensor:
        return torch.where(self.known[:1].to(x.device), x, torch.zeros((), dtype=x.dtype, device=x.device))

    def rows(self, index: slice) -> Inpaint:
        return self if self.known.shape[0] == 1 else Inpaint(self.known[index], self.name)

    def baseline(self, y: Tensor, image_shape: tuple[int, ...]) -> Tensor:
        """Each image's missing pixels filled with the mean of its measured ones (per channel)."""
        m = self.known.to(y.device).expand(y.shape[0], 1, *y.shape[-2:]).to(y.dtype)
        mean = (y * m).sum((-2, -1), keepdim=True) / m.sum((-2, -1), keepdim=True).clamp_min(1)
        return y * m + mean * (1 - m)


@dataclass(frozen=True)
class AveragePool(Operator):
    """Super-resolution: A x = the mean of each factor x factor block."""

    factor: int
    name: str = "sr"

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise DifflabError(f"images of {x.shape[-2]}x{x.shape[-1]} pixels do not divide into {self.factor}x"
                               f"{self.factor} blocks: use sr2, or images whose size {self.factor} divides")
        return F.avg_pool2d(x, self.factor)

    def baseline(self, y: Tensor, image_shape: tuple[int, ...]) -> Tensor:
        return upsample(y, tuple(image_shape[-2:]))


@dataclass(frozen=True)
class GaussianBlur(Operator):
    """A x = x * k, k the normalised Gaussian kernel of ``size`` (odd) and standard deviation ``width``
    (pixels), each channel alone, zero padding (so A is exactly linear and its own adjoint up to the edges)."""

    size: int = DEFAULT_BLUR_SIZE
    width: float = DEFAULT_BLUR_WIDTH
    name: str = "blur"

    def __post_init__(self) -> None:
        if self.size < 1 or self.size % 2 == 0:
            raise DifflabError(f"--blur-size must be an odd number >= 1, got {self.size}")
        if not self.width > 0:
            raise DifflabError(f"--blur-width must be > 0, got {self.width}")

    def kernel(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """(size, size) weights summing to 1."""
        r = torch.arange(self.size, dtype=dtype, device=device) - self.size // 2
        g = torch.exp(-0.5 * (r / self.width) ** 2)
        k = g[:, None] * g[None, :]
        return k / k.sum()

    def __call__(self, x: Tensor) -> Tensor:
        C = x.shape[1]
        k = self.kernel(x.dtype, x.device).expand(C, 1, self.size, self.size)
        return F.conv2d(x, k, padding=self.size // 2, groups=C)


def upsample(y: Tensor, size: int | tuple[int, int]) -> Tensor:
    """A low-resolution image (B, C, h, w) brought to size (H, W) (an int: square) by bicubic interpolation
    (SR3's input and the super-resolution baseline)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(y, size=size, mode="bicubic", align_corners=False)


def box_mask(height: int, width: int) -> Tensor:
    """(1, 1, H, W) bool: False on the centre box of half the side, True elsewhere."""
    known = torch.ones(1, 1, height, width, dtype=torch.bool)
    top, left = height // 4, width // 4
    known[..., top:top + (height + 1) // 2, left:left + (width + 1) // 2] = False
    return known


def half_mask(height: int, width: int) -> Tensor:
    """(1, 1, H, W) bool: False on the right half."""
    known = torch.ones(1, 1, height, width, dtype=torch.bool)
    known[..., width // 2:] = False
    return known


def random_mask(n: int, height: int, width: int, fraction: float, seed: int) -> Tensor:
    """(n, 1, H, W) bool: image i loses round(fraction H W) pixels chosen by its own generator (seed, i)."""
    if not 0.0 < fraction < 1.0:
        raise DifflabError(f"--fraction (of pixels removed) must lie in (0, 1), got {fraction}")
    drop = round(fraction * height * width)
    known = torch.ones(n, height * width, dtype=torch.bool)
    for i in range(n):
        order = torch.randperm(height * width, generator=torch.Generator().manual_seed(derived_seed(seed, i)))
        known[i, order[:drop]] = False
    return known.reshape(n, 1, height, width)


def build_operator(task: str, image_shape: tuple[int, ...], n: int = 1, *, seed: int = 0,
                   fraction: float = DEFAULT_FRACTION, blur_size: int = DEFAULT_BLUR_SIZE,
                   blur_width: float = DEFAULT_BLUR_WIDTH) -> Operator:
    """The operator of ``task`` (one of TASKS) for n images of ``image_shape`` (C, H, W)."""
    H, W = image_shape[-2:]
    if task == "denoise":
        return Identity()
    if task == "inpaint-box":
        return Inpaint(box_mask(H, W), task)
    if task == "inpaint-half":
        return Inpaint(half_mask(H, W), task)
    if task == "inpaint-random":
        return Inpaint(random_mask(n, H, W, fraction, seed), task)
    if task in ("sr2", "sr4"):
        op = AveragePool(int(task[2:]), task)
        op(torch.zeros(1, *image_shape))                     # a size the factor does not divide fails here
        return op
    if task == "blur":
        return GaussianBlur(blur_size, blur_width)
    raise DifflabError(f"unknown restoration task {task!r}; choose one of {', '.join(TASKS)}")
