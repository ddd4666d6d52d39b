"""FID of trained runs at a given NFE, for each sampler and time grid: which sampler draws the best images on a
small budget, and what a learned variance does to few-step DDPM sampling.

    python bench/bench_run_samplers.py --checkpoint runs/digits [--checkpoint runs/digits-lv ...] --nfe 10,50 \\
        --samplers ddim,dpmpp-2m,dpmpp-3m,unipc,unipc:order=3,dpmpp-2s,edm,ddpm --spacings uniform,logsnr,karras \\
        --n 2000 [--bpd] [--json out.json]

Every (run, sampler, grid, NFE) draws --n samples from the same seeds (sample i from its own generator, so the
samplers see the same starting noise) and scores them against the run's training images with the built-in
features: FID with its 95% bootstrap interval. Each sampler gets the number of steps whose NFE is closest to
the target (dpmpp-2s, heun and edm spend 2 steps - 1). ``--bpd`` adds each run's ELBO in bits/dim on its
held-out images (all T terms; the learned variance where the run has one). Options of a sampler are written
``name:key=value`` as in `difflab bench-samplers`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from difflab.cli.common import Parser, positive_int, positive_ints
from difflab.denoisers import bench_mixture
from difflab.errors import DifflabError
from difflab.pipelines.bench_samplers import parse_sampler_spec, steps_for_nfe
from difflab.pipelines.evaluate import evaluate, heldout_bpd, run_extractor
from difflab.pipelines.run import load_model
from difflab.training import resolve_device
from difflab.samplers import SPACINGS

DEFAULT_SAMPLERS = "ddim,dpmpp-2m,dpmpp-3m,unipc,unipc:order=3,dpmpp-2s,edm"


def run_bench(checkpoints: list[str], nfes: list[int], samplers: list[str], spacings: list[str], n: int, seed: int,
              device: str, bpd: bool) -> list[dict[str, Any]]:
    specs = [parse_sampler_spec(s) for s in samplers]
    for spacing in spacings:
        if spacing not in SPACINGS:
            raise DifflabError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
    rows: list[dict[str, Any]] = []
    device = str(resolve_device(device))
    for path in checkpoints:
        m = load_model(path, device=device)
        extractor = run_extractor(m.config, "builtin", device=device)
        counter = bench_mixture(m.process, 2)           # a dry run on it counts a sampler's NFE for a grid
        if bpd:
            summary = heldout_bpd(m.network, m.process, m.config, ("elbo",), 200, seed=seed, device=device)["elbo"]
            rows.append({"run": str(path), "bpd_elbo": summary["bpd"], "bpd_sem": summary["sem"]})
            print(f"{path}: ELBO {summary['bpd']:.4f} +- {summary['sem']:.4f} bits/dim", flush=True)
        for spec in specs:
            for spacing in spacings:
                for target in nfes:
                    steps, _ = steps_for_nfe(spec.name, counter, target, spacing, spec.options,
                                             m.process.discrete_steps)
                    start = time.perf_counter()
                    res = evaluate(m.network, m.process, m.config, sampler=spec.name, steps=steps, n=n, seed=seed,
                                   extractor=extractor, device=device, spacing=spacing, options=spec.options)
                    row = {"run": str(path), "sampler": spec.label, "spacing": spacing, "target_nfe": target,
                           "steps": steps, "nfe": res.nfe, "fid": res.report.fid,
                           "fid_interval": list(res.report.fid_interval), "seconds": time.perf_counter() - start}
                    rows.append(row)
                    low, high = row["fid_interval"]
                    print(f"{path}  {spec.label:18s} {spacing:9s} NFE {res.nfe:4d} ({steps:3d} steps)  "
                          f"FID {row['fid']:8.4f}  [{low:.3f}, {high:.3f}]", flush=True)
    return rows


def best_table(rows: list[dict[str, Any]]) -> str:
    """Per run and target NFE: each sampler's best grid, sorted by FID."""
    out = []
    fid_rows = [r for r in rows if "fid" in r]
    for run in dict.fromkeys(r["run"] for r in fid_rows):
        for target in sorted({r["target_nfe"] for r in fid_rows}):
            cell: dict[str, dict[str, Any]] = {}
            for r in fid_rows:
                if r["run"] == run and r["target_nfe"] == target:
                    if r["sampler"] not in cell or r["fid"] < cell[r["sampler"]]["fid"]:
                        cell[r["sampler"]] = r
            out.append(f"\n== {run}, NFE ~{target}: best grid per sampler")
            for r in sorted(cell.values(), key=lambda r: r["fid"]):
                out.append(f"  {r['sampler']:18s} {r['spacing']:9s} NFE {r['nfe']:4d}  FID {r['fid']:8.4f}  "
                           f"[{r['fid_interval'][0]:.3f}, {r['fid_interval'][1]:.3f}]")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = Parser(prog="bench_run_samplers.py", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", action="append", required=True, help="a run folder (repeat for several)")
    p.add_argument("--nfe", type=positive_ints, default=[10], help="target NFEs, comma-separated (default: 10)")
    p.add_argument("--samplers", default=DEFAULT_SAMPLERS, help=f"comma-separated (default: {DEFAULT_SAMPLERS})")
    p.add_argument("--spacings", default="uniform,quadratic,karras,logsnr", help="comma-separated time grids")
    p.add_argument("--n", type=positive_int, default=2000, help="samples per evaluation (default: 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--bpd", action="store_true", help="also the ELBO in bits/dim on held-out images")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    try:
        rows = run_bench(a.checkpoint, a.nfe, a.samplers.split(","), a.spacings.split(","), a.n, a.seed, a.device,
                         a.bpd)
    except DifflabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(best_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
