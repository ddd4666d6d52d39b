"""What classifier-free and classifier guidance cost: sampling time over unguided sampling of the same run.

    python bench/bench_guidance.py --checkpoint runs/cond [--classifier runs/clf] [--n 256] [--steps 50]
                                   [--sampler ddim] [--repeats 3]

Draws the same n samples (same seed, same labels: a row per class) several ways and prints each one's best
wall time over --repeats and its ratio to the unguided run (w = 1, the conditional model alone):

    classifier-free w = 2, one batched call    both branches stacked into one network call of 2B rows
    classifier-free w = 2, two calls           the conditional and the null branch called one after the other
    classifier guidance s = 1                  (with --classifier) the model plus a classifier's forward and backward

A ratio under 2 for the batched call is what stacking the branches buys over running the model twice.
"""

from __future__ import annotations

import argparse
import time

import torch

from difflab.condition import Condition
from difflab.denoisers import ClassifierFreeGuidance, NetworkClassifier
from difflab.denoisers.base import Prediction
from difflab.pipelines.run import load_model, requested_condition
from difflab.pipelines.sample import Guidance, generate, make_denoiser, sample_run


class TwoCalls(ClassifierFreeGuidance):
    """Classifier-free guidance with the branches run one after the other: the reference for the batched call."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> Prediction:
        c, u = self.inner(x, t, cond), self.inner(x, t, cond.null_like())
        w = self.scale
        return Prediction(w * c.x0 + (1 - w) * u.x0, w * c.eps + (1 - w) * u.eps, c.coeffs)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--classifier")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    m = load_model(a.checkpoint, device="cpu")
    request = requested_condition(m.config, a.n)
    n = len(request.cond)

    def run(guidance: Guidance | None) -> None:
        sample_run(m.network, m.process, m.config, a.sampler, a.steps, n, 0, cond=request.cond, guidance=guidance,
                   clip=False)

    def run_two_calls() -> None:
        denoiser = TwoCalls(make_denoiser(m.network, m.process, m.config, clip=False), 2.0)
        generate(denoiser, m.spec.shape, a.sampler, a.steps, n, 0, cond=request.cond)

    rows = [("unguided (w = 1)", lambda: run(None)),
            ("classifier-free w = 2, one batched call", lambda: run(Guidance(2.0))),
            ("classifier-free w = 2, two calls", run_two_calls)]
    if a.classifier:
        clf = load_model(a.classifier, device="cpu", task="classifier")
        classifier = NetworkClassifier(clf.network, clf.process)
        rows.append(("classifier guidance s = 1", lambda: run(Guidance(1.0, classifier=classifier))))
    run(None)                                                     # warm-up
    base = None
    print(f"{n} samples, {a.sampler} {a.steps} steps, best of {a.repeats}, {torch.get_num_threads()} threads")
    for name, fn in rows:
        seconds = best_time(fn, a.repeats)
        base = base or seconds
        print(f"  {name:<42} {seconds:7.2f} s   x{seconds / base:.2f}")


if __name__ == "__main__":
    main()
