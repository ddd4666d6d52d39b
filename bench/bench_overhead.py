"""What difflab's sampling loop costs beyond the network: loop time / (NFE x one network forward), default U-Net.

    python bench/bench_overhead.py [--batch 256] [--steps 20] [--repeats 15] [--threads 1]

The network is the default run's (`difflab train`: the "tiny" U-Net fitted to the digits, 1 x 8 x 8, DDPM
with T = 1000, eps prediction; its weights do not change the time, so they are left at initialisation). For
every registered grid sampler at --steps steps on the uniform grid, at a fixed batch (generate()'s default
batch size, 256), as generate() calls it (float32 x, PerSampleNoise: one generator per sample):
  forward    network(x, log-SNR, None) alone: the pure network cost (fastest of --repeats)
  overhead   the same sampler call with a stub network (one tensor op, no layers): everything the loop does
             besides the network (path coefficients, the network's input and noise level, x0/eps, the step,
             the noise draws), per evaluation; also with one generator for the batch (GeneratorNoise) and for
             the denoiser call alone (the read-out around the network)
  ratio      (NFE x forward + overhead) / (NFE x forward), target <= 1.03; and, as a cross-check, the real
             loop timed whole / (NFE x forward) (noisier: two large times on a shared CPU)
Fastest of --repeats throughout: on a shared machine the minimum is the steadiest estimate of a fixed cost.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch
from torch import Tensor, nn

from difflab.dataspec import DataSpec
from difflab.denoisers import NetworkDenoiser
from difflab.networks import build_network, network_config
from difflab.process import build_process
from difflab.process.base import as_time
from difflab.rng import GeneratorNoise, PerSampleNoise
from difflab.samplers import SAMPLERS, get_sampler, sampler_options, time_grid

DIGITS = DataSpec.pixels(1, 8, 8)            # the default data of `difflab train`
TARGET = 1.03


def seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class StubNetwork(nn.Module):
    """Stands in for the network to time everything around it: returns 0 * x (one elementwise op)."""

    def __init__(self, like: nn.Module) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))                      # float32, as the network's
        if hasattr(like, "noise_input"):
            self.noise_input = like.noise_input

    def forward(self, x: Tensor, noise: Tensor, cond: Any = None) -> Tensor:
        return x * self.weight


def fastest(fn: Callable[[], Any], repeats: int) -> float:
    return min(seconds(fn) for _ in range(repeats))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256, help="batch (default: 256, generate()'s batch size)")
    p.add_argument("--steps", type=int, default=20, help="grid steps of each sampler (default: 20)")
    p.add_argument("--repeats", type=int, default=15, help="timings of each, the fastest kept (default: 15)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--samplers", help="comma-separated (default: every registered sampler on a grid)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    process = build_process({"name": "ddpm"})
    config = network_config("auto", DIGITS)
    network = build_network(config).eval()
    denoiser, stub = NetworkDenoiser(network, process, "eps"), NetworkDenoiser(StubNetwork(network), process, "eps")
    names = a.samplers.split(",") if a.samplers else [s for s in SAMPLERS if "rtol" not in sampler_options(s)]
    ts = time_grid(process, a.steps, "uniform")
    x = PerSampleNoise.for_items(0, 0, a.batch).randn(DIGITS.shape) * process.prior_std()   # float32, as generate()
    level = process.log_snr(as_time(0.5, batch=a.batch)).float()
    t0 = time.perf_counter()
    with torch.no_grad():
        forward = fastest(lambda: network(x, level, None), 3 * a.repeats)
        readout = fastest(lambda: stub(x, as_time(0.5)), 3 * a.repeats)
        print(f"default network: {config['kind']} ({sum(q.numel() for q in network.parameters()) / 1e6:.2f}M "
              f"parameters), batch {a.batch} x {DIGITS.shape}, {a.threads} thread(s), {a.steps} uniform steps")
        print(f"one forward {1e3 * forward:.2f} ms; the denoiser's read-out around it {1e3 * readout:.3f} ms "
              f"({100 * readout / forward:.2f}% of a forward)\n")
        print(f"{'sampler':16s} {'NFE':>4s} {'overhead/NFE ms':>15s} {'(one generator)':>15s} {'ratio':>7s} "
              f"{'(one generator)':>15s} {'whole loop':>10s}  target <= {TARGET}")
        for name in names:
            fn = get_sampler(name)

            def call(model: NetworkDenoiser, per_sample: bool = True) -> Any:
                noise = PerSampleNoise.for_items(0, 0, a.batch) if per_sample else GeneratorNoise(
                    torch.Generator().manual_seed(0))
                return fn(model, x, ts, noise=noise)

            nfe = call(stub).nfe
            over = fastest(lambda: call(stub), a.repeats) / nfe
            over_gen = fastest(lambda: call(stub, False), a.repeats) / nfe
            whole = fastest(lambda: call(denoiser), max(3, a.repeats // 5))
            ratio, ratio_gen = (forward + over) / forward, (forward + over_gen) / forward
            verdict = "pass" if ratio <= TARGET else "FAIL"
            print(f"{name:16s} {nfe:4d} {1e3 * over:15.3f} {1e3 * over_gen:15.3f} {ratio:7.3f} {ratio_gen:15.3f} "
                  f"{whole / (nfe * forward):10.3f}  {verdict}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
