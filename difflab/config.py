"""A run's resolved configuration: typed dataclasses, saved as config.json and read back without running code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from difflab import __version__
from difflab.errors import DifflabError
from difflab.objectives import DiffusionObjective
from difflab.training.checkpoint import atomic_write_text, read_json
from difflab.training.trainer import TrainerConfig

CONFIG = "config.json"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"          # built-in name, image folder or .npz file
    image_size: int | None = None    # resize images to this size (None: native size; folders default to 32)
    channels: int | None = None      # 1 (gray) or 3 (RGB); None: the dataset's own
    class_cond: bool = False         # train a class-conditional model on the dataset's labels


@dataclass(frozen=True)
class PreviewConfig:
    """How the sample grids written during training are drawn."""

    sampler: str = "ddim"
    steps: int = 50
    n: int = 64
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    """Metrics logged during training (eval.jsonl), on samples drawn as the preview grids are."""

    every: int = 0                   # steps between evaluations; 0 = never
    n: int = 500                     # samples per evaluation
    features: str = "builtin"        # builtin | inception
    inception_weights: str | None = None
    fid_resamples: int = 10


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: str = "tiny"                                    # network preset
    network: dict[str, Any] = field(default_factory=dict)  # the preset resolved for the data (filled at build)
    process: dict[str, Any] = field(default_factory=lambda: {"name": "ddpm", "schedule": "linear", "T": 1000})
    objective: DiffusionObjective = field(default_factory=DiffusionObjective)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, run_dir: Path) -> None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(run_dir) / CONFIG, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        sections = {"data": DataConfig, "objective": DiffusionObjective, "trainer": TrainerConfig,
                    "preview": PreviewConfig, "evaluation": EvalConfig}
        try:
            values = {k: (_build(sections[k], v) if k in sections else v) for k, v in d.items()}
            return cls(**values)
        except TypeError as e:
            raise DifflabError(f"config does not fit this difflab version ({e})") from None

    @classmethod
    def load(cls, run_dir: Path) -> RunConfig:
        return cls.from_dict(read_json(Path(run_dir) / CONFIG))


def _build(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise TypeError(f"unknown {cls.__name__} keys {sorted(unknown)}")
    return cls(**values)


def updated(obj: Any, **changes: Any) -> Any:
    """dataclasses.replace, ignoring changes whose value is None (options the user did not give)."""
    return replace(obj, **{k: v for k, v in changes.items() if v is not None})
