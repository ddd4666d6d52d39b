"""How well trained runs restore held-out images: PSNR, SSIM, measurement residual and FID per task and method.

    python bench/bench_restoration_runs.py --checkpoint runs/digits [--sr runs/sr2 runs/sr4] [--n 180]
                                            [--steps 100] [--dps-scale 0.1] [--tasks inpaint-box,sr4]

For each task (the measurement: inpaint-box, inpaint-random and inpaint-half noiseless; sr2, sr4 and blur with
sigma_y = 0.05; denoise with sigma_y = 0.2) it restores the first --n held-out images of the run's data set by
the trivial baseline (mask filled with the mean of the measured pixels; the low-resolution image upsampled
bicubically; the measurement itself), DPS (ddpm, --steps), RePaint (inpainting; jump 10, resample 10) and the
SR3 runs given with --sr (for their own factor), and prints one markdown table: PSNR (dB), SSIM, the residual
||y - A(x)|| (mean over images), FID between the restored and the true images on the built-in features, NFE
and seconds. The measurements are the same for every method (pipelines.restore.MEASUREMENT_SEED).
"""

from __future__ import annotations

import argparse

import torch

from difflab.pipelines.restore import Sampling, feature_network, input_images, measure, restoration_metrics, \
    restore, run_operator
from difflab.pipelines.run import load_model

NOISE = {"inpaint-box": 0.0, "inpaint-random": 0.0, "inpaint-half": 0.0, "sr2": 0.05, "sr4": 0.05, "blur": 0.05,
         "denoise": 0.2}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="an unconditional run (DPS and RePaint restore with it)")
    p.add_argument("--sr", nargs="*", default=[], help="SR3 runs (difflab train --task sr --scale F)")
    p.add_argument("--n", type=int, default=180, help="held-out images (digits has 180)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--dps-scale", type=float, default=0.1)
    p.add_argument("--tasks", default=",".join(NOISE))
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    a = p.parse_args()
    torch.manual_seed(0)
    model = load_model(a.checkpoint, device=a.device)
    device = next(model.network.parameters()).device
    sr_models = {f"sr{m.config.data.sr_scale}": m for m in (load_model(r, device=a.device) for r in a.sr)}
    truth = input_images(model, ["held-out"], a.n)
    features = feature_network(model, device)
    how = Sampling("ddpm", a.steps)
    print(f"{len(truth)} held-out images of {model.config.data.dataset}, {model.run_dir} (step {model.step}); "
          f"DPS paper rule zeta = {a.dps_scale} and SR3 on ddpm with {a.steps} steps, RePaint jump 10 resample 10, "
          f"on {device}\n")
    print("| task | sigma_y | method | PSNR (dB) | SSIM | residual | FID | NFE | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task in a.tasks.split(","):
        sigma_y = NOISE[task]
        op = run_operator(model, task, len(truth))
        y = measure(op, truth, sigma_y)
        rows = [("baseline", op.baseline(y, tuple(truth.shape[1:])).clamp(-1, 1), 0, 0.0)]
        for method in ("dps", "repaint") if op.mask is not None else ("dps",):
            out = restore(model, method, op, y, sigma_y, how, scale=a.dps_scale, device=device)
            rows.append((method, out.x, out.nfe, out.seconds))
        if task in sr_models:
            out = restore(sr_models[task], "sr3", op, y, sigma_y, how, device=device)
            rows.append(("sr3", out.x, out.nfe, out.seconds))
        for name, x, nfe, seconds in rows:
            m = restoration_metrics(x, truth, y, op, features)
            print(f"| {task} | {sigma_y:g} | {name} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['residual']:.3f} | "
                  f"{m.get('fid', float('nan')):.2f} | {nfe} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
