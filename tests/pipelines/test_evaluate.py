"""`difflab eval` and `difflab train --eval-every`: the metrics and bits/dim of a run, as a user gets them."""

from __future__ import annotations

import json
import math


from difflab.cli.main import main
from difflab.pipelines.train import train
from conftest import tiny_config


def test_eval_writes_every_metric_and_both_bpd_estimates(trained_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main(["eval", "--checkpoint", str(trained_run), "--n", "120", "--steps", "10", "--fid-resamples", "4",
               "--bpd", "--bpd-n", "6", "--elbo-timesteps", "8", "--ode-tol", "1e-3", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for word in ("FID", "KID", "IS", "precision", "recall", "120 generated vs 1617 reference", "builtin-digits",
                 "bpd elbo", "bpd ode", "10 NFE"):
        assert word in text, word
    r = json.loads(out.read_text())
    assert r["n_generated"] == 120 and r["n_reference"] == 1617 and r["nfe"] == 10 and r["step"] == 40
    lo, hi = r["fid_interval"]
    assert 0 <= lo <= r["fid"] <= hi
    assert r["kid_std"] > 0 and 1 <= r["is_mean"] <= 10 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    for name in ("elbo", "ode"):
        s = r["bpd"][name]
        # 40 training steps: far from data, yet a likelihood in bits/dim must be positive and finite
        assert s["n"] == 6 and math.isfinite(s["bpd"]) and 0 < s["bpd"] < 30, s
    assert r["bpd"]["elbo"]["nfe"] == 9


def test_eval_errors_are_one_line(trained_run, tmp_path, capsys):
    cases = [(["--features", "inception", "--inception-weights", str(tmp_path / "none.pth")], "none.pth"),
             (["--bpd", "likelihood"], "--bpd"),
             (["--sampler", "heun", "--eta", "0.5"], "--eta")]
    for args, needle in cases:
        assert main(["eval", "--checkpoint", str(trained_run), "--n", "10", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err


def test_train_eval_every_logs_metrics_and_resume_keeps_one_line_per_step(tmp_path):
    from dataclasses import replace
    from difflab.config import EvalConfig
    cfg = tiny_config(20)
    cfg = replace(cfg, evaluation=EvalConfig(every=10, n=60, fid_resamples=3))
    train(cfg, tmp_path / "run", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20]
    assert all(r["n_generated"] == 60 and r["fid"] > 0 for r in lines)
    # a run killed after an evaluation past its last checkpoint: resume drops that line and redoes the step
    with open(tmp_path / "run" / "eval.jsonl", "a") as f:
        f.write(json.dumps({"step": 25, "fid": 1.0}) + "\n")
    longer = replace(cfg, trainer=replace(cfg.trainer, steps=30))
    train(longer, tmp_path / "run", resume=True, progress=False)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30]


def test_bpd_elbo_needs_ddpm(tmp_path, capsys):
    out = tmp_path / "flow"
    assert main(["train", "--process", "flow", "--target", "velocity", "--steps", "4", "--batch-size", "8",
                 "--sample-every", "0", "--preview-steps", "2", "--quiet", "--out", str(out)]) == 0
    assert main(["eval", "--checkpoint", str(out), "--n", "10", "--bpd", "elbo"]) == 2
    assert "ddpm" in capsys.readouterr().err


def test_eval_json_goes_into_the_evaluated_run_named_by_its_sampling(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)                  # not into the current folder, where two runs would collide
    for args, name in [((), "eval-ddim-5.json"), (("--sampler", "euler"), "eval-euler-5.json"),
                       (("--raw",), "eval-ddim-5-raw.json")]:
        rc = main(["eval", "--checkpoint", str(trained_run), "--n", "20", "--steps", "5", "--fid-resamples", "2",
                   "--kid-subsets", "2", *args])
        assert rc == 0 and f"results -> {trained_run / name}" in capsys.readouterr().out
        assert json.loads((trained_run / name).read_text())["steps"] == 5
    assert not list(tmp_path.iterdir())
    nested = tmp_path / "not" / "yet" / "there.json"             # folders made, at the end, not found missing then
    assert main(["eval", "--checkpoint", str(trained_run), "--n", "20", "--steps", "5", "--fid-resamples", "2",
                 "--kid-subsets", "2", "--quiet", "--json", str(nested)]) == 0
    assert json.loads(nested.read_text())["n_generated"] == 20


def test_eval_of_a_points_run_says_so_before_any_work(tmp_path, capsys):
    assert main(["train", "--dataset", "moons", "--steps", "4", "--batch-size", "16", "--sample-every", "0",
                 "--quiet", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "m"), "--n", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "image metrics need a model of images; this run models points" in err
