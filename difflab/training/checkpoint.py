"""Checkpoints as safetensors plus JSON, written so that a kill at any moment leaves a usable one.

    RUN/checkpoints/step_0000500/model.safetensors     raw weights
                                 ema.safetensors       EMA weights
                                 trainer.safetensors   optimizer moments and RNG states
                                 trainer.json          step, optimizer hyper-parameters, data position
    RUN/checkpoints/latest                             the name of the newest complete checkpoint

A checkpoint folder is filled under a temporary name and renamed into place (atomic), then ``latest``
is replaced atomically; only then are older checkpoints pruned. Nothing is pickled: loading never runs code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.errors import DifflabError
from difflab.io import atomic_write_text, read_tensors, write_folder

CHECKPOINTS = "checkpoints"
LATEST = "latest"


def write_checkpoint(run_dir: Path, step: int, tensors: dict[str, dict[str, Tensor]], meta: dict[str, Any],
                     keep: int = 2) -> Path:
    """Write tensors[name] to NAME.safetensors and meta to trainer.json in a new step folder; point latest at it."""
    root = Path(run_dir) / CHECKPOINTS
    name = f"step_{step:07d}"
    final = write_folder(root / name, {f"{k}.safetensors": v for k, v in tensors.items()},
                         {"trainer.json": json.dumps(meta, indent=1)}, metadata={"step": str(step), "format": "difflab"})
    atomic_write_text(root / LATEST, name + "\n")
    prune_checkpoints(root, keep)
    return final


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step folders, and leftovers of interrupted writes."""
    for d in root.glob(".tmp_step_*"):
        shutil.rmtree(d, ignore_errors=True)
    steps = sorted(d for d in root.glob("step_*") if d.is_dir())
    for d in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(d, ignore_errors=True)


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint folder from a run folder (its latest checkpoint) or a step folder itself."""
    path = Path(path)
    if not path.exists():
        raise DifflabError(f"checkpoint path {path} does not exist; pass a run folder made by `difflab train --out`")
    if (path / "model.safetensors").exists():
        return path
    pointer = path / CHECKPOINTS / LATEST
    if not pointer.exists():
        raise DifflabError(f"{path} holds no checkpoint ({pointer} is missing); was the run stopped before its first checkpoint?")
    step_dir = path / CHECKPOINTS / pointer.read_text().strip()
    if not (step_dir / "model.safetensors").exists():
        raise DifflabError(f"{pointer} names {step_dir.name}, which is missing or incomplete; delete {pointer} to fall back")
    return step_dir


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a state dict from safetensors into a module; mismatched keys or shapes are a DifflabError."""
    state = read_tensors(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise DifflabError(f"weights in {path} do not fit the model in its config ({first}); "
                           f"the checkpoint and config.json come from different runs?") from None


# --- optimizer and RNG state as tensors + JSON --------------------------------------------------

def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer's state_dict into tensors ("state.{param}.{key}") and JSON (param groups, scalars)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, Tensor):
                tensors[f"state.{pid}.{key}"] = val
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith("state."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = val
    for name, val in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_states(generator: torch.Generator) -> dict[str, Tensor]:
    """The training generator's state and torch's global CPU (and CUDA) RNG states (dropout uses those)."""
    states = {"rng.generator": generator.get_state(), "rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"rng.cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def set_rng_states(generator: torch.Generator, tensors: dict[str, Tensor]) -> None:
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda")), key=lambda k: int(k[8:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
