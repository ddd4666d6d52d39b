"""What every sampler promises: NFE counts, one callback a grid time, samples independent of the batch,
one-line option errors, and the closed forms each sampler is built on."""

from __future__ import annotations

import math

import pytest
import torch

from difflab.denoisers import GaussianMixtureDenoiser
from difflab.errors import DifflabError
from difflab.denoisers import bench_mixture
from difflab.pipelines.bench_samplers import one_thread
from difflab.process import DDPMProcess, FlowProcess, VEProcess, VPProcess, build_process
from difflab.rng import GeneratorNoise, PerSampleNoise
from difflab.samplers import SAMPLERS, check_options, get_sampler, sampler_options, time_grid
from difflab.samplers.langevin import langevin_step
from difflab.samplers.pc import langevin_correct, transition
from difflab.samplers.sde import euler_maruyama_step, resolve_diffusion

STEPS = 7
STOCHASTIC = {"ddpm": {}, "ddim": {"eta": 0.5}, "euler-maruyama": {}, "pc": {"corrector_steps": 2}, "langevin": {},
              "dpmpp-2m-sde": {}, "edm": {"s_churn": 10.0}}
GRID_SAMPLERS = [s for s in SAMPLERS if s != "dopri5"]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


def setup(process: str = "vp", n: int = 6, dim: int = 2):
    model = bench_mixture(build_process({"name": process}), dim)
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * model.process.prior_std()
    return model, x


# --- NFE and callbacks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler,options,expected", [
    ("ddpm", {}, STEPS), ("ddim", {}, STEPS), ("euler-maruyama", {}, STEPS), ("euler", {}, STEPS),
    ("heun", {}, 2 * STEPS - 1),                        # the step onto 0 is the denoising step: no correction
    ("rk4", {}, 4 * STEPS - 3),
    ("pc", {"corrector_steps": 0}, STEPS),
    ("pc", {}, 2 * (STEPS - 1) + 1),                    # (1 + M)(N - 1) + 1: no corrector after the denoising step
    ("pc", {"corrector_steps": 3}, 4 * (STEPS - 1) + 1),
    ("langevin", {}, 5 * STEPS + 1),                    # M steps at each of the N levels, then the denoising step
    ("langevin", {"langevin_steps": 1}, STEPS + 1),
    ("dpmpp-2m", {}, STEPS), ("dpmpp-3m", {}, STEPS), ("dpmpp-2m-sde", {}, STEPS), ("unipc", {}, STEPS),
    ("unipc", {"order": 3}, STEPS),                     # the corrector reuses the next step's evaluation
    ("dpmpp-2s", {}, 2 * STEPS - 1), ("edm", {}, 2 * STEPS - 1), ("edm", {"s_churn": 5.0}, 2 * STEPS - 1),
])
def test_nfe_counts(sampler, options, expected):
    model, x = setup()
    res = get_sampler(sampler)(model, x, time_grid(model.process, STEPS), noise=GeneratorNoise(torch.Generator()),
                               **options)
    assert res.nfe == expected


def test_dopri5_counts_every_evaluation():
    """NFE = the evaluations the callback saw (trial stages included) + the denoising step; tighter
    tolerances cost more."""
    model, x = setup()
    seen = []
    res = get_sampler("dopri5")(model, x, time_grid(model.process, STEPS), callback=seen.append)
    assert res.nfe == len(seen) + 1 and [i.index for i in seen] == list(range(len(seen)))
    assert seen[0].t == 1.0 and min(i.t for i in seen) == pytest.approx(model.process.t_min)
    assert get_sampler("dopri5")(model, x, time_grid(model.process, STEPS), rtol=1e-8, atol=1e-8).nfe > res.nfe


@pytest.mark.parametrize("sampler", GRID_SAMPLERS)
def test_callback_sees_each_grid_time_once(sampler):
    model, x = setup()
    ts = time_grid(model.process, STEPS, "karras")
    seen = []
    get_sampler(sampler)(model, x, ts, noise=GeneratorNoise(torch.Generator()), callback=seen.append)
    assert [i.index for i in seen] == list(range(STEPS))
    assert [i.t for i in seen] == ts[:-1].tolist()
    assert all(i.x.shape == x.shape and i.x0.shape == x.shape for i in seen)


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "langevin"])
def test_one_step_is_the_x0_prediction(sampler):
    """On the grid [t_max, 0] every sampler but langevin (which first takes its Langevin steps at t_max)
    returns E[x_0 | x_{t_max}]."""
    model, x = setup("flow")
    ts = time_grid(model.process, 1)
    out = get_sampler(sampler)(model, x, ts, noise=GeneratorNoise(torch.Generator()))
    assert out.nfe == 1
    torch.testing.assert_close(out.x, model(x, torch.tensor(1.0, dtype=torch.float64)).x0)


