"""Entry point: `difflab <command> ...`. User errors are one line on stderr and exit status 2."""

from __future__ import annotations

import sys

from difflab import __version__
from difflab.cli import bench, evaluate, plots, sample, train
from difflab.cli.common import Parser
from difflab.errors import DifflabError


def build_parser() -> Parser:
    parser = Parser(prog="difflab", description="Diffusion and flow-matching models: train, sample, measure.")
    parser.add_argument("--version", action="version", version=f"difflab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in (train, sample, evaluate, plots, bench):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DifflabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; a run continues from its last checkpoint with `difflab train --resume DIR`", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
