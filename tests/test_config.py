"""RunConfig: the one place where a run's configuration is resolved, saved and read back (older versions too)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from difflab.config import T_MAX_FOR_ALPHA_DIVIDING_TARGETS, RunConfig, migrate
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.objectives import DiffusionObjective

LEGACY = Path(__file__).parent / "fixtures" / "legacy_v0_1"
DIGITS, MOONS = DataSpec.pixels(1, 8, 8), DataSpec.points(2)


def resolved(process: dict, target: str = "eps", spec: DataSpec = DIGITS, **kw) -> RunConfig:
    cfg = replace(RunConfig(), process=process, objective=DiffusionObjective(target, time_sampling="auto"), **kw)
    return cfg.resolved(spec)


def test_defaults_resolve_to_the_documented_run():
    cfg = RunConfig().resolved(DIGITS)
    assert cfg.model == "tiny" and cfg.network["kind"] == "unet" and cfg.spec == DIGITS
    assert cfg.process == {"name": "ddpm", "schedule": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                           "cosine_s": 0.008, "max_beta": 0.999}
    assert cfg.objective.time_sampling == "discrete" and cfg.codec == {"name": "identity"}
    assert RunConfig().resolved(MOONS).model == "mlp"


@pytest.mark.parametrize("name,sampling", [("ddpm", "discrete"), ("vp", "continuous"), ("ve", "continuous"),
                                           ("flow", "continuous")])
def test_time_sampling_auto_follows_the_process(name, sampling):
    assert resolved({"name": name}, "x0").objective.time_sampling == sampling


def test_flow_t_max_for_targets_that_divide_by_alpha_is_decided_here_only():
    assert resolved({"name": "flow"}, "eps").process["t_max"] == T_MAX_FOR_ALPHA_DIVIDING_TARGETS
    assert resolved({"name": "flow"}, "score").process["t_max"] == T_MAX_FOR_ALPHA_DIVIDING_TARGETS
    assert resolved({"name": "flow"}, "velocity").process["t_max"] == 1.0
    assert resolved({"name": "flow", "t_max": 0.99}, "eps").process["t_max"] == 0.99
    with pytest.raises(DifflabError, match="--t-max"):
        resolved({"name": "flow", "t_max": 1.0}, "eps")


def test_resolving_twice_changes_nothing_and_json_round_trips():
    cfg = resolved({"name": "vp", "beta_max": 15.0}, "v")
    assert cfg.resolved(DIGITS) == cfg
    as_json = json.loads(json.dumps(cfg.to_dict()))
    assert json.loads(json.dumps(RunConfig.from_dict(as_json).to_dict())) == as_json


@pytest.mark.parametrize("run", ["digits-ddpm-classcond", "moons-flow"])
def test_a_config_of_difflab_0_1_migrates(run):
    old = json.loads((LEGACY / run / "config.json").read_text())
    assert old["version"] == "0.1.0" and "spec" not in old and "noise_input" not in old["network"]
    cfg = RunConfig.from_dict(old)
    assert cfg.network["noise_input"] == "t"
    assert cfg.spec == (DIGITS if run.startswith("digits") else MOONS)
    assert migrate(cfg.to_dict()) == cfg.to_dict()          # a current config is left as it is


def test_a_config_with_unknown_keys_is_a_one_line_error():
    d = RunConfig().resolved(DIGITS).to_dict()
    d["trainer"]["warp_speed"] = 9
    with pytest.raises(DifflabError, match="warp_speed"):
        RunConfig.from_dict(d)
