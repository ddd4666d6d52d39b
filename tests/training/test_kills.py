"""A run killed at any moment (SIGKILL) finishes with a plain `difflab train --resume`, bit-identical to a run
that was never interrupted: kills at random times, and at the moments that used to leave a stuck run (while the
first checkpoint is written, between its folder and `latest`, while old checkpoints are pruned, during the
end-of-run sampling), and a checkpoint cut off by a file-size limit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers import run_state

from difflab.training import read_log
from difflab.training.checkpoint import resolve_checkpoint

STEPS = 6
ARGS = ["--steps", str(STEPS), "--batch-size", "8", "--checkpoint-every", "2", "--log-every", "1",
        "--sample-every", "0", "--preview-steps", "2", "--keep-checkpoints", "1", "--quiet"]
ROOT = Path(__file__).resolve().parents[2]


def difflab(*args: str, prelude: str = "", limit_file_size: int | None = None, wait: bool = True):
    """Run the CLI in a fresh interpreter, after ``prelude`` (Python that patches a moment to die at)."""
    script = textwrap.dedent(prelude) + "\nimport sys\nfrom difflab.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"

    def limits() -> None:
        # the CLI must see Ctrl-C even where pytest itself was started with SIGINT ignored (a job started with &
        # from a non-interactive shell inherits that, and Python then installs no KeyboardInterrupt handler)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if limit_file_size is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=limits)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("reference") / "run"
    rc, _, err = difflab("train", "--out", str(run), *ARGS)
    assert rc == 0, err
    return run_state(run)


def assert_finished_like_the_reference(run: Path, reference: dict[str, torch.Tensor]) -> None:
    rc, out, err = difflab("train", "--resume", str(run), "--quiet")
    assert rc == 0, err
    final = run_state(run)
    assert resolve_checkpoint(run).name == f"step_{STEPS:07d}"
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final), [k for k in final if not torch.equal(final[k], reference[k])]
    assert (run / "samples.png").is_file() and (run / "loss.png").is_file()
    steps = [r["step"] for r in read_log(run / "log.jsonl")]
    assert steps == list(range(1, STEPS + 1))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", f"step_{STEPS:07d}"]  # nothing left over


# Python run before the CLI in the killed process: each kills it at one moment.
MOMENTS = {
    "while the first checkpoint's files are written": """
        import os, signal
        import difflab.io as io
        real = io.write_folder
        def write_folder(folder, files):
            if folder.name == "step_0000002":
                tmp = folder.parent / ".tmp_step_0000002_killed"
                tmp.mkdir(parents=True)
                (tmp / "model.safetensors").write_bytes(next(iter(files.values()))[:100])
                os.kill(os.getpid(), signal.SIGKILL)
            return real(folder, files)
        import difflab.training.checkpoint as c
        c.write_folder = write_folder
    """,
    "after the first step folder is in place, before latest": """
        import os, signal
        import difflab.training.checkpoint as c
        real = c.atomic_write_text
        def atomic_write_text(path, text):
            if path.name == "latest":
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, text)
        c.atomic_write_text = atomic_write_text
    """,
    "while an old checkpoint is being pruned": """
        import os, signal, shutil
        import difflab.training.checkpoint as c
        def rmtree(path, ignore_errors=False):
            files = sorted(os.scandir(path), key=lambda e: e.name)
            os.remove(files[0].path)             # half pruned
            os.kill(os.getpid(), signal.SIGKILL)
        class Shutil:
            pass
        fake = Shutil()
        fake.rmtree = rmtree
        c.shutil = fake
    """,
    "during the end-of-run sampling": """
        import os, signal
        import difflab.pipelines.train as t
        def save_samples(x, path, spec, nrow=None):
            os.kill(os.getpid(), signal.SIGKILL)
        t.save_samples = save_samples
    """,
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_kill_at_a_fragile_moment_resumes_to_the_same_run(moment, tmp_path, reference):
    run = tmp_path / "run"
    rc, _, err = difflab("train", "--out", str(run), *ARGS, prelude=MOMENTS[moment])
    assert rc == -signal.SIGKILL, err
    assert_finished_like_the_reference(run, reference)


def test_kills_at_random_moments_resume_to_the_same_run(tmp_path, reference):
    run = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for attempt in range(6):
        args = ("--resume", str(run), "--quiet") if (run / "config.json").exists() else ("--out", str(run), *ARGS)
        proc = difflab("train", *args, wait=False)
        time.sleep(rng.uniform(2.0, 5.0))        # start-up takes ~2-3 s: kills land before, in and after training
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
    print(f"{kills} SIGKILLs, finished on attempt {attempt + 1}")
    assert kills >= 1
    if not (run / "config.json").exists():   # on a loaded machine every kill can land before set-up: start it
        rc, _, err = difflab("train", "--out", str(run), *ARGS)   # again, as the interrupted run's message says
        assert rc == 0, err
    assert_finished_like_the_reference(run, reference)


def test_a_file_size_limit_during_a_checkpoint_is_one_line_and_the_run_resumes(tmp_path, reference):
    run = tmp_path / "run"
    rc, _, err = difflab("train", "--out", str(run), *ARGS, limit_file_size=1_000_000)   # weights are ~2.8 MB
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "File too large" in lines[0] and "--resume" in lines[0], err
    assert_finished_like_the_reference(run, reference)


def test_ctrl_c_says_what_is_kept_on_its_own_line(tmp_path):
    cases = [("--checkpoint-every", "1000"), "interrupted before the first checkpoint"], [("--checkpoint-every", "1"),
                                                                                          "keeps its checkpoint step_"]
    for k, (args, expected) in enumerate(cases):
        run = tmp_path / f"run{k}"
        proc = difflab("train", "--out", str(run), "--steps", "2000", "--batch-size", "8", "--sample-every", "0", *args,
                       wait=False)
        deadline = time.time() + 60
        while time.time() < deadline and not (run / "log.jsonl").exists():
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        last = err.rstrip().splitlines()[-1]
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert last.startswith("interrupted") and expected in last and str(run) in last and "DIR" not in last, last
    proc = difflab("sample", "--checkpoint", str(tmp_path / "run1"), "--n", "4000", "--steps", "200",
                   "--out", str(tmp_path / "s.png"), wait=False)
    time.sleep(8)                                  # start-up, then a while into the sampling
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.rstrip().splitlines()[-1] == "interrupted" and "sampling" in err, err
    assert not (tmp_path / "s.png").exists()
