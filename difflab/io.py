"""Files that survive a kill at any moment, and reading them back without running code.

    atomic_write_text(path, text)          a text file, through a temporary file and an atomic rename
    write_folder(folder, tensors, texts)   a folder of safetensors and text files, filled under a temporary
                                           name and renamed into place: a reader sees all of it or none
    read_json(path), read_tensors(path)    a missing, truncated or corrupt file is a one-line DifflabError

Checkpoints (:mod:`difflab.training.checkpoint`) and the metrics cache (:mod:`difflab.metrics.disk_cache`)
both write through :func:`write_folder`. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from difflab.errors import DifflabError


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write text to path through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_folder(folder: Path | str, tensors: dict[str, dict[str, Tensor]], texts: dict[str, str],
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors[name]`` to ``folder/name`` (safetensors, with ``metadata``) and ``texts[name]`` to
    ``folder/name``, atomically: the files are filled and fsynced in a temporary sibling folder
    (``.tmp_<folder name>_*``), which is then renamed to ``folder``. An existing folder of that name is first
    renamed aside (``.tmp_<folder name>_old_*``) and removed only once the new one is in place; if that
    fails it is put back. The parent is created. On any error the temporary folder is removed and the
    error raised."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp_{folder.name}_"))
    try:
        for name, group in tensors.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in group.items()}, str(tmp / name), metadata=metadata)
        for name, text in texts.items():
            (tmp / name).write_text(text)
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        aside = None
        if folder.exists():
            aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp_{folder.name}_old_"))
            os.rename(folder, aside)                  # replaces the empty folder mkdtemp made
        try:
            os.rename(tmp, folder)
        except BaseException:
            if aside is not None:
                os.rename(aside, folder)
            raise
        fsync_dir(folder.parent)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_tensors(path: Path | str) -> dict[str, Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file is a one-line DifflabError naming it."""
    path = Path(path)
    if not path.exists():
        raise DifflabError(f"checkpoint file {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DifflabError(f"checkpoint file {path} is corrupt or truncated ({msg}); "
                           f"use an earlier checkpoint folder or retrain") from None


def read_json(path: Path | str) -> dict[str, Any]:
    """Load a JSON object; a missing or corrupt file is a one-line DifflabError naming it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise DifflabError(f"file {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DifflabError(f"file {path} is corrupt ({e}); restore it or retrain") from None
    if not isinstance(value, dict):
        raise DifflabError(f"file {path} should hold a JSON object")
    return value