# --- batch independence ----------------------------------------------------------------------------------
@pytest.mark.parametrize("process", ["vp", "flow"])
@pytest.mark.parametrize("sampler", list(STOCHASTIC))
def test_a_sample_does_not_depend_on_the_batch(sampler, process):
    """With PerSampleNoise, sample i is the same in a batch of 6 and in batches of 2 and 4: the samplers
    draw noise only through noise.randn_like and use no batch-wide statistic (pc's norms are per sample)."""
    model, _ = setup(process)
    seeds = list(range(100, 106))
    ts = time_grid(model.process, 12, "logsnr")

    def run(ids: list[int]) -> torch.Tensor:
        noise = PerSampleNoise(ids)
        x = noise.randn((2,), torch.float64) * model.process.prior_std()
        return get_sampler(sampler)(model, x, ts, noise=noise, **STOCHASTIC[sampler]).x

    whole = run(seeds)
    parts = torch.cat([run(seeds[:2]), run(seeds[2:])])
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-12)
    assert (whole[0] - whole[1]).abs().max() > 1e-3                   # the seeds do matter


def test_dopri5_depends_on_the_batch_only_within_its_tolerance():
    """The documented exception: the adaptive step size is chosen for the whole batch."""
    model, x = setup("vp", n=8)
    ts = time_grid(model.process, 2)
    whole = get_sampler("dopri5")(model, x, ts).x
    parts = torch.cat([get_sampler("dopri5")(model, x[:3], ts).x, get_sampler("dopri5")(model, x[3:], ts).x])
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-3)


@pytest.mark.parametrize("sampler,options", [("ddpm", {}), ("ddim", {"eta": 0.3}), ("euler-maruyama", {}),
                                             ("pc", {}), ("langevin", {}), ("dpmpp-2m-sde", {}),
                                             ("edm", {"s_churn": 1.0})])
def test_stochastic_samplers_need_noise(sampler, options):
    model, x = setup()
    with pytest.raises(DifflabError, match="noise"):
        get_sampler(sampler)(model, x, time_grid(model.process, 3), **options)


# --- closed forms behind each sampler --------------------------------------------------------------------
@pytest.mark.parametrize("process", ["ddpm", "vp", "ve", "flow"])
def test_euler_maruyama_with_eta_zero_is_the_euler_ode(process):
    model, x = setup(process)
    ts = time_grid(model.process, 9, "karras")
    em = get_sampler("euler-maruyama")(model, x, ts, eta=0.0).x                 # no noise needed
    assert torch.equal(em, get_sampler("euler")(model, x, ts).x)


class FixedNoise:
    """Always the same z: lets a test replay a stochastic step by hand."""

    def __init__(self, z: torch.Tensor) -> None:
        self.z = z

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.z


@pytest.mark.parametrize("process", [VPProcess(), VEProcess(), DDPMProcess("cosine")])
def test_sde_diffusion_is_the_reverse_sde_of_song_et_al(process):
    """w = g^2 turns u - (w/2) score into the drift of Song et al. eq. 6:
    x_s = x_t - h (f x_t - g^2 score) + g sqrt(h) z."""
    model = bench_mixture(process, 2)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t, s = 0.6, 0.55
    pred = model(x, torch.tensor(t, dtype=torch.float64))
    tt = torch.tensor(t, dtype=torch.float64)
    f, g2 = float(process.drift(tt)), float(process.diffusion_sq(tt))
    by_hand = x - (t - s) * (f * x - g2 * pred.score) + math.sqrt(g2 * (t - s)) * z
    torch.testing.assert_close(euler_maruyama_step(x, pred, t, s, g2, FixedNoise(z)), by_hand, rtol=1e-10, atol=1e-10)


def test_diffusion_auto_is_sigma_only_where_alpha_vanishes():
    assert resolve_diffusion(FlowProcess(), "auto", 1.0) == "sigma"
    assert resolve_diffusion(FlowProcess(t_max=0.99), "auto", 0.99) == "sde"
    assert resolve_diffusion(VPProcess(), "auto", 1.0) == "sde"
    with pytest.raises(DifflabError, match="--diffusion sigma"):
        resolve_diffusion(FlowProcess(), "sde", 1.0)                     # g^2 = 2t/(1-t) is infinite at t = 1
    model, x = setup("flow")
    res = get_sampler("euler-maruyama")(model, x, time_grid(model.process, 20), noise=GeneratorNoise(torch.Generator()))
    assert torch.isfinite(res.x).all()


def test_reverse_diffusion_predictor_reduces_to_song_algorithms():
    """a_ts and sigma_{t|s}^2: sqrt(1 - beta_i) and beta_i between consecutive DDPM steps (Alg. 3);
    1 and sigma_t^2 - sigma_s^2 on VE (Alg. 2)."""
    ddpm = DDPMProcess("linear")
    for i in (1, 10, 500, 1000):
        a_ts, var = transition(ddpm, i / 1000, (i - 1) / 1000)
        beta = float(ddpm.betas[i - 1])
        assert a_ts == pytest.approx(math.sqrt(1 - beta), rel=1e-12) and var == pytest.approx(beta, rel=1e-9)
    ve = VEProcess()
    a_ts, var = transition(ve, 0.7, 0.4)
    s_t, s_s = (float(ve.alpha_sigma(torch.tensor(t, dtype=torch.float64))[1]) for t in (0.7, 0.4))
    assert a_ts == 1.0 and var == pytest.approx(s_t**2 - s_s**2, rel=1e-12)


