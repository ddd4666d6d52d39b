"""`difflab bench-samplers`: every sampler and time grid against the exact answer on an analytic mixture."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from difflab.cli.common import add, positive_int
from difflab.process import PROCESSES
from difflab.samplers import SAMPLERS, SPACINGS

DEFAULTS = {"dims": "2,64", "nfe": "5,10,20,50,100,200", "n": 2000, "process": "vp",
            "samplers": ",".join(SAMPLERS), "spacings": ",".join(SPACINGS)}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-samplers", help="error and wall time against NFE of every sampler on an exact model",
                       description=(
                           "Sample an analytic Gaussian mixture (a perfectly trained model) with every sampler and "
                           "time grid at several NFE and print tables of the error (sliced W2 to exact samples, "
                           "beside the floor between two exact draws; for the ODE solvers also the RMS error "
                           "against a reference solve from the same noise) and the wall time. Each sampler gets "
                           "the number of steps whose NFE is closest to the target (dopri5: the tolerance)."))
    add(p, "--dims", "comma-separated data dimensions", DEFAULTS["dims"])
    add(p, "--nfe", "comma-separated target NFE", DEFAULTS["nfe"])
    add(p, "--n", "samples per run (and exact draws to compare with)", DEFAULTS["n"], type=positive_int)
    add(p, "--process", f"comma-separated processes ({', '.join(PROCESSES)})", DEFAULTS["process"])
    add(p, "--samplers", "comma-separated samplers", DEFAULTS["samplers"])
    add(p, "--spacings", "comma-separated time grids", DEFAULTS["spacings"])
    add(p, "--seed", "seed of the exact draws, the starting noise and the samplers' noise", 0, type=int)
    add(p, "--json", "also write every row as JSON to this file", metavar="OUT")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from difflab.pipelines.bench_samplers import bench_samplers, format_tables, parse_list

    def value(name: str) -> str:
        given = getattr(a, name)
        return DEFAULTS[name] if given is None else given

    result = bench_samplers(
        dims=parse_list(value("dims"), int, "--dims"), nfes=parse_list(value("nfe"), int, "--nfe"),
        n=a.n or DEFAULTS["n"], processes=parse_list(value("process"), str, "--process", PROCESSES),
        samplers=parse_list(value("samplers"), str, "--samplers", tuple(SAMPLERS)),
        spacings=parse_list(value("spacings"), str, "--spacings", SPACINGS), seed=a.seed or 0,
        progress=lambda msg: print(f"... {msg}", file=sys.stderr, flush=True))
    print(format_tables(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result.to_json(), indent=1))
        print(f"rows -> {a.json}")
