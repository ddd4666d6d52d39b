"""`difflab sample` with every sampler and its options: NFE printed, defaults shown, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import tiny_config
from helpers import assert_one_line_error, cli

from difflab.cli.main import build_parser
from difflab.cli.sample import SAMPLER_FLAGS
from difflab.pipelines.bench_samplers import one_thread

# sampler -> (extra options, NFE printed for --steps 4)
RUNS = {
    "ddpm": ([], 4), "ddim": (["--eta", "0.5"], 4), "euler-maruyama": (["--diffusion", "sde", "--eta", "0.7"], 4),
    "pc": (["--predictor", "euler-maruyama", "--corrector-steps", "2", "--snr", "0.1"], 3 * 3 + 1),
    "euler": ([], 4), "heun": ([], 7), "rk4": ([], 13), "dopri5": (["--rtol", "1e-3", "--atol", "1e-3"], None),
    "langevin": (["--langevin-steps", "2", "--step-size", "0.3"], 9),
}


@pytest.fixture(scope="module")
def run10(tmp_path_factory) -> Path:
    """A digits run trained for 10 steps on one thread (samplers need a network, not a good one; the
    session's 40-step run costs minutes on a loaded 2-core machine with two threads)."""
    from difflab.pipelines.train import train

    out = tmp_path_factory.mktemp("runs") / "digits10"
    with one_thread():
        train(tiny_config(10), out, progress=False)
    return out


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("sampler", list(RUNS))
def test_every_sampler_samples_a_run10(capsys, run10, tmp_path, sampler):
    extra, nfe = RUNS[sampler]
    out = tmp_path / f"{sampler}.png"
    rc, text, err = cli(capsys, "sample", "--checkpoint", str(run10), "--sampler", sampler, "--steps", "4",
                        "--n", "4", "--spacing", "karras", "--out", str(out), "--trajectory", *extra)
    assert rc == 0, err
    printed = int(re.search(r"\((\d+) NFE\)", text).group(1))
    assert printed == nfe if nfe is not None else printed > 4
    assert out.exists() and (tmp_path / f"{sampler}_trajectory.png").exists()


def test_t_min_moves_the_end_of_the_grid(capsys, run10, tmp_path):
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(run10), "--sampler", "heun", "--steps", "3",
                     "--n", "2", "--t-min", "0.2", "--out", str(tmp_path / "a.png"))
    assert rc == 0, err
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(run10), "--t-min", "1.5")
    assert_one_line_error(rc, err, "--t-min", "(0, 1.0)")


@pytest.mark.parametrize("args,needles", [
    (["--sampler", "heun", "--snr", "0.2"], ["--snr", "pc", "heun"]),
    (["--sampler", "ddim", "--rtol", "1e-3"], ["--rtol", "dopri5"]),
    (["--sampler", "pc", "--eta", "0.5"], ["--eta", "ddim or dpmpp-2m-sde or euler-maruyama"]),
    (["--sampler", "ddpm", "--langevin-steps", "3"], ["--langevin-steps", "langevin"]),
    (["--sampler", "euler", "--diffusion", "sigma"], ["--diffusion", "euler-maruyama"]),
    (["--sampler", "langevin", "--step-size", "3"], ["--step-size", "(0, 2)"]),
    (["--sampler", "pc", "--snr", "-1"], ["--snr", "> 0"]),
    (["--sampler", "dopri5", "--atol", "0"], ["--atol", "> 0"]),
    (["--sampler", "pc", "--corrector-steps", "-1"], ["--corrector-steps", ">= 0"]),
    (["--sampler", "pc", "--predictor", "magic"], ["--predictor", "magic"]),
    (["--sampler", "euler-maruyama", "--diffusion", "magic"], ["--diffusion", "magic"]),
    (["--spacing", "cubic"], ["--spacing", "cubic"]),
])
def test_bad_sampler_options_are_one_line(capsys, run10, args, needles):
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(run10), "--n", "2", "--steps", "2", *args)
    assert_one_line_error(rc, err, *needles)


def test_help_shows_every_sampler_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in SAMPLER_FLAGS:
        assert re.search(re.escape(f.flag) + r" \S+ ((?! --\w).)*\(default: [^)]+\)", text), f.flag
    for flag in ("--t-min", "--spacing", "--steps"):
        assert flag in text
    unwrapped = re.sub(r"(\w)- (\w)", r"\1-\2", text)          # argparse may wrap a line after a hyphen
    assert "(default: 0.0 for ddim, 1.0 for dpmpp-2m-sde, 1.0 for euler-maruyama)" in unwrapped
    spacing_help = re.search(r"--spacing NAME (.*?)\(default: uniform\)", text).group(1)
    assert all(name in spacing_help for name in ("uniform", "quadratic", "karras", "logsnr"))
