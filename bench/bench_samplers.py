"""Benchmark every sampler on the analytic Gaussian mixture and print ratios.

    python bench/bench_samplers.py [the options of `difflab bench-samplers`: --dims 2,64 --nfe 5,10,20 ...]

Runs `difflab bench-samplers` (difflab.pipelines.bench_samplers) and prints, besides its tables:
  * error / floor: each sampler's sliced W2 on its best time grid over the finite-sample floor
    (1 = indistinguishable from exact samples at this n);
  * RMS / euler RMS: for the deterministic samplers, the error against the reference solve relative to
    Euler's at the same target NFE, each on its best grid (below 1: more accurate than Euler for the same cost).

Samplers may carry options (--samplers unipc:order=3:variant=bh1,...); --low-noise raises --n to 20000 and
checks the reference solve, so that the errors compared lie well above the finite-sample floor.
"""

from __future__ import annotations

import sys

from difflab.cli.bench import add_bench_flags, bench_arguments, progress
from difflab.cli.common import Parser
from difflab.errors import DifflabError
from difflab.pipelines.bench_samplers import BenchResult, bench_samplers, format_tables


def best(result: BenchResult, dim: int, process: str, sampler: str, target: int, key: str) -> tuple[float, str] | None:
    """(smallest value of ``key`` over the time grids, that grid) for one cell, or None."""
    cells = [(getattr(r, key), r.spacing) for r in result.rows
             if (r.dim, r.process, r.sampler, r.target_nfe) == (dim, process, sampler, target)
             and getattr(r, key) is not None]
    return min(cells) if cells else None


def ratio_tables(result: BenchResult) -> str:
    out = []
    targets = sorted({r.target_nfe for r in result.rows})
    samplers = list(dict.fromkeys(r.sampler for r in result.rows))
    deterministic = {r.sampler for r in result.rows if r.rms is not None}
    width = max([15, *map(len, samplers)])
    head = f"{'sampler':{width}s}" + "".join(f"{'NFE~' + str(k):>19s}" for k in targets)
    for dim, process in dict.fromkeys((r.dim, r.process) for r in result.rows):
        floor = result.floors[f"{dim}/{process}"]
        out += ["", f"== {dim}-D, {process}: sliced W2 / floor ({floor:.4f}), best grid", head]
        for s in samplers:
            cells = [best(result, dim, process, s, k, "sw2") for k in targets]
            out.append(f"{s:{width}s}" + "".join(f"{c[0] / floor:8.2f} {c[1]:>10s}" if c else f"{'-':>19s}" for c in cells))
        if "euler" in deterministic:
            out += ["", f"== {dim}-D, {process}: RMS to the reference / euler's RMS at the same NFE, best grids", head]
            for s in (s for s in samplers if s in deterministic):
                cells = []
                for k in targets:
                    mine, euler = best(result, dim, process, s, k, "rms"), best(result, dim, process, "euler", k, "rms")
                    cells.append(f"{mine[0] / euler[0]:8.3f} {mine[1]:>10s}" if mine and euler else f"{'-':>19s}")
                out.append(f"{s:{width}s}" + "".join(cells))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = Parser(prog="bench_samplers.py", description=__doc__.split("\n")[0])
    add_bench_flags(p)
    try:
        result = bench_samplers(**bench_arguments(p.parse_args(argv)), progress=progress)
    except DifflabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(format_tables(result))
    print(ratio_tables(result))


if __name__ == "__main__":
    main()