def test_langevin_step_has_the_ula_stationary_variance():
    """ULA on N(m, v) with step e: x <- x + e (m - x) / v + sqrt(2e) z is stationary at variance
    v / (1 - e / (2v)) (a closed form; a sqrt(e) noise would give half of it)."""
    process = VEProcess()
    model = GaussianMixtureDenoiser.gaussian(process, 0.3, 0.5, (1,))
    t = torch.tensor(0.2, dtype=torch.float64)
    v = 0.5**2 + float(process.alpha_sigma(t)[1]) ** 2
    e = 0.5 * v
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(20000, 1, dtype=torch.float64)
    for _ in range(60):
        x = langevin_step(x, model(x, t).score, e, torch.randn(x.shape, generator=g, dtype=torch.float64))
    assert float(x.mean()) == pytest.approx(0.3, abs=0.02)
    assert float(x.var()) == pytest.approx(v / (1 - e / (2 * v)), rel=0.03)


# --- options ------------------------------------------------------------------------------------------------
def test_options_are_read_from_the_signatures():
    assert sampler_options("pc") == {"predictor": "reverse-diffusion", "corrector_steps": 1, "snr": 0.16,
                                     "corrector_rule": "expected"}
    assert sampler_options("dopri5") == {"rtol": 1e-5, "atol": 1e-5}
    assert sampler_options("euler-maruyama") == {"eta": 1.0, "diffusion": "auto"}
    assert sampler_options("langevin") == {"langevin_steps": 5, "step_size": 0.5}
    assert sampler_options("heun") == {}


@pytest.mark.parametrize("sampler,options,needle", [
    ("euler-maruyama", {"eta": -0.5}, "--eta"),
    ("euler-maruyama", {"eta": math.inf}, "--eta"),
    ("euler-maruyama", {"diffusion": "brownian"}, "--diffusion"),
    ("pc", {"predictor": "ancestral"}, "--predictor"),
    ("pc", {"corrector_steps": -1}, "--corrector-steps"),
    ("pc", {"corrector_steps": 1.5}, "--corrector-steps"),
    ("pc", {"snr": 0.0}, "--snr"),
    ("pc", {"corrector_rule": "batch"}, "--corrector-rule"),
    ("dopri5", {"rtol": 0.0}, "--rtol"),
    ("dopri5", {"atol": -1e-3}, "--atol"),
    ("langevin", {"langevin_steps": 0}, "--langevin-steps"),
    ("langevin", {"step_size": 2.0}, "--step-size"),
    ("langevin", {"step_size": -0.1}, "--step-size"),
    ("ddim", {"eta": 1.5}, "--eta"),
])
def test_bad_option_values_are_difflab_errors(sampler, options, needle):
    model, x = setup()
    with pytest.raises(DifflabError, match=needle) as err:
        get_sampler(sampler)(model, x, time_grid(model.process, 3), noise=GeneratorNoise(torch.Generator()), **options)
    assert "\n" not in str(err.value)


def test_unknown_sampler_or_option_is_a_difflab_error():
    with pytest.raises(DifflabError, match="choose one of"):
        get_sampler("ancestral")
    with pytest.raises(DifflabError, match="'snr'.*takes: rtol, atol"):
        check_options("dopri5", {"snr": 0.1})
    with pytest.raises(DifflabError, match="no options"):
        check_options("heun", {"eta": 0.0})
    check_options("pc", {"snr": 0.2, "predictor": "euler-maruyama"})


def test_corrector_step_size_rule_is_per_sample():
    """One corrector step replayed by hand: eps_i = 2 a (snr ||z_i|| / ||score_i||)^2 for each sample i."""
    model, x = setup("ve", n=3)
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t, a, snr = 0.3, 0.9, 0.16
    score = model(x, torch.tensor(t, dtype=torch.float64)).score
    eps = 2 * a * (snr * z.norm(dim=1) / score.norm(dim=1)) ** 2                      # (3,)
    by_hand = x + eps[:, None] * score + (2 * eps[:, None]).sqrt() * z
    torch.testing.assert_close(langevin_correct(model, x, t, a, snr, FixedNoise(z), None, "per-sample"), by_hand)


def test_corrector_expected_rule_does_not_depend_on_x():
    """The default rule: eps = 2 a (snr sigma_s)^2 for every sample."""
    model, x = setup("ve", n=3)
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t, a, snr = 0.3, 0.9, 0.16
    score = model(x, torch.tensor(t, dtype=torch.float64)).score
    sigma = float(model.process.alpha_sigma(torch.tensor(t, dtype=torch.float64))[1])
    eps = 2 * a * (snr * sigma) ** 2
    by_hand = x + eps * score + math.sqrt(2 * eps) * z
    torch.testing.assert_close(langevin_correct(model, x, t, a, snr, FixedNoise(z), None), by_hand)
