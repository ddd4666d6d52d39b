"""Entry point: `difflab <command> ...`. User errors are one line on stderr and exit status 2."""

from __future__ import annotations

import os
import sys
import warnings

from importlib import import_module

from difflab import __version__
from difflab.cli import parser_cache
from difflab.cli.commands import COMMANDS
from difflab.cli.common import Parser
from difflab.errors import DifflabError, Interrupted


def chosen_command(argv: list[str]) -> str | None:
    return argv[0] if argv and argv[0] in COMMANDS else None


def build_parser(argv: list[str] | None = None, recorded: bool = False) -> Parser | None:
    """The parser of every command, or, given the command line, of only the command it names: the others are
    listed by name, so nothing they need (PyTorch above all) is imported to parse it. ``recorded``: the named
    command's options rebuilt from its record (cli/parser_cache.py), None if there is none; else its real
    parser, which is recorded."""
    chosen = chosen_command(argv) if argv is not None else None
    parser = Parser(prog="difflab", description="Diffusion and flow-matching models: train, sample, measure.")
    parser.add_argument("--version", action="version", version=f"difflab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        if recorded and name == chosen:
            if not parser_cache.rebuild(name, p):
                return None
        elif argv is None or name == chosen:
            import_module(command.module).configure(name, p)
            if name == chosen:
                parser_cache.save(name, p)
    return parser


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, without the source line Python shows by default."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def rank_prefix() -> str:
    """"rank N: " in process N > 0 of a torchrun launch (each process reports its own errors), else ""."""
    rank = os.environ.get("RANK", "0")
    return f"rank {rank}: " if rank not in ("", "0") else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if chosen_command(argv) and not {"-h", "--help"} & set(argv):
        quick = build_parser(argv, recorded=True)
        if quick is not None:
            quick.parse_args(argv)      # a mistake ends here, before PyTorch loads; a valid line goes on
    args = build_parser(argv).parse_args(argv)
    warnings.showwarning = one_line_warning
    try:
        args.func(args)
    except DifflabError as e:
        print(f"{rank_prefix()}error: {e}", file=sys.stderr)
        return 2
    except OSError as e:               # an output (or input) the command did not expect to fail on
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; check the path, its permissions and the free space", file=sys.stderr)
        return 2
    except Interrupted as e:
        if not rank_prefix():           # torchrun interrupts every process of a launch: rank 0 says what is kept
            print(e, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
