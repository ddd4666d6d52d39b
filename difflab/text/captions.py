"""Captions for training a text-conditional model: phrasings of digit labels, or an image folder's own
captions in its metadata.jsonl (the Hugging Face "imagefolder" convention)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import torch
from torch import Tensor

from difflab.errors import DifflabError

DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Varied phrasings, in word and numeral forms, so that a model learns the digit rather than one sentence. No
# template puts an article right before the digit ("a eight").
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a handwritten {word}",
    "the digit {numeral}",
    "{numeral}",
    "a sloppy {numeral}",
    "number {word}",
    "a neat handwritten {numeral}",
    "{word}",
    "an image of the digit {word}",
    "the number {numeral}, written by hand",
    "a small drawing of the number {word}",
)
METADATA = "metadata.jsonl"


def digit_captions(labels: Tensor, seed: int = 0) -> list[str]:
    """One caption per label of (N,) int64 labels in 0..9: a template of CAPTION_TEMPLATES drawn uniformly
    for each example by a generator seeded with ``seed`` (the same captions for the same seed)."""
    if labels.ndim != 1 or labels.dtype != torch.int64:
        raise ValueError(f"labels must be (N,) int64, got {tuple(labels.shape)} {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(DIGIT_WORDS)):
        raise DifflabError(f"digit captions need labels 0..9, got labels in {int(labels.min())}.."
                           f"{int(labels.max())}; caption other data with an image folder's {METADATA}")
    generator = torch.Generator().manual_seed(seed)
    choice = torch.randint(len(CAPTION_TEMPLATES), (len(labels),), generator=generator)
    return [CAPTION_TEMPLATES[t].format(word=DIGIT_WORDS[y], numeral=y)
            for t, y in zip(choice.tolist(), labels.tolist())]


def read_metadata_captions(folder: Path, file_names: list[str]) -> list[str]:
    """The caption of each image in ``file_names`` (paths relative to ``folder``, e.g. an ArrayDataset's
    ``files``), in that order, from ``folder/metadata.jsonl``: one JSON object a line,
    {"file_name": "<path relative to the folder>", "text": "<caption>"}. Lines for other files are ignored.
    """
    path = Path(folder) / METADATA
    if not path.is_file():
        raise DifflabError(f"{path} not found: a text run on an image folder needs a {METADATA} with one line "
                           '{"file_name": ..., "text": ...} per image')
    captions: dict[str, str] = {}
    where: dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as f:   # -sig: a BOM some editors write
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise DifflabError(f"{path} line {number} is not JSON ({e.msg}); write one JSON object a "
                                   "line") from None
            if not isinstance(entry, dict):
                raise DifflabError(f"{path} line {number} is not a JSON object; write "
                                   '{"file_name": ..., "text": ...}')
            for key in ("file_name", "text"):
                if not isinstance(entry.get(key), str):
                    problem = "lacks" if key not in entry else "has a non-string"
                    raise DifflabError(f"{path} line {number} {problem} {key!r}; write "
                                       '{"file_name": ..., "text": ...}')
            name = _normal(entry["file_name"])
            if name in where:
                raise DifflabError(f"{path} lines {where[name]} and {number} both caption {name}; keep one")
            captions[name], where[name] = entry["text"], number
    missing = [name for name in map(_normal, file_names) if name not in captions]
    if missing:
        more = f" (and {len(missing) - 1} more images)" if len(missing) > 1 else ""
        raise DifflabError(f"image {missing[0]}{more} has no caption in {path}; add a line "
                           f'{{"file_name": "{missing[0]}", "text": ...}} for each image')
    return [captions[_normal(name)] for name in file_names]


def _normal(file_name: str) -> str:
    """A relative path as the metadata writes it: forward slashes, no leading "./"."""
    return PurePosixPath(file_name.replace("\\", "/")).as_posix()
