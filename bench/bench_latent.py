"""Latent diffusion, measured: autoencoders' reconstructions, then latent vs pixel diffusion at equal training time.

    python bench/bench_latent.py --dataset mnist5k --ae-steps 2000 --budget 60 --model small --out runs/bench-latent

1. Trains four autoencoders of --downsample (KL and VQ, each with and without the patch discriminator, which
   starts at half the steps; the first of --ae-kinds with it first, the rest after step 2) for --ae-steps
   each, and measures them on the held-out images (difflab
   eval-autoencoder: PSNR, SSIM, reconstruction FID on the built-in features; VQ codebook usage).
2. Trains the same network preset (--model) on pixels and on the latents of the KL + GAN autoencoder for the same
   wall-clock budget (--budget seconds of training steps each: a 100-step probe run is timed, then resumed to the
   step count that fills the budget; encoding the data set once is timed apart), and reports training images/s,
   the seconds to sample 64 images (heun, --sample-steps; a latent run's decoding included; warm, the second of
   two calls) and FID of --fid-n samples against the training set on the built-in features.

Prints markdown tables and writes them, with the raw numbers as JSON, into --out as they are measured.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from difflab.config import AutoencoderLossConfig, AutoencoderRunConfig, DataConfig, PreviewConfig, RunConfig
from difflab.networks.autoencoder import AutoencoderConfig
from difflab.pipelines.autoencoder import evaluate_autoencoder, load_autoencoder, train_autoencoder
from difflab.pipelines.evaluate import evaluate, run_extractor
from difflab.pipelines.run import load_model
from difflab.pipelines.sample import sample_run
from difflab.pipelines.train import train
from difflab.training import TrainerConfig

PROBE_STEPS = 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--downsample", type=int, default=4)
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--ae-steps", type=int, default=2000)
    p.add_argument("--ae-kinds", default="kl,vq")
    p.add_argument("--budget", type=float, default=60.0, help="training seconds of each diffusion run")
    p.add_argument("--model", default="small")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--fid-n", type=int, default=1000)
    p.add_argument("--eval-n", type=int, default=1000, help="held-out images the autoencoders are measured on")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/bench-latent")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": vars(a), "autoencoders": [], "diffusion": []}

    def save() -> None:
        (out / "results.json").write_text(json.dumps(results, indent=1))
        (out / "results.md").write_text(tables(results))

    # 1. autoencoders: the one the latent run uses first, so that a run cut short still compares the spaces
    kinds = a.ae_kinds.split(",")
    order = [(kinds[0], True)] + [(k, g) for k in kinds for g in (False, True) if (k, g) != (kinds[0], True)]

    def autoencoder(kind: str, gan: bool) -> None:
        name = f"ae-{kind}{'-gan' if gan else ''}"
        cfg = AutoencoderRunConfig(
            data=DataConfig(a.dataset),
            autoencoder=AutoencoderConfig(kind=kind, downsample=a.downsample,
                                          latent_channels=a.latent_channels).to_json(),
            discriminator=AutoencoderRunConfig().discriminator if gan else None,
            loss=AutoencoderLossConfig(disc_start=a.ae_steps // 2),
            trainer=replace(AutoencoderRunConfig().trainer, steps=a.ae_steps, device=a.device,
                            checkpoint_every=a.ae_steps, sample_every=a.ae_steps))
        res = train_autoencoder(cfg, out / name, progress=False)
        metrics = evaluate_autoencoder(load_autoencoder(out / name, device=res_device(a.device)), a.eval_n)
        results["autoencoders"].append({"name": name, "kind": kind, "gan": gan, "train_seconds": res.seconds,
                                        "img_per_s": res.img_per_s, **metrics})
        print(f"{name}: {res.seconds:.1f} s, PSNR {metrics['psnr']:.2f}, SSIM {metrics['ssim']:.4f}, "
              f"rFID {metrics['rfid']}", flush=True)
        save()

    autoencoder(*order[0])

    # 2. latent vs pixel diffusion at the same training wall-clock
    ae_dir = out / f"ae-{kinds[0]}-gan"
    device = res_device(a.device)
    for space in ("pixel", "latent"):
        run = out / f"diffusion-{space}"
        trainer = replace(TrainerConfig(), steps=PROBE_STEPS, batch_size=a.batch_size, device=a.device,
                          checkpoint_every=10**6, sample_every=0, log_every=25)
        cfg = replace(RunConfig(), data=DataConfig(a.dataset), model=a.model, trainer=trainer,
                      preview=PreviewConfig(sampler="heun", steps=a.sample_steps, n=64))
        if space == "latent":
            cfg = replace(cfg, codec={"name": "autoencoder", "source": str(ae_dir)})
        t0 = time.perf_counter()
        probe = train(cfg, run, progress=False)
        setup = time.perf_counter() - t0 - probe.seconds           # data, encoding (latent), network, first grid
        steps = max(PROBE_STEPS + 1, round(PROBE_STEPS * a.budget / probe.seconds))
        rest = train(replace(RunConfig.load(run), trainer=replace(trainer, steps=steps)), run, resume=True,
                     progress=False)
        seconds = probe.seconds + rest.seconds
        model = load_model(run, device=str(device))
        timings = []
        for _ in range(2):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            sample_run(model.network, model.process, model.config, "heun", a.sample_steps, 64, 0, device=device,
                       codec=model.codec)
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - t0)
        extractor = run_extractor(model.config, "builtin", device=device)
        ev = evaluate(model.network, model.process, model.config, sampler="heun", steps=a.sample_steps, n=a.fid_n,
                      seed=0, extractor=extractor, device=device, codec=model.codec)
        results["diffusion"].append({"space": space, "steps": steps, "train_seconds": seconds,
                                     "img_per_s": steps * a.batch_size / seconds, "setup_seconds": setup,
                                     "sample64_seconds": timings[-1], "fid": ev.report.fid,
                                     "precision": ev.report.precision, "recall": ev.report.recall,
                                     "shape": list(model.spec.shape)})
        print(f"{space}: {steps} steps in {seconds:.1f} s, sampling 64 in {timings[-1]:.2f} s, FID "
              f"{ev.report.fid:.3f}", flush=True)
        save()
    for kind, gan in order[1:]:
        autoencoder(kind, gan)
    print(tables(results))


def res_device(name: str) -> torch.device:
    from difflab.training import resolve_device
    return resolve_device(name)


def tables(results: dict) -> str:
    a = results["args"]
    lines = [f"Autoencoders on {a['dataset']}, downsample {a['downsample']}, {a['latent_channels']} latent channels, "
             f"{a['ae_steps']} steps; held-out images ({a['eval_n']} at most)", "",
             "| autoencoder | GAN | PSNR (dB) | SSIM | rFID | codebook usage | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in results["autoencoders"]:
        usage = f"{r['codebook_usage']:.2f} (perplexity {r['perplexity']:.0f})" if "codebook_usage" in r else "-"
        rfid = f"{r['rfid']:.3f}" if r["rfid"] is not None else "-"
        lines.append(f"| {r['kind'].upper()} | {'yes' if r['gan'] else 'no'} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{rfid} | {usage} | {r['train_seconds']:.0f} |")
    lines += ["", f"Diffusion, model {a['model']}, batch {a['batch_size']}, {a['budget']:g} s of training each; "
              f"heun {a['sample_steps']} steps; FID of {a['fid_n']} samples (built-in features)", "",
              "| space | shape | steps | train img/s | setup s | sample 64 s | FID | precision | recall |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results["diffusion"]:
        lines.append(f"| {r['space']} | {'x'.join(map(str, r['shape']))} | {r['steps']} | {r['img_per_s']:.0f} | "
                     f"{r['setup_seconds']:.1f} | {r['sample64_seconds']:.2f} | {r['fid']:.3f} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
