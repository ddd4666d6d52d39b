"""Every sampler x every process reproduces a Gaussian mixture given by its exact denoiser.

The data is the bench's 2-D mixture (three anisotropic components, weights 0.5/0.3/0.2, means about 2
apart, stds 0.15-0.4). Distance: sliced Wasserstein-2 over 64 fixed directions between N samples and N
exact draws. Its finite-sample floor, the same distance between two exact draws, is measured beside it.

Tolerances, for N = 20000 (measured over 20 pairs of exact draws: floor 0.024 +- 0.007, at most 0.040):
  TOL = 0.05    every sampler but langevin. Wrong mixture weights by 0.03 read ~0.08, means shifted by 0.05
                ~0.054 (test_tolerance_rejects_wrong_answers checks two such errors). The settings below
                put each sampler's own error well under it (measured 0.008-0.035).
  TOL_LANGEVIN = 0.13   annealed Langevin (ULA) is biased at any finite step: here it moves ~2.5 % of the
                mass between modes and inflates the stds by ~5 % (0.06-0.11 measured at 201 NFE; more NFE
                reduce it only slowly), so it gets its own, looser bound.
pc runs with its default corrector (one Langevin step, the "expected" step-size rule). The per-sample rule is
biased in low dimension (its invariant law is ~ p ||score||^2, a factor (D + 2) / D on the variance of a
Gaussian), so it is tested on the 64-D mixture, where that factor is 1.03.
"""

from __future__ import annotations

import pytest
import torch

from difflab.denoisers import GaussianMixtureDenoiser
from difflab.metrics.sliced_wasserstein import projection_directions, sliced_w2
from difflab.denoisers import bench_mixture
from difflab.pipelines.bench_samplers import one_thread
from difflab.process import PROCESSES, build_process
from difflab.rng import GeneratorNoise
from difflab.samplers import SAMPLERS, get_sampler, time_grid

N = 20000
TOL = 0.05
TOL_LANGEVIN = 0.13

# sampler -> (steps, spacing, options): enough steps that the sampler's own error is far below TOL on all
# four processes (euler needs 400: on VE, dx/dt = sigma'(t) eps_hat grows like exp(8.5 t), a hard ODE in t).
SETTINGS: dict[str, tuple[int, str, dict]] = {
    "ddpm": (100, "logsnr", {}),
    "ddim": (100, "quadratic", {}),
    "euler-maruyama": (100, "karras", {}),
    "pc": (100, "karras", {}),
    "euler": (400, "karras", {}),
    "heun": (25, "karras", {}),
    "dpmpp-2m": (25, "karras", {}),
    "dpmpp-3m": (20, "logsnr", {}),
    "dpmpp-2s": (20, "karras", {}),
    "dpmpp-2m-sde": (50, "karras", {}),
    "unipc": (25, "karras", {}),
    "edm": (50, "karras", {"s_churn": 40.0}),
    "rk4": (10, "karras", {}),
    "dopri5": (2, "uniform", {}),
    "langevin": (40, "logsnr", {}),
}


def draw(model: GaussianMixtureDenoiser, sampler: str, steps: int, spacing: str, n: int = N, seed: int = 2,
         **options) -> torch.Tensor:
    """n samples of ``sampler`` from noise seeded with ``seed`` (one generator: fast, fine for distributions)."""
    process = model.process
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *model.example_shape, generator=g, dtype=torch.float64) * process.prior_std()
    return get_sampler(sampler)(model, x, time_grid(process, steps, spacing), noise=GeneratorNoise(g), **options).x


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def exact() -> tuple[torch.Tensor, float]:
    """N exact draws from the data and the floor: SW2 to N other exact draws (the data is the same for every
    process, so one pair serves all)."""
    model = bench_mixture(build_process({"name": "vp"}), 2)
    g = torch.Generator().manual_seed(1)
    a, b = model.sample(N, g), model.sample(N, g)
    return a, sliced_w2(a, b, projection_directions(2))


def test_settings_cover_every_sampler():
    assert set(SETTINGS) == set(SAMPLERS)


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("sampler", list(SETTINGS))
def test_sampler_reproduces_the_2d_mixture(exact, sampler, process):
    data, floor = exact
    steps, spacing, options = SETTINGS[sampler]
    x = draw(bench_mixture(build_process({"name": process}), 2), sampler, steps, spacing, **options)
    dist = sliced_w2(x, data, projection_directions(2))
    tol = TOL_LANGEVIN if sampler == "langevin" else TOL
    assert floor < 0.7 * TOL, f"the floor {floor:.4f} leaves the test no resolution"
    assert dist < tol, f"{sampler} on {process}: SW2 {dist:.4f} >= {tol} (floor {floor:.4f})"


def wrong_weights(good: GaussianMixtureDenoiser) -> GaussianMixtureDenoiser:
    """The same mixture with its weights off by 0.05/0.03/0.02: a tolerance with teeth rejects its samples."""
    return GaussianMixtureDenoiser(good.process, good.means, good.stds, torch.tensor([0.45, 0.33, 0.22]))


def test_tolerance_rejects_wrong_answers(exact):
    """The tolerance has teeth: mixture weights off by 0.05/0.03/0.02, and a 10-step Euler solve, both fail it."""
    data, _ = exact
    good = bench_mixture(build_process({"name": "vp"}), 2)
    assert sliced_w2(draw(wrong_weights(good), "heun", 25, "karras"), data, projection_directions(2)) > TOL
    assert sliced_w2(draw(good, "euler", 10, "karras"), data, projection_directions(2)) > TOL


@pytest.mark.parametrize("process", PROCESSES)
def test_pc_with_the_per_sample_rule_reproduces_the_64d_mixture(process):
    """Predictor-corrector with the per-sample step-size rule (snr 0.16) in 64-D, where it is accurate.
    n = 2000: floor ~0.03 (measured beside); tolerance 2x the floor + 0.01."""
    model = bench_mixture(build_process({"name": process}), 64)
    g = torch.Generator().manual_seed(1)
    n, dirs = 2000, projection_directions(64)
    a, b = model.sample(n, g), model.sample(n, g)
    floor = sliced_w2(a, b, dirs)
    dist = sliced_w2(draw(model, "pc", 50, "karras", n=n, corrector_rule="per-sample"), a, dirs)
    assert dist < 2 * floor + 0.01, f"pc on {process} in 64-D: SW2 {dist:.4f} (floor {floor:.4f})"
