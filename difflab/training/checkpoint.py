"""Checkpoints as safetensors plus JSON, written so that a kill at any moment leaves a usable one.

    RUN/checkpoints/step_0000500/model.safetensors     raw weights
                                 ema.safetensors       EMA weights
                                 trainer.safetensors   optimizer moments and RNG states
                                 trainer.json          step, optimizer hyper-parameters, data position, and
                                                       the SHA-256 of each .safetensors file
    RUN/checkpoints/latest                             the name of the newest complete checkpoint

A checkpoint folder is filled under a temporary name and renamed into place (atomic), then ``latest``
is replaced atomically; only then are older checkpoints pruned. A kill between those steps leaves a
complete step folder that ``latest`` does not name yet, or stray temporary files: :func:`resolve_checkpoint`
finds the newest complete folder whatever ``latest`` says, and :func:`clean_checkpoints` removes the
leftovers. Loading checks each file against its recorded SHA-256. Nothing is pickled: loading never runs code.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.errors import DifflabError
from difflab.io import atomic_write_text, read_json, read_tensors, sha256, tensor_bytes, write_folder

CHECKPOINTS = "checkpoints"
LATEST = "latest"
META = "trainer.json"
WEIGHT_FILES = ("model.safetensors", "ema.safetensors", "trainer.safetensors")
STEP_FOLDER = re.compile(r"step_(\d+)$")


def write_checkpoint(run_dir: Path, step: int, tensors: dict[str, dict[str, Tensor]], meta: dict[str, Any],
                     keep: int = 2) -> Path:
    """Write tensors[name] to NAME.safetensors and meta (with the files' SHA-256) to trainer.json in a new step
    folder; point latest at it; prune all but the newest ``keep`` checkpoints."""
    root = Path(run_dir) / CHECKPOINTS
    name = f"step_{step:07d}"
    blobs = {f"{k}.safetensors": tensor_bytes(v, {"step": str(step), "format": "difflab"}) for k, v in tensors.items()}
    meta = {**meta, "sha256": {file: sha256(data) for file, data in blobs.items()}}
    final = write_folder(root / name, {**blobs, META: json.dumps(meta, indent=1).encode()})
    atomic_write_text(root / LATEST, name + "\n")
    clean_checkpoints(root, keep)
    return final


def step_folders(root: Path) -> list[Path]:
    """The step_N folders under ``root`` (a run's checkpoints folder), oldest first."""
    found = [d for d in root.glob("step_*") if d.is_dir() and STEP_FOLDER.match(d.name)]
    return sorted(found, key=lambda d: int(STEP_FOLDER.match(d.name).group(1)))


def is_complete(folder: Path) -> bool:
    """Whether a step folder holds every file a checkpoint has and a readable trainer.json."""
    if not all((folder / f).is_file() for f in (*WEIGHT_FILES, META)):
        return False
    try:
        return isinstance(json.loads((folder / META).read_text()).get("step"), int)
    except (OSError, ValueError, AttributeError):
        return False


def clean_checkpoints(root: Path, keep: int) -> None:
    """Remove what interrupted writes leave (temporary folders and files, step folders that are not complete
    and are older than the newest complete one) and all but the newest ``keep`` complete checkpoints."""
    if not root.is_dir():
        return
    for leftover in root.glob(".tmp_*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(f".{LATEST}.*"):
        leftover.unlink(missing_ok=True)
    folders = step_folders(root)
    complete = [d for d in folders if is_complete(d)]
    if not complete:
        return
    newest = complete[-1]
    for d in folders:
        if d == newest:
            continue
        if not is_complete(d) and folders.index(d) < folders.index(newest):
            shutil.rmtree(d, ignore_errors=True)            # half-written or half-pruned
    for d in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(d, ignore_errors=True)


def run_folder(path: Path | str) -> Path:
    """The run folder of a path naming a run, its checkpoints folder or one of its step folders."""
    path = Path(path)
    if path.name == CHECKPOINTS:
        return path.parent
    if path.parent.name == CHECKPOINTS and STEP_FOLDER.match(path.name):
        return path.parent.parent
    return path


def latest_checkpoint(path: Path | str) -> Path | None:
    """The newest complete checkpoint of a run folder (or of its checkpoints folder): the one ``latest`` names
    if it is complete, else the newest complete step folder; None if there is none."""
    root = run_folder(path) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if named.parent == root and is_complete(named):
            return named
    complete = [d for d in step_folders(root) if is_complete(d)] if root.is_dir() else []
    return complete[-1] if complete else None


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint folder from a run folder or its checkpoints folder (the newest complete checkpoint), or a
    step folder itself."""
    path = Path(path)
    if not path.exists():
        raise DifflabError(f"checkpoint path {path} does not exist; pass a run folder made by `difflab train --out`")
    if (path / "model.safetensors").exists():
        return path
    found = latest_checkpoint(path)
    if found is None:
        run = run_folder(path)
        raise DifflabError(f"{run} holds no complete checkpoint; if it is a run stopped before its first "
                           f"checkpoint, `difflab train --resume {run}` starts it again from step 0")
    return found


def checkpoint_sha256(folder: Path, file: str) -> str | None:
    """The SHA-256 recorded for ``file`` in a step folder's trainer.json (None in checkpoints of difflab 0.1)."""
    meta = folder / META
    if not meta.is_file():
        return None
    recorded = read_json(meta).get("sha256")
    return recorded.get(file) if isinstance(recorded, dict) else None


def read_checkpoint_tensors(path: Path) -> dict[str, Tensor]:
    """A checkpoint's .safetensors file, checked against the SHA-256 its trainer.json recorded."""
    path = Path(path)
    return read_tensors(path, checkpoint_sha256(path.parent, path.name))


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a state dict from a checkpoint's safetensors file into a module; a damaged file, mismatched keys or
    shapes, or weights that are not finite are a DifflabError."""
    state = read_checkpoint_tensors(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise DifflabError(f"weights in {path} do not fit the model in its config ({first}); "
                           f"the checkpoint and config.json come from different runs?") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DifflabError(f"weights in {path} hold NaN or infinite values ({len(bad)} tensors, e.g. {bad[0]}); "
                           "use the other weights (--raw, or the EMA ones) or an earlier checkpoint folder")


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


def rng_states(generator: torch.Generator, device: torch.device | None = None) -> dict[str, Tensor]:
    """The training generator's state and torch's global CPU (and CUDA) RNG states (dropout uses those): every
    GPU's ("rng.cuda{i}"), or with ``device`` (a process of a data parallel run) that device's alone
    ("rng.cuda", the same key on every rank)."""
    states = {"rng.generator": generator.get_state(), "rng.torch": torch.get_rng_state()}
    if device is not None:
        if device.type == "cuda":
            states["rng.cuda"] = torch.cuda.get_rng_state(device)
    elif torch.cuda.is_available():
        states.update({f"rng.cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def set_rng_states(generator: torch.Generator, tensors: dict[str, Tensor]) -> None:
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])       # this process's device (torch.cuda.set_device)
    cuda = [tensors[k] for k in sorted((k for k in tensors if RNG_CUDA.match(k)), key=lambda k: int(k[8:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


RNG_CUDA = re.compile(r"rng\.cuda\d+$")
RNG_RANK = re.compile(r"rng\.rank(\d+)\.")


def rank_rng_key(key: str, rank: int) -> str:
    """Where rank r > 0 of a data parallel run keeps its RNG state ``key`` ("rng.X"): "rng.rank{r}.X"; rank 0
    keeps the plain keys, those of a one-process run."""
    return key if rank == 0 else f"rng.rank{rank}.{key[len('rng.'):]}"


def rank_rng_states(tensors: dict[str, Tensor], rank: int) -> dict[str, Tensor]:
    """Rank ``rank``'s RNG states ("rng.X") from a checkpoint's tensors. A rank the checkpoint has none for
    (resumed on more processes than wrote it) takes rank 0's: the training generator is the same on every
    rank anyway; only torch's global one (dropout) then repeats rank 0's."""
    prefix = rank_rng_key("rng.", rank) if rank else None
    if prefix and any(k.startswith(prefix) for k in tensors):
        return {"rng." + k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return {k: v for k, v in tensors.items() if k.startswith("rng.") and not RNG_RANK.match(k)}
