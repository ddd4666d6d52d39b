"""Argument parsing that fails in one line, and option helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``difflab train: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(minimum: int):
    """An argparse type: a whole number >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def float_or_inf(text: str) -> float:
    """A number, where inf (no bound) is allowed; NaN is not."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or inf, got {text!r}") from None
    if value != value:
        raise argparse.ArgumentTypeError(f"expected a number or inf, got {text!r}")
    return value


def on_off(text: str) -> bool:
    """``on`` or ``off`` as a bool (a yes/no option whose default may be either)."""
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def scales(text: str) -> list[float]:
    """An argparse type: one finite number or several separated by commas ("0,1,2,4")."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}")
    return [finite_float(part) for part in parts]


def positive_ints(text: str) -> list[int]:
    """An argparse type: one whole number >= 1 or several separated by commas ("10,50,200")."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}")
    return [positive_int(part) for part in parts]


# The argument types the commands use, by name (the parser records in cli/parser_cache.py name them).
TYPES = {"int": int, "float": float, "str": str, "positive_int": positive_int, "nonneg_int": nonneg_int,
         "finite_float": finite_float, "scales": scales,
         "positive_ints": positive_ints, "on_off": on_off, "float_or_inf": float_or_inf}


def option(parser: argparse.ArgumentParser, flag: str, help: str, default: Any = None, **kw: Any) -> None:
    """An option with a default, which its help shows (argparse holds the default: code reads a.x)."""
    shown = f" (default: {default})" if default is not None else ""
    parser.add_argument(flag, default=default, help=help + shown, **kw)


def optional(parser: argparse.ArgumentParser, flag: str, help: str, shown: Any = None, **kw: Any) -> None:
    """An option that stays None unless given, so 'not given' is visible (a resumed run keeps its own value,
    a config dataclass fills the rest); ``shown`` is the default that then applies, for the help text."""
    note = f" (default: {shown})" if shown is not None else ""
    parser.add_argument(flag, default=None, help=help + note, **kw)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
