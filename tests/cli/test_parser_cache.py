"""The recorded parsers (cli/parser_cache.py): the same verdict and words as the real parsers, and a mistyped
option answered without PyTorch once a command has run."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest

from difflab.cli import parser_cache
from difflab.cli.commands import COMMANDS
from difflab.cli.main import build_parser

LINES = [
    ["train", "--steps", "-3"], ["train", "--steps", "ten"], ["train", "--lr", "nan"], ["train", "--model", "huge"],
    ["train", "--channels", "2"], ["train", "--process", "magic"], ["train", "--schedule", "sqrt"],
    ["train", "--class-cond", "--steps", "5", "--beta-min", "0.2"], ["train", "--frob"], ["train", "--steps"],
    ["sample"], ["sample", "--checkpoint", "r", "--sampler", "magic"], ["sample", "--checkpoint", "r", "--eta", "x"],
    ["sample", "--checkpoint", "r", "--no-clip-x0", "--variance", "beta"], ["sample", "--checkpoint", "r", "--n", "0"],
    ["eval", "--checkpoint", "r", "--bpd"], ["eval", "--checkpoint", "r", "--bpd", "ode", "--features", "vgg"],
    ["eval", "--checkpoint", "r", "--split", "valid"], ["schedule", "--T", "0"], ["noise", "--schedule", "x"],
    ["flow2d", "--dataset", "digits"], ["flow2d", "--paths", "5"], ["bench-samplers", "--n", "1"],
    ["bench-samplers", "--dims", "2,64", "--seed", "x"],
]


def verdict(parser, argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_the_recorded_parser_says_what_the_real_one_says(argv):
    real = build_parser(argv)                     # builds and records the command's parser
    recorded = build_parser(argv, recorded=True)
    assert recorded is not None
    assert verdict(recorded, argv) == verdict(real, argv)


def test_every_command_can_be_recorded():
    for name in COMMANDS:
        build_parser([name])
        assert parser_cache.record_path(name).is_file(), name


def test_a_record_of_other_sources_is_not_used(monkeypatch):
    build_parser(["train"])
    monkeypatch.setattr(parser_cache, "source_key", lambda: "another-version")
    assert build_parser(["train"], recorded=True) is None


def test_a_mistyped_option_answers_without_importing_torch(tmp_path):
    import os

    env = {**os.environ, "DIFFLAB_CACHE": str(tmp_path)}              # no record yet
    code = ("import sys\nfrom difflab.cli.main import main\ntry:\n    main(['train', '--steps', '-3'])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert first.stdout.split() == ["2", "True"], first.stderr       # the first time builds the real parser
    assert again.stdout.split() == ["2", "False"], again.stderr      # then the record answers
    assert "--steps" in again.stderr and len(again.stderr.strip().splitlines()) == 1
