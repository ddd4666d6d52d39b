"""Many wrong inputs, as a new user makes them: each gets exit status 2, one line naming the option or file,
no traceback, and leaves every run folder exactly as it was (and creates no output)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import cli
from safetensors.torch import load_file, save_file

from difflab.cli.main import main
from difflab.training.checkpoint import resolve_checkpoint

READ_ONLY = "/sys/difflab-test"          # sysfs: not even root may create files or folders there


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def places(trained_run, tmp_path_factory) -> dict[str, str]:
    """Paths the cases refer to: the shared run, damaged copies of it, a points run, bad files."""
    tmp = tmp_path_factory.mktemp("bad_inputs")

    def copy(name: str) -> Path:
        target = tmp / name
        shutil.copytree(trained_run, target)
        return target

    def edit_config(name: str, change) -> Path:
        run = copy(name)
        cfg = json.loads((run / "config.json").read_text())
        change(cfg)
        (run / "config.json").write_text(json.dumps(cfg))
        return run

    badtype = edit_config("badtype", lambda c: c["trainer"].update(steps="ten"))
    noprocess = edit_config("noprocess", lambda c: c.pop("process"))
    notarget = edit_config("notarget", lambda c: c["objective"].pop("target"))
    flipped = copy("flipped")
    ema = resolve_checkpoint(flipped) / "ema.safetensors"
    data = bytearray(ema.read_bytes())
    data[-7] ^= 0x10
    ema.write_bytes(bytes(data))
    nan = copy("nan")
    step = resolve_checkpoint(nan)
    weights = load_file(str(step / "ema.safetensors"))
    weights[next(iter(weights))].fill_(float("nan"))
    save_file(weights, str(step / "ema.safetensors"))
    meta = json.loads((step / "trainer.json").read_text())
    meta["sha256"]["ema.safetensors"] = hashlib.sha256((step / "ema.safetensors").read_bytes()).hexdigest()
    (step / "trainer.json").write_text(json.dumps(meta))
    nockpt = copy("nockpt")
    shutil.rmtree(nockpt / "checkpoints")
    (tmp / "empty").mkdir()
    (tmp / "a_file").write_text("not a folder")
    (tmp / "text.npz").write_text("this is text, not an archive")
    (tmp / "text.pth").write_text("<html>not weights</html>")
    np.savez(tmp / "nolabels.npz", images=np.zeros((4, 8, 8), np.uint8))
    np.savez(tmp / "bigl.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 2, 2_000_000_000]))
    (tmp / "dir.png").mkdir()
    points = tmp / "points"
    assert main(["train", "--dataset", "moons", "--steps", "3", "--batch-size", "16", "--sample-every", "0", "--quiet",
                 "--out", str(points)]) == 0
    return {"run": str(trained_run), "tmp": str(tmp), "file": str(tmp / "a_file"), "points": str(points),
            "badtype": str(badtype), "noprocess": str(noprocess), "notarget": str(notarget), "flipped": str(flipped),
            "nan": str(nan), "nockpt": str(nockpt), "empty": str(tmp / "empty"), "textnpz": str(tmp / "text.npz"),
            "textpth": str(tmp / "text.pth"), "bigl": str(tmp / "bigl.npz"), "nolabels": str(tmp / "nolabels.npz"),
            "dirpng": str(tmp / "dir.png"), "ro": READ_ONLY}


Q = ["--steps", "3", "--batch-size", "8", "--quiet"]       # train options that keep a case quick if it ran

# (arguments, words the one line must hold, an output that must not be created)
CASES = [
    # train: values out of range, wrong types, options that do not fit
    (["train", "--steps", "-3"], ["--steps", ">= 1"], None),
    (["train", "--steps", "ten"], ["--steps", "whole number"], None),
    (["train", "--lr", "nan"], ["--lr", "finite"], None),
    (["train", "--lr", "0", "--out", "{tmp}/o1"], ["--lr", "> 0", "0.0"], "{tmp}/o1"),
    (["train", "--ema-decay", "1.5", "--out", "{tmp}/o2"], ["--ema-decay", "[0, 1)"], "{tmp}/o2"),
    (["train", "--grad-clip", "-1", "--out", "{tmp}/o3"], ["--grad-clip", ">= 0"], "{tmp}/o3"),
    (["train", "--batch-size", "100000", "--out", "{tmp}/o4"], ["--batch-size", "1617"], "{tmp}/o4"),
    (["train", "--image-size", "100000", "--out", "{tmp}/o5"], ["GB", "--image-size"], "{tmp}/o5"),
    (["train", "--image-size", "3", "--out", "{tmp}/o6"], ["--image-size", ">= 4"], "{tmp}/o6"),
    (["train", "--channels", "2"], ["--channels"], None),
    (["train", "--model", "huge"], ["--model", "huge"], None),
    (["train", "--dataset", "moons", "--model", "tiny", "--out", "{tmp}/o7"], ["U-Net", "--model auto"], "{tmp}/o7"),
    (["train", "--dataset", "/no/such/folder"], ["/no/such/folder"], None),
    (["train", "--dataset", "{textnpz}", "--out", "{tmp}/o8"], ["text.npz", "not an .npz archive"], "{tmp}/o8"),
    (["train", "--dataset", "{bigl}", "--class-cond", "--out", "{tmp}/o9"], ["bigl.npz", "below"], "{tmp}/o9"),
    (["train", "--dataset", "{nolabels}", "--class-cond", "--out", "{tmp}/o10"], ["--class-cond", "nolabels.npz"],
     "{tmp}/o10"),
    (["train", "--process", "vp", "--schedule", "cosine"], ["--schedule", "--process vp"], None),
    (["train", "--process", "vp", "--t-min", "-0.5", "--out", "{tmp}/o11"], ["--t-min", "-0.5"], "{tmp}/o11"),
    (["train", "--process", "ve", "--t-min", "2", "--out", "{tmp}/o12"], ["--t-min", "2.0"], "{tmp}/o12"),
    (["train", "--process", "flow", "--t-max", "2", "--out", "{tmp}/o13"], ["--t-max", "2.0"], "{tmp}/o13"),
    (["train", "--T", "1", "--out", "{tmp}/o14"], ["--T", "2"], "{tmp}/o14"),
    (["train", "--beta-end", "2", "--out", "{tmp}/o15"], ["--beta-end", "2.0"], "{tmp}/o15"),
    (["train", "--process", "vp", "--beta-min", "30", "--out", "{tmp}/o16"], ["beta_min < beta_max"], "{tmp}/o16"),
    (["train", "--process", "flow", "--target", "eps", "--t-max", "1", "--out", "{tmp}/o17"], ["--t-max"], "{tmp}/o17"),
    (["train", "--coupling", "ot", "--out", "{tmp}/o18"], ["--coupling ot", "--process flow"], "{tmp}/o18"),
    (["train", "--process", "vp", "--time-sampling", "discrete", "--out", "{tmp}/o19"], ["--time-sampling"], "{tmp}/o19"),
    (["train", "--precision", "bf16", "--device", "cpu", "--out", "{tmp}/o20"], ["--precision bf16"], "{tmp}/o20"),
    (["train", "--device", "cuda", "--out", "{tmp}/o21"], ["--device cuda"], "{tmp}/o21"),
    (["train", "--device", "tpu", "--out", "{tmp}/o22"], ["--device", "tpu"], "{tmp}/o22"),
    (["train", "--eval-every", "2", "--eval-features", "inception", "--inception-weights", "{textpth}",
      "--out", "{tmp}/o23", *Q], ["text.pth", "torch.save"], "{tmp}/o23"),
    # train: where the run goes
    (["train", "--out", "{file}", *Q], ["--out", "a_file", "is a file"], None),
    (["train", "--out", "{file}/run", *Q], ["--out", "a_file", "is a file"], "{file}/run"),
    (["train", "--out", "{ro}/run", *Q], ["--out", READ_ONLY, "not writable"], None),
    (["train", "--resume", "{ro}"], ["difflab-test", "not a run folder"], None),
    (["train", "--out", "{run}", *Q], ["already holds a run", "--resume"], None),
    # train --resume
    (["train", "--resume", "{run}", "--out", "{tmp}/o24"], ["--out", "--resume"], "{tmp}/o24"),
    (["train", "--resume", "{run}", "--steps", "10"], ["--steps 10", "step 40"], None),
    (["train", "--resume", "{run}", "--lr", "1"], ["--lr", "cannot change"], None),
    (["train", "--resume", "{run}", "--device", "cuda"], ["--device cuda"], None),
    (["train", "--resume", "/no/such/run"], ["/no/such/run"], None),
    (["train", "--resume", "{empty}"], ["empty", "not a run folder"], None),
    (["train", "--resume", "{badtype}"], ["config.json", "trainer.steps", "'ten'"], None),
    (["train", "--resume", "{noprocess}"], ["config.json", "process"], None),
    (["train", "--resume", "{notarget}"], ["config.json", "target"], None),
    (["train", "--resume", "{flipped}", "--steps", "50"], ["ema.safetensors", "damaged"], None),
    # sample
    (["sample", "--checkpoint", "/no/such/run"], ["/no/such/run"], None),
    (["sample", "--checkpoint", "{empty}"], ["empty", "no complete checkpoint"], None),
    (["sample", "--checkpoint", "{nockpt}"], ["nockpt", "no complete checkpoint"], None),
    (["sample", "--checkpoint", "{run}", "--sampler", "magic"], ["--sampler", "magic"], None),
    (["sample", "--checkpoint", "{run}", "--steps", "0"], ["--steps"], None),
    (["sample", "--checkpoint", "{run}", "--out", "{tmp}/s.txt"], ["--out", "s.txt", ".png"], "{tmp}/s.txt"),
    (["sample", "--checkpoint", "{run}", "--out", "{tmp}/noext"], ["--out", "noext", ".png"], "{tmp}/noext"),
    (["sample", "--checkpoint", "{run}", "--out", "{dirpng}"], ["--out", "dir.png", "is a folder"], None),
    (["sample", "--checkpoint", "{run}", "--out", "{file}/s.png"], ["--out", "a_file"], "{file}/s.png"),
    (["sample", "--checkpoint", "{run}", "--out", "{ro}/s.png"], ["--out", READ_ONLY], None),
    (["sample", "--checkpoint", "{run}", "--n", "1000000000", "--out", "{tmp}/big.png"], ["--n", "GB"], "{tmp}/big.png"),
    (["sample", "--checkpoint", "{run}", "--sampler", "heun", "--eta", "0.5"], ["--eta"], None),
    (["sample", "--checkpoint", "{run}", "--t-min", "2", "--out", "{tmp}/t.png"], ["--t-min"], "{tmp}/t.png"),
    (["sample", "--checkpoint", "{run}", "--label", "3", "--out", "{tmp}/l.png"], ["--class", "class-conditional"],
     "{tmp}/l.png"),
    (["sample", "--checkpoint", "{flipped}", "--out", "{tmp}/f.png"], ["ema.safetensors", "damaged"], "{tmp}/f.png"),
    (["sample", "--checkpoint", "{nan}", "--out", "{tmp}/n.png"], ["ema.safetensors", "NaN", "--raw"], "{tmp}/n.png"),
    (["sample", "--checkpoint", "{points}", "--trajectory", "--out", "{tmp}/p.png"], ["--trajectory", "points"],
     "{tmp}/p.png"),
    (["sample", "--checkpoint", "{badtype}", "--out", "{tmp}/b.png"], ["trainer.steps"], "{tmp}/b.png"),
    (["sample", "--checkpoint", "{noprocess}", "--out", "{tmp}/np.png"], ["process"], "{tmp}/np.png"),
    # eval
    (["eval", "--checkpoint", "{run}", "--n", "10", "--json", "{tmp}/e.txt"], ["--json", "e.txt", ".json"], "{tmp}/e.txt"),
    (["eval", "--checkpoint", "{run}", "--n", "10", "--json", "{file}/e.json"], ["--json", "a_file"], "{file}/e.json"),
    (["eval", "--checkpoint", "{run}", "--n", "10", "--bpd", "likelihood"], ["--bpd"], None),
    (["eval", "--checkpoint", "{run}", "--n", "10", "--features", "inception", "--inception-weights", "{textpth}",
      "--json", "{tmp}/e2.json"], ["text.pth", "torch.save"], "{tmp}/e2.json"),
    (["eval", "--checkpoint", "{points}", "--n", "10"], ["image metrics", "points"], None),
    (["eval", "--checkpoint", "{run}", "--n", "10", "--fid-resamples", "1", "--json", "{tmp}/e3.json"],
     ["--fid-resamples", ">= 2"], "{tmp}/e3.json"),
    # pictures and the bench
    (["schedule", "--plot", "{tmp}/s.txt"], ["--plot", "s.txt"], "{tmp}/s.txt"),
    (["schedule", "--plot", "{dirpng}"], ["--plot", "is a folder"], None),
    (["noise", "--out", "{file}/n.png"], ["--out", "a_file"], "{file}/n.png"),
    (["noise", "--dataset", "moons", "--out", "{tmp}/n.png"], ["moons", "2-D point set"], "{tmp}/n.png"),
    (["flow2d", "--out", "{tmp}/f.txt", "--runs", "{tmp}/fr"], ["--out", "f.txt"], "{tmp}/fr"),
    (["flow2d", "--runs", "{file}/x", "--out", "{tmp}/f.png"], ["--runs", "a_file"], "{tmp}/f.png"),
    (["flow2d", "--dataset", "digits"], ["--dataset"], None),
    (["bench-samplers", "--dims", "x"], ["--dims", "'x'"], None),
    (["bench-samplers", "--process", "foo"], ["--process", "foo"], None),
    (["bench-samplers", "--nfe", "0"], ["--nfe"], None),
    (["frobnicate"], ["frobnicate"], None),
]


@pytest.mark.parametrize("args,needles,not_created", CASES, ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else None)
def test_a_wrong_input_is_one_line_and_changes_nothing(capsys, places, args, needles, not_created):
    fill = lambda text: text.format(**places)
    before = {name: snapshot(Path(places[name])) for name in ("run", "points", "badtype", "flipped", "nan", "nockpt")}
    rc, out, err = cli(capsys, *map(fill, args))
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert fill(needle) in lines[0], lines[0]
    for name, files in before.items():
        assert snapshot(Path(places[name])) == files, f"{name} changed"
    if not_created is not None:
        assert not Path(fill(not_created)).exists()


def test_the_count_of_wrong_inputs():
    assert len(CASES) >= 70


def test_resuming_a_run_in_a_read_only_place_is_one_line_and_changes_nothing(capsys, places, monkeypatch):
    import errno
    import tempfile

    run = Path(places["run"])
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == run:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    before = snapshot(run)
    rc, _, err = cli(capsys, "train", "--resume", str(run), "--steps", "50")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Read-only file system" in err and str(run) in err, err
    assert snapshot(run) == before


def test_a_file_size_limit_while_writing_samples_is_one_line(places, tmp_path):
    import subprocess
    import sys

    def small_files() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    out = tmp_path / "s.png"
    res = subprocess.run([sys.executable, "-m", "difflab.cli.main", "sample", "--checkpoint", places["run"], "--n",
                          "16", "--steps", "2", "--quiet", "--out", str(out)], capture_output=True, text=True,
                         preexec_fn=small_files, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert str(out) in lines[0] and "File too large" in lines[0]


def test_warnings_are_one_line_without_source(capsys, monkeypatch, tmp_path):
    import warnings

    import difflab.viz

    real = difflab.viz.plot_schedules

    def warn_then_plot(*args, **kwargs):
        warnings.warn("something to know", UserWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(difflab.viz, "plot_schedules", warn_then_plot)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        rc, out, err = cli(capsys, "schedule", "--plot", str(tmp_path / "s.png"))
    assert rc == 0 and err.strip() == "warning: something to know", err


def test_difflab_help_and_a_wrong_command_answer_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom difflab.cli.main import main\nfor argv in (['--help'], ['frobnicate'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\nprint('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "False", res.stdout + res.stderr
