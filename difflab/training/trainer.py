"""A generic training loop: AdamW, warm-up, gradient clipping, EMA, bf16 autocast on CUDA, exact resume.

It knows nothing of diffusion: it minimises the mean of a per-example loss
``loss_fn(model, x, cond, generator) -> (loss (B,), key (B,))`` (or a :class:`Losses`) and logs the loss in 10
buckets of ``key`` (in [0, 1]; for diffusion, the noise level t). ``cond`` is the batch's rows of the
``conditions`` it was given (anything indexable by a batch of example indices, with ``.to(device)``), or None.

Adversarial training (a GAN, or an autoencoder with a PatchGAN discriminator as in VQGAN/LDM): given an
:class:`Adversary` naming the model's submodule that is the second player, the trainer calls
``loss_fn(model, x, cond, generator, adversarial=step >= adversary.start)``, which returns :class:`Losses`;
each step it takes the gradient of mean(``main``) over the other parameters only and of mean(``adversary``)
over the adversary's parameters only, then steps one AdamW for each (the adversary's from ``start`` on).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from difflab.errors import DifflabError
from difflab.io import atomic_write_text, read_json
from difflab.rng import BatchDraws, derived_seed
from difflab.training import checkpoint as ckpt
from difflab.training.acceleration import PRECISIONS, accelerate, autocast_enabled
from difflab.training.batches import BatchSource, RankRows, as_source
from difflab.training.data_order import DataOrder
from difflab.training.distributed import Distributed
from difflab.training.ema import EMA

class Rows(Protocol):
    """Per-example values the trainer hands to the loss without looking inside (e.g. a Condition)."""

    def __getitem__(self, index: Tensor) -> Any: ...

    def to(self, device: torch.device) -> Any: ...


@dataclass(frozen=True)
class Losses:
    """What a loss function may return instead of ``(loss, key)``: the per-example loss ``main`` (B,) minimised
    over the main parameters, the log's bucket ``key`` (B,) in [0, 1], the ``adversary``'s loss (any shape; its
    mean is minimised over the adversary's parameters; None: no adversary step), and scalar ``logs`` (floats or
    0-d tensors, e.g. d_loss, g_adv, the adaptive weight) averaged over each log window and logged by name."""

    main: Tensor
    key: Tensor
    adversary: Tensor | None = None
    logs: Mapping[str, Tensor | float] = field(default_factory=dict)


LossFn = Callable[..., "tuple[Tensor, Tensor] | Losses"]
LOG = "log.jsonl"
BUCKETS = 10
ADVERSARY = "adversary."                # prefix of the adversary optimizer's tensors in trainer.safetensors
TRAINER_LOGS = ("step", "epoch", "loss", "loss_by_t", "lr", "grad_norm", "img_per_s", "load_img_per_s", "load_mb_per_s",
                "load_wait_s",
                "adversary_loss", "adversary_grad_norm", "adversary_lr")


@dataclass
class TrainResult:
    """What a call of :meth:`Trainer.run_to_end` did: the run folder, the steps taken, their wall-clock seconds,
    the last logged loss and images/s (None when nothing was logged), and whether this process wrote them."""

    run_dir: Path
    steps: int
    seconds: float
    final_loss: float | None
    img_per_s: float | None
    main: bool = True           # whether this process is the one that wrote (rank 0)


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
    compile: bool = False           # torch.compile the network for training
    channels_last: bool = False     # the network's 4-D weights (and so its convolutions) in channels-last layout
    loader: str = "memory"          # memory | memmap | auto (difflab.data.image_cache.resolve_loader)
    workers: int = 2                # DataLoader worker processes reading the disk cache (0: the training process)

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
        if self.workers < 0:
            raise DifflabError(f"--workers is out of range: it must be >= 0 (0 = read in the training process), "
                               f"got {self.workers}")
        if self.precision not in PRECISIONS:
            raise DifflabError(f"--precision must be {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class Adversary:
    """The second player of adversarial training: the model's submodule named ``module`` (a dotted path), trained
    on ``Losses.adversary`` by its own AdamW from step ``start`` on (LDM's disc_start); every other parameter is
    the main (generator) set. ``lr``, ``weight_decay`` and ``grad_clip`` default to the main ones (None); the
    adversary's linear warm-up counts ``warmup`` steps from ``start``."""

    module: str = "discriminator"
    start: int = 0
    lr: float | None = None
    warmup: int = 0
    weight_decay: float | None = None
    grad_clip: float | None = None          # max global gradient norm of the adversary's parameters (0 = off)
    betas: tuple[float, float] = (0.9, 0.999)

    def validate(self) -> None:
        checks = [("start", self.start >= 0, ">= 0"), ("lr", self.lr is None or self.lr > 0, "> 0 or None"),
                  ("warmup", self.warmup >= 0, ">= 0"),
                  ("weight_decay", self.weight_decay is None or self.weight_decay >= 0, ">= 0 or None"),
                  ("grad_clip", self.grad_clip is None or self.grad_clip >= 0, ">= 0 (0 = off) or None"),
                  ("betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "two values in [0, 1)")]
        for name, ok, rule in checks:
            if not ok:
                raise DifflabError(f"Adversary({name}=...) is out of range: it must be {rule}, got {getattr(self, name)}")


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
    """Trains ``model`` on ``data`` (a tensor in memory or a :class:`BatchSource`) and per-example
    ``conditions`` (held in memory); runs each of ``hooks`` (sample grids, evaluations) when it is due, after
    that step's checkpoint.

    Data parallel (``dist`` with several processes, started by torchrun): every rank walks the same global batch
    order and draws the same random numbers for the whole global batch (:class:`~difflab.rng.BatchDraws`), and
    takes its own equal slice of both; DistributedDataParallel averages the gradients, so the step is the one
    a single process would take on the whole batch, up to the order of float sums. Rank 0 alone writes
    checkpoints (with every rank's RNG states), logs and pictures, and runs the hooks."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Tensor | BatchSource, conditions: Rows | None,
                 config: TrainerConfig, run_dir: Path, hooks: Sequence[Hook] = (),
                 adversary: Adversary | None = None, dist: Distributed | None = None) -> None:
        config.validate()
        if adversary is not None:
            adversary.validate()
        self.dist = dist = dist or Distributed()
        if dist.active and adversary is not None:
            raise DifflabError("adversarial training (two optimizers over different parameters) runs in one process; "
                               "start it without torchrun")
        if config.batch_size % dist.world:
            raise DifflabError(f"--batch-size {config.batch_size} (the global batch) must split evenly over the "
                               f"{dist.world} processes; use a multiple of {dist.world}")
        self.adversary = adversary
        self.config, self.run_dir = config, Path(run_dir)
        self.device = resolve_device(dist.device(config.device))
        self.autocast = autocast_enabled(config.precision, self.device)
        self.model = model.to(self.device)
        # What the loss calls: the network compiled and/or channels-last (the same parameters; the plain module
        # is what is saved and averaged), inside DistributedDataParallel with several ranks.
        self.forward_model = dist.wrap(accelerate(self.model, compile=config.compile,
                                                  channels_last=config.channels_last), self.device)
        self.loss_fn, self.hooks = loss_fn, tuple(hooks)
        self.source = as_source(data.to(self.device) if isinstance(data, Tensor) else data)
        self.conditions = conditions.to(self.device) if conditions is not None else None
        self.order = DataOrder(len(self.source), config.batch_size, config.seed)
        self.rows = RankRows(self.order, dist.rank, dist.world)
        self._stream, self._stream_step = None, -1
        self.main_params, self.adv_params = split_parameters(self.model, adversary)
        self.opt = torch.optim.AdamW(self.main_params, lr=config.lr, weight_decay=config.weight_decay)
        self.adv_opt = None if adversary is None else torch.optim.AdamW(
            self.adv_params, lr=self.adv_lr_at(adversary.start), betas=adversary.betas,
            weight_decay=config.weight_decay if adversary.weight_decay is None else adversary.weight_decay)
        self.ema = EMA(self.model, config.ema_decay)
        # The EMA averages the main parameters only; its adversary is a copy of the raw one, so that ema.safetensors
        # loads into the same model (an average of a discriminator is never used).
        self.ema_adv = [] if adversary is None else list(self.ema.model.get_submodule(adversary.module).parameters())
        # The training generator is the same on every rank (see BatchDraws); torch's global one (dropout) differs.
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        torch.manual_seed(config.seed if dist.is_main else derived_seed(config.seed, dist.rank))
        local = config.batch_size // dist.world
        self.draws = BatchDraws(self.generator, slice(dist.rank * local, (dist.rank + 1) * local),
                                config.batch_size) if dist.active else self.generator
        self.step = 0

    # --- state ---------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Write a checkpoint of this step (rank 0; every rank takes part, handing over its RNG states)."""
        opt_tensors, opt_meta = ckpt.optimizer_state(self.opt)
        rng = self._gather_rng_states()
        if not self.dist.is_main:
            return None
        meta = {"step": self.step, "ema_updates": self.ema.updates, "optimizer": opt_meta,
                "epoch": self.order.epoch(self.step), "config": asdict(self.config), "world_size": self.dist.world}
        if self.adv_opt is not None:
            adv_tensors, adv_meta = ckpt.optimizer_state(self.adv_opt)
            opt_tensors.update({ADVERSARY + k: v for k, v in adv_tensors.items()})
            meta.update(adversary=asdict(self.adversary), adversary_optimizer=adv_meta)
        try:
            return ckpt.write_checkpoint(self.run_dir, self.step, {
                "model": self.model.state_dict(), "ema": self.ema.model.state_dict(),
                "trainer": {**opt_tensors, **rng}}, meta, keep=self.config.keep_checkpoints)
        except OSError as e:
            raise self._write_error(self.run_dir / ckpt.CHECKPOINTS / f"step_{self.step:07d}", e) from None

    def load(self, path: Path) -> None:
        """Restore everything a checkpoint folder holds, so the run continues bit for bit."""
        meta = read_json(path / "trainer.json")
        if "adversary_optimizer" in meta and self.adv_opt is None:
            raise DifflabError(f"{path} was written by an adversarial run (two optimizers) and this run has no "
                               f"Adversary; resume it with the loss and Adversary it was trained with")
        if "adversary_optimizer" not in meta and self.adv_opt is not None:
            raise DifflabError(f"{path} was written by a run without an adversary and this run has one; resume it "
                               f"without an Adversary, or start the adversarial run afresh")
        ckpt.load_weights(self.model, path / "model.safetensors")
        ckpt.load_weights(self.ema.model, path / "ema.safetensors")
        tensors = ckpt.read_checkpoint_tensors(path / "trainer.safetensors")
        try:
            ckpt.load_optimizer_state(self.opt, tensors, meta["optimizer"])  # moves moments to the params' device
            if self.adv_opt is not None:
                adv_tensors = {k[len(ADVERSARY):]: v for k, v in tensors.items() if k.startswith(ADVERSARY)}
                ckpt.load_optimizer_state(self.adv_opt, adv_tensors, meta["adversary_optimizer"])
            ckpt.set_rng_states(self.generator, ckpt.rank_rng_states(tensors, self.dist.rank))
            self.step, self.ema.updates = int(meta["step"]), int(meta["ema_updates"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise DifflabError(f"trainer state in {path} is incomplete or corrupt ({type(e).__name__}: {e}); "
                               f"use an earlier checkpoint or retrain") from None

    def resume_from(self, path: Path) -> None:
        """:meth:`load` a checkpoint of this run, refusing one past --steps (the run would train backwards)."""
        self.load(path)
        if self.config.steps < self.step:
            raise DifflabError(f"--steps {self.config.steps} is below step {self.step}, where {self.run_dir} stands; "
                               f"give --steps {self.step} or more")

    # --- loop ----------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        return self.config.lr * min(1.0, (step + 1) / self.config.warmup) if self.config.warmup else self.config.lr

    def adv_lr_at(self, step: int) -> float:
        """The adversary's learning rate at ``step``: 0 before ``start``, then its own linear warm-up."""
        adv = self.adversary
        if adv is None or step < adv.start:
            return 0.0
        lr = self.config.lr if adv.lr is None else adv.lr
        return lr * min(1.0, (step - adv.start + 1) / adv.warmup) if adv.warmup else lr

    def next_batch(self) -> Tensor:
        """This rank's rows of the batch of the current step, (b, ...) examples on the device, from the source's
        stream (started afresh where the step is not the one it stands at)."""
        if self._stream is None or self._stream_step != self.step:
            self._stream = self.source.stream(range(self.step, self.config.steps), self.rows)
            self._stream_step = self.step
        x = next(self._stream).to(self.device, non_blocking=True)
        self._stream_step += 1
        return x

    def train_step(self) -> StepResult:
        x = self.next_batch()
        cond = None if self.conditions is None else self.conditions[self.rows(self.step).to(self.device)]
        adversarial = self.adversary is not None and self.step >= self.adversary.start
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            if self.adversary is None:
                out = self.loss_fn(self.forward_model, x, cond, self.draws)
            else:
                out = self.loss_fn(self.forward_model, x, cond, self.draws, adversarial=adversarial)
        losses = self._as_losses(out)
        loss = losses.main.float().mean()
        if not self.dist.all_finite(loss.detach()):
            self._stop_nonfinite("loss", float(loss.detach()))
        adv_loss = losses.adversary.float().mean() if adversarial and losses.adversary is not None else None
        if adv_loss is not None and not torch.isfinite(adv_loss):
            self._stop_nonfinite("adversary loss", float(adv_loss.detach()))
        # Each loss's gradient reaches its own parameters only (``inputs``): the main loss's gradient through the
        # adversary (e.g. g_adv = -D(G(z))) never lands in the adversary's .grad, and the reverse.
        self.opt.zero_grad(set_to_none=True)
        if self.adv_opt is None:
            loss.backward()
        else:
            torch.autograd.backward(loss, inputs=self.main_params)
        grad_norm = self._clip(self.main_params, self.config.grad_clip, "gradient norm")
        scalars = {k: _scalar(k, v) for k, v in losses.logs.items()}
        if adv_loss is not None:
            self.adv_opt.zero_grad(set_to_none=True)
            try:
                torch.autograd.backward(adv_loss, inputs=self.adv_params)
            except RuntimeError as e:
                if "second time" not in str(e):
                    raise
                raise DifflabError("the adversary loss backpropagates through the main loss's graph, which is freed; "
                                   "compute it from detached outputs (D(fake.detach()))") from None
            clip = self.config.grad_clip if self.adversary.grad_clip is None else self.adversary.grad_clip
            adv_grad_norm = self._clip(self.adv_params, clip, "adversary gradient norm")
            scalars.update(adversary_loss=adv_loss.detach(), adversary_grad_norm=torch.tensor(adv_grad_norm))
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.opt.step()
        if adv_loss is not None:
            for group in self.adv_opt.param_groups:
                group["lr"] = self.adv_lr_at(self.step)
            self.adv_opt.step()
        self.ema.update(self.model)
        with torch.no_grad():
            for shadow, param in zip(self.ema_adv, self.adv_params):
                shadow.copy_(param)
        self.step += 1
        return StepResult(losses.main.detach(), losses.key.detach(), grad_norm, scalars)

    def _as_losses(self, out: tuple[Tensor, Tensor] | Losses) -> Losses:
        if isinstance(out, Losses):
            return out
        if self.adversary is not None:
            raise DifflabError("with an Adversary, loss_fn must return Losses(main, key, adversary, logs), "
                               "not a (loss, key) tuple")
        loss, key = out
        return Losses(loss, key)

    def _gather_rng_states(self) -> dict[str, Tensor]:
        """This rank's RNG states (one process: the training generator's, torch's and every GPU's); with
        several processes, rank 0 gets every rank's, rank r > 0 under "rng.rank{r}.*"."""
        if not self.dist.active:
            return ckpt.rng_states(self.generator)
        states = ckpt.rng_states(self.generator, self.device)
        gathered = dict(states)
        for key in sorted(states):                          # the same keys and sizes on every rank
            every = self.dist.all_gather(states[key].to(self.device).unsqueeze(0)).cpu()   # (world, n)
            gathered.update({ckpt.rank_rng_key(key, r): every[r] for r in range(1, self.dist.world)})
        return gathered

    def _clip(self, params: list[nn.Parameter], max_norm: float, what: str) -> float:
        """Clip the global gradient norm of ``params`` to ``max_norm`` (0 = off); stop if it is not finite."""
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf))
        if not math.isfinite(norm):
            self._stop_nonfinite(what, norm)
        return norm

    def _stop_nonfinite(self, what: str, value: float) -> None:
        found = ckpt.latest_checkpoint(self.run_dir)
        kept = found.name if found else "none yet"
        raise DifflabError(f"{what} is {value} at step {self.step + 1}: training stopped and the last good checkpoint "
                           f"({kept}) is kept in {self.run_dir}; lower --lr or --grad-clip, then --resume {self.run_dir}")

    def run_to_end(self, progress: bool = True) -> TrainResult:
        """:meth:`run`, timed: the steps it took, their seconds, and the last logged loss and images/s."""
        t0, start = time.perf_counter(), self.step
        self.run(progress=progress)
        seconds = time.perf_counter() - t0
        records = read_log(self.run_dir / LOG)
        last = records[-1] if records else {}
        return TrainResult(self.run_dir, self.step - start, seconds, last.get("loss"), last.get("img_per_s"),
                           self.dist.is_main)

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
        scalars: dict[str, list[Tensor]] = {}
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (progress and self.dist.is_main), unit="step",
                   dynamic_ncols=True)
        try:
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                result = self.train_step()
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t_window += time.perf_counter() - t0
                n_window += result.loss.shape[0] * self.dist.world
                window.append((result.loss.float(), result.key.float()))
                grad_norms.append(result.grad_norm)
                for name, value in result.scalars.items():
                    scalars.setdefault(name, []).append(value)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    if self.dist.active:        # every rank's examples of the window
                        window = [tuple(self.dist.all_gather(torch.cat(part)).cpu() for part in zip(*window))]
                    record = log_record(self.step, window, n_window / t_window, self.lr_at(self.step - 1),
                                        sum(grad_norms) / len(grad_norms), self.order.epoch(self.step))
                    record.update(self.source.pop_stats())     # a streaming source's loading figures
                    if self.adversary is not None:
                        record["adversary_lr"] = self.adv_lr_at(self.step - 1)
                    # each scalar is the mean over the steps of the window that reported it
                    record.update({k: float(torch.stack(v).float().mean()) for k, v in scalars.items()})
                    self._append_log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.0f}")
                    window, t_window, n_window, grad_norms, scalars = [], 0.0, 0, [], {}
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
                self._run_hooks()
        finally:
            bar.close()                     # before any message, so it does not land on the bar's line

    def _run_hooks(self) -> None:
        if not self.dist.is_main:
            return
        for hook in self.hooks:
            if hook.due(self.step, self.config.steps):
                hook.fn(self.step, self.ema.model)

    def _append_log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
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


@dataclass(frozen=True)
class StepResult:
    """One step's per-example loss and key (B,), the main gradient norm (before clipping), and the named scalars
    to log (the adversary's loss and gradient norm when it stepped, and the loss's ``logs``) as 0-d tensors."""

    loss: Tensor
    key: Tensor
    grad_norm: float
    scalars: dict[str, Tensor]


def split_parameters(model: nn.Module, adversary: Adversary | None) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The main parameters (all, without an adversary) and the adversary submodule's, each in model order."""
    if adversary is None:
        return list(model.parameters()), []
    try:
        adv = list(model.get_submodule(adversary.module).parameters())
    except AttributeError:
        raise DifflabError(f"the model has no submodule {adversary.module!r}; name the discriminator's submodule "
                           f"in Adversary(module=...)") from None
    ids = {id(p) for p in adv}
    main = [p for p in model.parameters() if id(p) not in ids]
    if not adv or not main:
        which = "the adversary" if not adv else "the main set"
        raise DifflabError(f"Adversary(module={adversary.module!r}) leaves {which} without parameters; name the "
                           f"discriminator's submodule, a part of the model and not all of it")
    return main, adv


def _scalar(name: str, value: Tensor | float) -> Tensor:
    if name in TRAINER_LOGS:
        raise DifflabError(f"loss log {name!r} is a name the trainer logs itself; rename it in the loss's logs")
    value = torch.as_tensor(value).detach()
    if value.numel() != 1:
        raise DifflabError(f"loss log {name!r} has {value.numel()} values; log a scalar (e.g. its .mean())")
    return value.reshape(()).float()


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
