"""`difflab bench-samplers`: the distance it reports, the steps it picks for an NFE, its tables and JSON, sampler
specs with options, which samplers count as deterministic, and the low-noise mode."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import assert_one_line_error, cli

from difflab.denoisers import bench_mixture
from difflab.metrics.sliced_wasserstein import projection_directions, sliced_w2
from difflab.errors import DifflabError
from difflab.pipelines import bench_samplers as bench_module
from difflab.pipelines.bench_samplers import (LOW_NOISE_N, SamplerSpec, bench_samplers, is_deterministic, nfe_of,
                                              one_thread, parse_sampler_spec, steps_for_nfe)
from difflab.process import DDPMProcess, VPProcess
from difflab.samplers import SAMPLERS


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


def test_sliced_w2_of_a_translation_is_its_length_over_sqrt2():
    """Shifting a 2-D sample by d moves each projection by d . theta; over evenly spaced angles
    mean (d . theta)^2 = |d|^2 / 2."""
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = torch.tensor([0.3, -0.4], dtype=torch.float64)
    dirs = projection_directions(2)
    assert sliced_w2(x, x, dirs) == 0.0
    assert sliced_w2(x + d, x, dirs) == pytest.approx(0.5 / math.sqrt(2), rel=1e-12)
    assert projection_directions(64).shape == (128, 64)
    torch.testing.assert_close(projection_directions(64).norm(dim=1), torch.ones(128, dtype=torch.float64))


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "dopri5"])
def test_steps_for_nfe_is_the_closest(sampler):
    """Against brute force: the NFE of every step count up to the first one past 60."""
    model = bench_mixture(DDPMProcess(), 2)
    every, steps = [], 0
    while not every or every[-1] <= 60:
        steps += 1
        every.append(nfe_of(sampler, model, steps, "uniform", {}))
    for target in (5, 10, 20, 50):
        steps, nfe = steps_for_nfe(sampler, model, target, "uniform", {}, model.process.T)
        assert abs(nfe - target) == min(abs(o - target) for o in every)
        assert nfe == every[steps - 1]


def test_bench_rows_tables_and_floors():
    res = bench_samplers(dims=(2,), nfes=(5, 20), n=300, processes=("vp",),
                         samplers=("heun", "dopri5", "pc", "langevin"), spacings=("uniform", "karras"))
    grid_rows = [r for r in res.rows if r.sampler != "dopri5"]
    assert len(grid_rows) == 3 * 2 * 2 and len([r for r in res.rows if r.sampler == "dopri5"]) == 2
    nfe = {(r.sampler, r.spacing, r.target_nfe): r.nfe for r in res.rows}
    assert nfe["heun", "uniform", 5] == 5 and nfe["heun", "karras", 20] in (19, 21)
    assert nfe["langevin", "uniform", 5] == 6 and nfe["pc", "uniform", 20] in (19, 21)
    assert all((r.rms is not None) == (r.sampler in ("heun", "dopri5")) for r in res.rows)
    assert all(r.seconds > 0 and r.sw2 > 0 for r in res.rows)
    assert set(res.floors) == {"2/vp"} and 0 < res.floors["2/vp"] < 0.2
    heun = {r.target_nfe: r for r in res.rows if r.sampler == "heun" and r.spacing == "karras"}
    assert heun[20].rms < heun[5].rms                               # more NFE, closer to the reference


def test_bench_cli_prints_tables_and_writes_json(capsys, tmp_path):
    out = tmp_path / "bench.json"
    rc, text, err = cli(capsys, "bench-samplers", "--dims", "2", "--nfe", "5,10", "--n", "200",
                        "--samplers", "euler,ddpm", "--spacings", "logsnr", "--process", "flow", "--json", str(out))
    assert rc == 0, err
    for needle in ("2-D mixture, flow process", "floor", "sliced W2", "RMS error", "wall time", "NFE~10"):
        assert needle in text
    rows = json.loads(out.read_text())["rows"]
    assert {(r["sampler"], r["target_nfe"]) for r in rows} == {("euler", 5), ("euler", 10), ("ddpm", 5), ("ddpm", 10)}


@pytest.mark.parametrize("args,needles", [
    (["--dims", "two"], ["--dims", "two"]),
    (["--process", "sde"], ["--process", "sde"]),
    (["--samplers", "magic"], ["--samplers", "magic"]),
    (["--nfe", "0"], ["--nfe"]),
])
def test_bench_bad_options_are_one_line(capsys, args, needles):
    rc, _, err = cli(capsys, "bench-samplers", *args)
    assert_one_line_error(rc, err, *needles)


def test_reference_solve_agrees_with_a_fine_rk4():
    from difflab.pipelines.bench_samplers import reference_solve
    from difflab.samplers import sample_rk4, time_grid

    model = bench_mixture(VPProcess(), 2)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fine = sample_rk4(model, x, time_grid(model.process, 1000, "karras")).x
    assert float((reference_solve(model, x) - fine).abs().max()) < 1e-8


def test_sampler_specs_read_options_as_their_defaults_types():
    assert parse_sampler_spec("heun") == SamplerSpec("heun", {})
    spec = parse_sampler_spec(" ddim : eta = 0.5 ")
    assert spec == SamplerSpec("ddim", {"eta": 0.5}) and spec.label == "ddim:eta=0.5"
    off = parse_sampler_spec("dpmpp-2m:lower-order-final=off")
    assert off.options == {"lower_order_final": False} and off.label == "dpmpp-2m:lower_order_final=off"
    assert parse_sampler_spec(off.label) == off
    assert parse_sampler_spec("ddpm:variance=beta").options == {"variance": "beta"}
    assert parse_sampler_spec("dopri5").adaptive and not spec.adaptive


@pytest.mark.parametrize("spec,needles", [
    ("ddim:eta", ["'ddim:eta'", "key=value"]),
    ("ddim:eta=x", ["eta", "'x'"]),
    ("ddim:order=2", ["no option 'order'", "eta"]),
    ("magic:order=2", ["unknown sampler 'magic'"]),
    ("ddim:eta=3", ["--eta", "[0, 1]"]),                   # a bad value: refused by the sampler before any run
    ("dpmpp-2m:lower_order_final=maybe", ["on or off"]),
])
def test_bad_sampler_specs_are_one_line(capsys, spec, needles):
    rc, _, err = cli(capsys, "bench-samplers", "--dims", "2", "--nfe", "5", "--n", "10", "--samplers", f"heun,{spec}")
    assert_one_line_error(rc, err, *needles)


def test_determinism_is_found_by_running_the_sampler():
    model = bench_mixture(DDPMProcess(), 2)
    deterministic = {s: is_deterministic(parse_sampler_spec(s), model)
                     for s in ("ddim", "ddim:eta=0", "heun", "euler", "dpmpp-2m", "dopri5", "ddpm", "ddim:eta=1",
                               "euler-maruyama", "langevin")}
    assert deterministic == {"ddim": True, "ddim:eta=0": True, "heun": True, "euler": True, "dpmpp-2m": True,
                             "dopri5": True, "ddpm": False, "ddim:eta=1": False, "euler-maruyama": False,
                             "langevin": False}
    with pytest.raises(DifflabError, match="eta"):
        is_deterministic(parse_sampler_spec("ddim:eta=2"), model)


def test_options_reach_the_sampler_and_label_the_rows():
    res = bench_samplers(dims=(2,), nfes=(6,), n=200, processes=("vp",), spacings=("logsnr",),
                         samplers=("ddim", "ddim:eta=1", "dpmpp-2m:lower_order_final=off"))
    rows = {r.sampler: r for r in res.rows}
    assert set(rows) == {"ddim", "ddim:eta=1", "dpmpp-2m:lower_order_final=off"}
    assert rows["ddim"].rms is not None and rows["ddim:eta=1"].rms is None
    assert rows["ddim"].sw2 != rows["ddim:eta=1"].sw2


def test_low_noise_mode_raises_n_checks_the_reference_and_says_so(capsys, monkeypatch, tmp_path):
    """The real floor needs n = LOW_NOISE_N >= 20000 (too slow for a unit test): the mechanics at n = 400."""
    assert LOW_NOISE_N >= 20000
    monkeypatch.setattr(bench_module, "LOW_NOISE_N", 400)
    out = tmp_path / "bench.json"
    rc, text, err = cli(capsys, "bench-samplers", "--low-noise", "--dims", "2", "--nfe", "5", "--n", "50",
                        "--process", "vp", "--samplers", "euler,ddpm", "--spacings", "uniform", "--json", str(out))
    assert rc == 0, err
    assert "n = 400" in text and "low-noise mode: n >= 400" in text and "twice finer solve" in text
    res = json.loads(out.read_text())
    assert res["n"] == 400 and res["low_noise"] and 0 < res["reference_errors"]["2/vp"] < 1e-7
    assert {r["sampler"]: r["rms"] is not None for r in res["rows"]} == {"euler": True, "ddpm": False}


def test_reference_on_the_ddpm_process_is_the_closed_form():
    """Gaussian data N(mu, s^2): the ODE in y = x / alpha, s_t = sigma / alpha keeps (y - mu) / sqrt(s^2 + s_t^2),
    so x0 = mu + s^2 / (s^2 + s_min^2) (y_min - mu) at t_min. (RK4 in t with one step a cell, the reference
    before, was off by 2e-3 here: its first stage at each i/T took the slope of the cell above.)"""
    from difflab.denoisers import GaussianMixtureDenoiser
    from difflab.pipelines.bench_samplers import reference_solve
    from difflab.process.base import as_time

    process, mu, s = DDPMProcess(), 0.3, 0.2
    model = GaussianMixtureDenoiser.gaussian(process, mu, s, (2,))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * process.prior_std()
    (a1, s1), (a0, s0) = process.alpha_sigma(as_time(process.t_max)), process.alpha_sigma(as_time(process.t_min))
    y0 = mu + (x / a1 - mu) * ((s**2 + (s0 / a0) ** 2) / (s**2 + (s1 / a1) ** 2)).sqrt()
    exact = mu + s**2 / (s**2 + (s0 / a0) ** 2) * (y0 - mu)
    assert float((reference_solve(model, x) - exact).abs().max()) < 1e-8
