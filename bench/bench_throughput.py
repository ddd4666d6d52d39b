"""Training and sampling throughput (images/s) of each network preset on the device at hand, for fp32, bf16,
torch.compile and channels-last, each as a ratio to the fp32 eager baseline of the same preset.

    python bench/bench_throughput.py [--device auto] [--presets tiny,small] [--modes fp32,channels-last,compile]
                                     [--batch 128] [--train-steps 20] [--sample-n 256] [--sample-steps 20] [--quick]

For each preset, on data of its default shape (DEFAULT_SHAPES; --channels and --image-size override the image
presets'; the values are noise: the time does not depend on them), the default objective on DDPM (eps, uniform
weighting, discrete times):
  train   images/s of difflab's training step (Trainer.train_step at the trainer's defaults: diffusion_loss,
          backward, gradient clipping, AdamW, the EMA update); --batch images a step, after --warmup-steps
          untimed steps (which also compile)
  sample  images/s of DDIM with --sample-steps steps drawing --sample-n images in one batch through generate()
          (per-sample noise, the float64 loop), after an untimed run of the same batch (which also compiles)
A mode joins options with "+": fp32 (the baseline), bf16 (autocast, CUDA only), compile, channels-last (image
presets only), e.g. bf16+compile+channels-last. CUDA time is synchronised before each clock reading. The
network's weights are left at initialisation (the time does not depend on them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from difflab.cli.bench import parse_list, progress
from difflab.dataspec import DataSpec
from difflab.errors import DifflabError
from difflab.denoisers import NetworkDenoiser
from difflab.networks import PRESETS, BACKBONES, build_network, network_config
from difflab.training.acceleration import accelerate
from difflab.objectives import DiffusionObjective, diffusion_loss
from difflab.pipelines.sample import generate
from difflab.process import build_process
from difflab.training import Trainer, TrainerConfig, resolve_device

# Each preset's data: what its registry comment sizes it for (digits 8x8 for tiny, MNIST 28x28 for small, CIFAR-10
# 32x32 for the two larger U-Nets, 2-D points for the MLPs).
DEFAULT_SHAPES: dict[str, tuple[int, ...]] = {"tiny": (1, 8, 8), "small": (1, 28, 28), "medium": (3, 32, 32),
                                              "ddpm-cifar10": (3, 32, 32), "mlp-small": (2,), "mlp": (2,)}
OPTIONS = ("fp32", "bf16", "compile", "channels-last")
BASELINE = "fp32"
SIZES = dict(batch=128, warmup_steps=3, train_steps=20, sample_n=256, sample_steps=20)
QUICK = dict(presets="tiny,mlp-small", modes="fp32,channels-last", batch=64, warmup_steps=2, train_steps=5,
             sample_n=64, sample_steps=10)
SIZE_HELP = dict(batch="training batch", warmup_steps="untimed training steps", train_steps="timed training steps",
                 sample_n="images sampled in one batch", sample_steps="DDIM steps")


@dataclass(frozen=True)
class Mode:
    bf16: bool = False
    compile: bool = False
    channels_last: bool = False

    @classmethod
    def parse(cls, text: str) -> Mode:
        parts = text.split("+")
        unknown = [p for p in parts if p not in OPTIONS]
        if unknown or not parts:
            raise ValueError(text)
        return cls("bf16" in parts, "compile" in parts, "channels-last" in parts)

    @property
    def name(self) -> str:
        parts = [p for p, on in (("bf16", self.bf16), ("compile", self.compile), ("channels-last", self.channels_last))
                 if on]
        return "+".join(parts) or BASELINE


def data_spec(preset: str, channels: int | None, image_size: int | None) -> DataSpec:
    shape = DEFAULT_SHAPES.get(preset)
    if shape is None:
        raise DifflabError(f"no default data shape for preset {preset!r}; known: {', '.join(DEFAULT_SHAPES)}")
    if len(shape) == 1:
        return DataSpec.points(shape[0])
    c, h, _ = shape
    size = image_size or h
    return DataSpec.pixels(channels or c, size, size)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    synchronize(device)
    return time.perf_counter()


def train_images_per_s(network: torch.nn.Module, mode: Mode, spec: DataSpec, a: argparse.Namespace,
                       device: torch.device) -> float:
    """Images/s of the trainer's own step (Trainer.train_step) at batch --batch, on --batch noise images."""
    process = build_process({"name": "ddpm"})
    objective = DiffusionObjective(time_sampling="auto").resolved(process)
    config = TrainerConfig(batch_size=a.batch, device=str(device), precision="bf16" if mode.bf16 else "fp32",
                           compile=mode.compile, channels_last=mode.channels_last)
    x0 = torch.randn(a.batch, *spec.shape).clamp(-1, 1)

    def loss_fn(model, x, cond, generator):
        return diffusion_loss(model, process, objective, x, cond, generator)

    with tempfile.TemporaryDirectory() as run_dir:         # a step writes nothing; the trainer wants a folder
        trainer = Trainer(network, loss_fn, x0, None, config, Path(run_dir))
        for _ in range(a.warmup_steps):
            trainer.train_step()
        t0 = clock(device)
        for _ in range(a.train_steps):
            trainer.train_step()
        return a.train_steps * a.batch / (clock(device) - t0)


