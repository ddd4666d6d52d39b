"""`difflab bench-samplers`: every sampler and time grid against the exact answer on an analytic mixture.

The options and their defaults are those of :func:`difflab.pipelines.bench_samplers.bench_samplers` (read from
its signature); ``add_bench_flags`` and ``bench_arguments`` also serve bench/bench_samplers.py.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from difflab.cli.common import option
from difflab.errors import DifflabError
from difflab.process import PROCESSES
from difflab.samplers import SPACINGS


@dataclass(frozen=True)
class ListFlag:
    """A comma-separated list option for the bench_samplers parameter of the same meaning."""

    flag: str
    param: str
    help: str
    item: Callable[[str], Any]
    allowed: Sequence[Any] | None = None


def sampler_spec(text: str) -> Any:
    """A sampler with its options, "name:key=value:..." (pipelines.bench_samplers.parse_sampler_spec)."""
    from difflab.pipelines.bench_samplers import parse_sampler_spec
    return parse_sampler_spec(text)


BENCH_FLAGS = (
    ListFlag("--dims", "dims", "comma-separated data dimensions", int),
    ListFlag("--nfe", "nfes", "comma-separated target NFE", int),
    ListFlag("--process", "processes", f"comma-separated processes ({', '.join(PROCESSES)})", str, PROCESSES),
    ListFlag("--samplers", "samplers", "comma-separated samplers, each with options if wanted as "
             "name:key=value:key=value (e.g. ddim:eta=0.5,dpmpp-2m:lower_order_final=off)", sampler_spec),
    ListFlag("--spacings", "spacings", "comma-separated time grids", str, SPACINGS),
)


def bench_defaults() -> dict[str, Any]:
    from difflab.pipelines.bench_samplers import bench_samplers
    return {p.name: p.default for p in inspect.signature(bench_samplers).parameters.values()}


def parse_list(text: str, kind: Callable[[str], Any], name: str, allowed: Sequence[Any] | None = None) -> list[Any]:
    """'a,b,c' -> [kind(a), ...]; a DifflabError naming ``name`` on a bad item."""
    items = []
    for part in text.split(","):
        try:
            item = kind(part.strip())
        except ValueError:
            raise DifflabError(f"{name}: cannot read {part.strip()!r} in {text!r}") from None
        except DifflabError as e:
            raise DifflabError(f"{name}: {e}") from None
        if allowed is not None and item not in allowed:
            raise DifflabError(f"{name}: unknown {item!r}; choose from {', '.join(map(str, allowed))}")
        items.append(item)
    if not items:
        raise DifflabError(f"{name} is empty")
    return items


def add_bench_flags(p: argparse.ArgumentParser) -> None:
    from difflab.cli.common import positive_int
    from difflab.pipelines.bench_samplers import LOW_NOISE_N

    defaults = bench_defaults()
    for f in BENCH_FLAGS:
        option(p, f.flag, f.help, ",".join(map(str, defaults[f.param])), dest=f.param)
    option(p, "--n", "samples per run (and exact draws to compare with)", defaults["n"], type=positive_int)
    option(p, "--seed", "seed of the exact draws, the starting noise and the samplers' noise", defaults["seed"],
           type=int)
    p.add_argument("--low-noise", action="store_true",
                   help=f"errors that resolve small differences: --n raised to at least {LOW_NOISE_N} (the "
                        "finite-sample floor, printed, then lies well below the errors) and the reference solve "
                        "checked against a twice finer one")


def bench_arguments(a: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of bench_samplers from the parsed flags."""
    values = {f.param: parse_list(getattr(a, f.param), f.item, f.flag, f.allowed) for f in BENCH_FLAGS}
    return {**values, "n": a.n, "seed": a.seed, "low_noise": a.low_noise}


def configure(name: str, p: argparse.ArgumentParser) -> None:
    p.description = ("Sample an analytic Gaussian mixture (a perfectly trained model) with every sampler and time grid "
                     "at several NFE and print tables of the error (sliced W2 to exact samples, beside the floor "
                     "between two exact draws; for every deterministic sampler also the RMS error against a reference "
                     "solve of the probability-flow ODE from the same noise) and the wall time. Each sampler gets the "
                     "number of steps whose NFE is closest to the target (dopri5: the tolerance).")
    add_bench_flags(p)
    option(p, "--json", "also write every row as JSON to this file", metavar="OUT")
    p.set_defaults(func=run)


def progress(msg: str) -> None:
    print(f"... {msg}", file=sys.stderr, flush=True)


def run(a: argparse.Namespace) -> None:
    from difflab.pipelines.bench_samplers import bench_samplers, format_tables

    result = bench_samplers(**bench_arguments(a), progress=progress)
    print(format_tables(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result.to_json(), indent=1))
        print(f"rows -> {a.json}")
