"""Round trips between the five targets, on every process."""

import pytest
import torch

from difflab.parameterization import TARGETS, convert, from_x0_eps, to_x0_eps
from difflab.process import DDPMProcess, FlowProcess, VEProcess, VPProcess

PROCESSES = {"ddpm-linear": DDPMProcess("linear"), "ddpm-cosine": DDPMProcess("cosine"), "vp": VPProcess(),
             "ve": VEProcess(sigma_min=0.01, sigma_max=5.0), "flow": FlowProcess()}


@pytest.mark.parametrize("process", list(PROCESSES.values()), ids=list(PROCESSES))
@pytest.mark.parametrize("target", TARGETS)
def test_target_round_trip(process, target):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.013, 0.2, 0.5, 0.77, 0.99], dtype=torch.float64)
    c = process.coefficients(t).expand_as(x0)
    x_t = c.alpha * x0 + c.sigma * eps
    value = from_x0_eps(target, x0, eps, c)
    x0_back, eps_back = to_x0_eps(target, value, x_t, c)
    torch.testing.assert_close(x0_back, x0, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(eps_back, eps, rtol=1e-8, atol=1e-8)
    for other in TARGETS:   # any -> any agrees with the value computed from the truth
        torch.testing.assert_close(convert(value, target, other, x_t, c), from_x0_eps(other, x0, eps, c),
                                   rtol=1e-7, atol=1e-7)


def test_known_values():
    """Spot values: v = alpha eps - sigma x0, score = -eps/sigma."""
    p = DDPMProcess("linear")
    c = p.coefficients(torch.tensor([0.5], dtype=torch.float64))
    a, s = float(c.alpha), float(c.sigma)
    x0, eps = torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([[-1.0]], dtype=torch.float64)
    cc = c.expand_as(x0)
    assert float(from_x0_eps("v", x0, eps, cc)) == pytest.approx(-a - 2 * s)
    assert float(from_x0_eps("score", x0, eps, cc)) == pytest.approx(1 / s)