def sample_images_per_s(network: torch.nn.Module, mode: Mode, spec: DataSpec, a: argparse.Namespace,
                        device: torch.device) -> float:
    """Images/s of DDIM with --sample-steps steps, --sample-n images in one batch."""
    process = build_process({"name": "ddpm"})
    called = accelerate(network.eval(), compile=mode.compile, channels_last=mode.channels_last, autocast=mode.bf16)
    denoiser = NetworkDenoiser(called, process, "eps")

    def draw(steps: int) -> None:
        generate(denoiser, spec.shape, "ddim", steps, a.sample_n, seed=0, batch_size=a.sample_n, device=device)

    draw(2)                              # the same batch shape: compiles, warms the allocator and the kernels
    t0 = clock(device)
    draw(a.sample_steps)
    return a.sample_n / (clock(device) - t0)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU, {torch.get_num_threads()} thread(s)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--presets", help=f"comma-separated network presets (default: every one with a default shape: "
                   f"{', '.join(DEFAULT_SHAPES)}); --quick: {QUICK['presets']}")
    p.add_argument("--modes", help="comma-separated modes, options joined by + (fp32, bf16, compile, channels-last) "
                   "(default: fp32,channels-last,compile on the CPU; fp32,bf16,channels-last,compile,"
                   f"bf16+compile+channels-last on CUDA; --quick: {QUICK['modes']})")
    p.add_argument("--channels", type=int, help="channels of the image presets' data (default: each preset's own)")
    p.add_argument("--image-size", type=int, help="height = width of the image presets' data (default: each "
                   "preset's own)")
    for key, what in SIZE_HELP.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, help=f"{what} (default: {SIZES[key]}; --quick: "
                       f"{QUICK[key]})")
    p.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's own)")
    p.add_argument("--quick", action="store_true", help="a small run (< 2 min on a 2-core CPU): the --quick values "
                   "above, unless given")
    a = p.parse_args(argv)
    for key in SIZES:
        if getattr(a, key) is None:
            setattr(a, key, (QUICK if a.quick else SIZES)[key])
        least = 0 if key == "warmup_steps" else 1
        if getattr(a, key) < least:
            p.error(f"--{key.replace('_', '-')} must be >= {least}")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    device = resolve_device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = device.type == "cuda"
    default_modes = "fp32,bf16,channels-last,compile,bf16+compile+channels-last" if cuda else "fp32,channels-last,compile"
    presets = parse_list(a.presets or (QUICK["presets"] if a.quick else ",".join(DEFAULT_SHAPES)), str, "--presets",
                         list(PRESETS))
    modes = parse_list(a.modes or (QUICK["modes"] if a.quick else default_modes), Mode.parse, "--modes")
    modes = [Mode()] + [m for m in modes if m != Mode()]      # the baseline first: every ratio divides by it
    print(f"device: {device_name(device)}; torch {torch.__version__}; batch {a.batch} (train), {a.sample_n} x DDIM "
          f"{a.sample_steps} steps (sample)\n")
    header = f"{'preset':13s} {'data':10s} {'params':>7s} {'mode':27s} {'train img/s':>11s} {'x':>5s} " \
             f"{'sample img/s':>12s} {'x':>5s}"
    print(header)
    print("-" * len(header))
    t_start = time.perf_counter()
    for preset in presets:
        spec = data_spec(preset, a.channels, a.image_size)
        base: tuple[float, float] | None = None
        for mode in modes:
            image = BACKBONES[PRESETS[preset]].layout == "image"
            why = ("CUDA only" if mode.bf16 and not cuda else
                   "image presets only" if mode.channels_last and not image else None)
            torch.manual_seed(0)
            network = build_network(network_config(preset, spec)).to(device)
            params = f"{sum(p.numel() for p in network.parameters()) / 1e6:.2f}M"
            data = "x".join(map(str, spec.shape))
            if why:
                print(f"{preset:13s} {data:10s} {params:>7s} {mode.name:27s} {'n/a: ' + why:>37s}")
                continue
            progress(f"{preset} {mode.name}")
            train = train_images_per_s(network, mode, spec, a, device)
            sample = sample_images_per_s(network, mode, spec, a, device)
            base = base or (train, sample)
            print(f"{preset:13s} {data:10s} {params:>7s} {mode.name:27s} {train:11.1f} {train / base[0]:5.2f} "
                  f"{sample:12.1f} {sample / base[1]:5.2f}", flush=True)
    print(f"\n({time.perf_counter() - t_start:.0f} s; x: images/s over the {BASELINE} eager row of the same preset)")


if __name__ == "__main__":
    try:
        main()
    except DifflabError as e:
        sys.exit(f"error: {e}")
