"""Command parsers as JSON, so that a mistyped option answers before PyTorch loads.

Building a command's parser imports the registries it offers (processes, samplers, presets), and those import
PyTorch: about 3 s before the first word. The parser itself is plain data (flags, types, choices), so when a
command's real parser is built it is also recorded in $DIFFLAB_CACHE/cli-parsers/KEY/COMMAND.json, KEY being
a hash of difflab's version and of every source file's size and time. The next command line is first parsed by
the parser rebuilt from that record: if it is wrong, its error (the real parser's own words) is printed at
once. A command line that passes is parsed again by the real parser, which alone decides what runs; so the
record can only make an error faster, never change what a valid command does. A missing, stale or damaged
record is ignored and written again.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from difflab.cli.common import TYPES
from difflab.resources import cache_root

FORMAT = 1
ACTIONS = {"store": argparse._StoreAction, "store_true": argparse._StoreTrueAction,
           "boolean_optional": argparse.BooleanOptionalAction}


@functools.lru_cache(maxsize=1)
def source_key() -> str:
    """A hash of difflab's version and of every one of its source files' path, size and modification time."""
    import difflab

    root = Path(difflab.__file__).parent
    digest = hashlib.sha256(f"{FORMAT} {difflab.__version__} {sys.version}".encode())
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def record_path(command: str) -> Path:
    return cache_root() / "cli-parsers" / source_key() / f"{command}.json"


def describe(parser: argparse.ArgumentParser) -> list[dict[str, Any]] | None:
    """The parser's options as JSON-able records, or None if one of them cannot be recorded."""
    records = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        kind = next((name for name, cls in ACTIONS.items() if type(action) is cls), None)
        type_name = next((name for name, fn in TYPES.items() if fn is action.type), None)
        if kind is None or (action.type is not None and type_name is None):
            return None
        flags = action.option_strings[:1] if kind == "boolean_optional" else action.option_strings
        records.append({"flags": flags, "kind": kind, "dest": action.dest, "nargs": action.nargs,
                        "const": action.const, "type": type_name, "required": action.required,
                        "choices": None if action.choices is None else list(action.choices),
                        "metavar": action.metavar})
    try:
        json.dumps(records)
    except (TypeError, ValueError):
        return None
    return records


def save(command: str, parser: argparse.ArgumentParser) -> None:
    """Record the real parser of ``command`` (silently skipped where the cache cannot be written)."""
    path = record_path(command)
    records = None if path.is_file() else describe(parser)
    if records is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(records))
        tmp.replace(path)
    except OSError:
        pass


def rebuild(command: str, parser: argparse.ArgumentParser) -> bool:
    """Add the recorded options of ``command`` to ``parser``; False if there is no usable record."""
    try:
        records = json.loads(record_path(command).read_text())
        for r in records:
            kwargs: dict[str, Any] = {"dest": r["dest"], "action": ACTIONS[r["kind"]]}
            if r["kind"] == "store":
                kwargs.update(nargs=r["nargs"], const=r["const"], metavar=r["metavar"],
                              type=TYPES[r["type"]] if r["type"] else None,
                              choices=r["choices"])
            if r["flags"]:
                parser.add_argument(*r["flags"], required=r["required"], **kwargs)
            else:
                parser.add_argument(**kwargs)
    except (OSError, ValueError, KeyError, TypeError, argparse.ArgumentError):
        return False
    return True
