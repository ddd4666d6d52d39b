"""Does a text run draw the same digit for two phrasings of one prompt?

    python bench/bench_text_prompts.py --checkpoint runs/text [--n 100] [--guidance 3] [--steps 50]

For each digit k, samples n images for each of several phrasings (the same seeds for every phrasing) and
classifies them with the built-in digit classifier. Prints, per phrasing, how often the sample is the digit
asked for, and, for each pair of phrasings, how often the two samples drawn from the same noise are
classified as the same digit (agreement).
"""

from __future__ import annotations

import argparse
from itertools import combinations

import torch

from difflab.metrics.classifier import builtin_extractor
from difflab.pipelines.run import load_model, requested_condition
from difflab.pipelines.sample import Guidance, sample_run
from difflab.text import DIGIT_WORDS

PHRASINGS = ("a handwritten {word}", "the digit {digit}", "{digit}", "a sloppy {digit}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim")
    a = p.parse_args()

    m = load_model(a.checkpoint, device="cpu")
    extractor = builtin_extractor(m.config.data.dataset)
    predicted = {}                                   # (phrasing, digit) -> (n,) predicted classes
    for phrasing in PHRASINGS:
        for digit, word in enumerate(DIGIT_WORDS):
            prompt = phrasing.format(word=word, digit=digit)
            cond = requested_condition(m.config, a.n, prompt=prompt).cond
            x = sample_run(m.network, m.process, m.config, a.sampler, a.steps, a.n, seed=digit, cond=cond,
                           guidance=Guidance(a.guidance)).x
            predicted[phrasing, digit] = extractor.probabilities(x).argmax(1)
    print(f"{m.checkpoint}: {a.n} samples per prompt, {a.sampler} {a.steps} steps, guidance {a.guidance:g}")
    for phrasing in PHRASINGS:
        acc = torch.stack([(predicted[phrasing, d] == d).double().mean() for d in range(len(DIGIT_WORDS))])
        print(f"  accuracy  {phrasing!r:<26} {float(acc.mean()):.3f}  (per digit: "
              + " ".join(f"{float(v):.2f}" for v in acc) + ")")
    for first, second in combinations(PHRASINGS, 2):
        agree = torch.stack([(predicted[first, d] == predicted[second, d]).double().mean()
                             for d in range(len(DIGIT_WORDS))])
        print(f"  agreement {first!r} vs {second!r}: {float(agree.mean()):.3f}")


if __name__ == "__main__":
    main()
