"""A generic training loop: AdamW, warm-up, gradient clipping, EMA, bf16 autocast on CUDA, exact resume.

It knows nothing of diffusion: it minimises the mean of a per-example loss
``loss_fn(model, x, cond, generator) -> (loss (B,), key (B,))`` and logs the loss in 10 buckets of ``key``
(in [0, 1]; for diffusion, the noise level t). ``cond`` is the batch's rows of the ``conditions`` it was
given (anything indexable by a batch of example indices, with ``.to(device)``), or None.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from difflab.errors import DifflabError
from difflab.io import atomic_write_text, read_json
from difflab.training import checkpoint as ckpt
from difflab.training.data_order import DataOrder
from difflab.training.ema import EMA

class Rows(Protocol):
    """Per-example values the trainer hands to the loss without looking inside (e.g. a Condition)."""

    def __getitem__(self, index: Tensor) -> Any: ...

    def to(self, device: torch.device) -> Any: ...


LossFn = Callable[[nn.Module, Tensor, Any, torch.Generator], "tuple[Tensor, Tensor]"]
LOG = "log.jsonl"
BUCKETS = 10


@dataclass(frozen=True)
class TrainerConfig:
    steps: int = 2500
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 200               # linear learning-rate warm-up steps, then constant
    weight_decay: float = 0.0
    grad_clip: float = 1.0          # max global gradient norm (0 = off)
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    sample_every: int = 500         # 0 = only at the end
    keep_checkpoints: int = 2
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    precision: str = "auto"         # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16

    def validate(self) -> None:
        checks = [("steps", self.steps >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("lr", self.lr > 0, "> 0"), ("warmup", self.warmup >= 0, ">= 0"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"), ("grad_clip", self.grad_clip >= 0, ">= 0 (0 = off)"),
                  ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"), ("log_every", self.log_every >= 1, ">= 1"),
                  ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
                  ("sample_every", self.sample_every >= 0, ">= 0 (0 = only at the end)"),
                  ("keep_checkpoints", self.keep_checkpoints >= 1, ">= 1")]
        for name, ok, rule in checks:
            if not ok:
                raise DifflabError(f"--{name.replace('_', '-')} is out of range: it must be {rule}, got {getattr(self, name)}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise DifflabError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DifflabError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DifflabError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


@dataclass(frozen=True)
class Hook:
    """``fn(step, ema_model)`` after every ``every`` steps (0: never) and, if ``at_end``, after the last step."""

    every: int
    fn: Callable[[int, nn.Module], None]
    at_end: bool = True

    def due(self, step: int, last: int) -> bool:
        return bool(self.every and step % self.every == 0) or (self.at_end and step == last)


class Trainer:
    """Trains ``model`` on data (and per-example ``conditions``) held in memory; runs each of ``hooks``
    (sample grids, evaluations) when it is due, after that step's checkpoint."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Tensor, conditions: Rows | None,
                 config: TrainerConfig, run_dir: Path, hooks: Sequence[Hook] = ()) -> None:
        config.validate()
        self.config, self.run_dir = config, Path(run_dir)
        self.device = resolve_device(config.device)
        self.autocast = self.device.type == "cuda" and config.precision in ("auto", "bf16")
        if config.precision == "bf16" and self.device.type != "cuda":
            raise DifflabError("--precision bf16 needs a CUDA device; use --precision fp32 on the CPU")
        self.model = model.to(self.device)
        self.loss_fn, self.hooks = loss_fn, tuple(hooks)
        self.data = data.to(self.device)
        self.conditions = conditions.to(self.device) if conditions is not None else None
        self.order = DataOrder(len(data), config.batch_size, config.seed)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.ema = EMA(self.model, config.ema_decay)
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        torch.manual_seed(config.seed)
        self.step = 0

    # --- state ---------------------------------------------------------------------------------
    def save(self) -> Path:
        opt_tensors, opt_meta = ckpt.optimizer_state(self.opt)
        rng = ckpt.rng_states(self.generator)
        meta = {"step": self.step, "ema_updates": self.ema.updates, "optimizer": opt_meta,
                "epoch": self.order.epoch(self.step), "config": asdict(self.config)}
        try:
            return ckpt.write_checkpoint(self.run_dir, self.step, {
                "model": self.model.state_dict(), "ema": self.ema.model.state_dict(),
                "trainer": {**opt_tensors, **rng}}, meta, keep=self.config.keep_checkpoints)
        except OSError as e:
            raise self._write_error(self.run_dir / ckpt.CHECKPOINTS / f"step_{self.step:07d}", e) from None

    def load(self, path: Path) -> None:
        """Restore everything a checkpoint folder holds, so the run continues bit for bit."""
        meta = read_json(path / "trainer.json")
        ckpt.load_weights(self.model, path / "model.safetensors")
        ckpt.load_weights(self.ema.model, path / "ema.safetensors")
        tensors = ckpt.read_checkpoint_tensors(path / "trainer.safetensors")
        try:
            ckpt.load_optimizer_state(self.opt, tensors, meta["optimizer"])  # moves moments to the params' device
            ckpt.set_rng_states(self.generator, tensors)
            self.step, self.ema.updates = int(meta["step"]), int(meta["ema_updates"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise DifflabError(f"trainer state in {path} is incomplete or corrupt ({type(e).__name__}: {e}); "
                               f"use an earlier checkpoint or retrain") from None

    # --- loop ----------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        return self.config.lr * min(1.0, (step + 1) / self.config.warmup) if self.config.warmup else self.config.lr

    def train_step(self) -> tuple[Tensor, Tensor, float]:
        idx = self.order.batch(self.step).to(self.device)
        x = self.data[idx]
        cond = self.conditions[idx] if self.conditions is not None else None
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss_vec, key = self.loss_fn(self.model, x, cond, self.generator)
        loss = loss_vec.float().mean()
        if not torch.isfinite(loss):
            self._stop_nonfinite("loss", float(loss.detach()))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(grad_norm):
            self._stop_nonfinite("gradient norm", grad_norm)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.opt.step()
        self.ema.update(self.model)
        self.step += 1
        return loss_vec.detach(), key.detach(), grad_norm

    def _stop_nonfinite(self, what: str, value: float) -> None:
        found = ckpt.latest_checkpoint(self.run_dir)
        kept = found.name if found else "none yet"
        raise DifflabError(f"{what} is {value} at step {self.step + 1}: training stopped and the last good checkpoint "
                           f"({kept}) is kept in {self.run_dir}; lower --lr or --grad-clip, then --resume {self.run_dir}")

    def run(self, progress: bool = True) -> None:
        """Train until step ``config.steps``, logging, checkpointing and running the hooks when due. A run that
        is already at its last step (resumed after a kill during its end-of-run work) only runs the hooks due
        at the end."""
        cfg = self.config
        if self.step >= cfg.steps:
            self._run_hooks()
            return
        window: list[tuple[Tensor, Tensor]] = []
        t_window, n_window, grad_norms = 0.0, 0, []
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, unit="step", dynamic_ncols=True)
        try:
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                loss_vec, key, grad_norm = self.train_step()
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t_window += time.perf_counter() - t0
                n_window += loss_vec.shape[0]
                window.append((loss_vec.float().cpu(), key.float().cpu()))
                grad_norms.append(grad_norm)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    record = log_record(self.step, window, n_window / t_window, self.lr_at(self.step - 1),
                                        sum(grad_norms) / len(grad_norms), self.order.epoch(self.step))
                    self._append_log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.0f}")
                    window, t_window, n_window, grad_norms = [], 0.0, 0, []
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
                self._run_hooks()
        finally:
            bar.close()                     # before any message, so it does not land on the bar's line

    def _run_hooks(self) -> None:
        for hook in self.hooks:
            if hook.due(self.step, self.config.steps):
                hook.fn(self.step, self.ema.model)

    def _append_log(self, record: dict) -> None:
        path = self.run_dir / LOG
        try:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise self._write_error(path, e) from None

    def _write_error(self, path: Path, error: OSError) -> DifflabError:
        kept = ckpt.latest_checkpoint(self.run_dir)
        return DifflabError(f"cannot write {path} at step {self.step}: {error.strerror or type(error).__name__}; "
                            f"the last complete checkpoint ({kept.name if kept else 'none yet'}) is kept; free space "
                            f"or raise the limit, then `difflab train --resume {self.run_dir}`")


def log_record(step: int, window: list[tuple[Tensor, Tensor]], img_per_s: float, lr: float, grad_norm: float,
               epoch: float) -> dict:
    """One JSONL line: mean loss over the window and the loss in 10 equal buckets of the key (noise level t)."""
    loss = torch.cat([w[0] for w in window])
    key = torch.cat([w[1] for w in window])
    bucket = (key * BUCKETS).long().clamp(0, BUCKETS - 1)
    by_bucket = [float(loss[bucket == b].mean()) if (bucket == b).any() else None for b in range(BUCKETS)]
    return {"step": step, "epoch": round(epoch, 3), "loss": float(loss.mean()), "loss_by_t": by_bucket,
            "lr": lr, "grad_norm": grad_norm, "img_per_s": img_per_s}


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (and a half-written last line) so a resumed run's log has no duplicates."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", math.inf) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def read_log(path: Path) -> list[dict]:
    """The records of a JSONL log, skipping a half-written last line; none if there is no log yet."""
    records = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records
