"""`difflab bench-samplers`: the distance it reports, the steps it picks for an NFE, its tables and JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import assert_one_line_error, cli

from difflab.denoisers import bench_mixture
from difflab.metrics.sliced_wasserstein import projection_directions, sliced_w2
from difflab.pipelines.bench_samplers import ODE_SAMPLERS, bench_samplers, nfe_of, one_thread, steps_for_nfe
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
    assert all((r.rms is not None) == (r.sampler in ODE_SAMPLERS) for r in res.rows)
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
