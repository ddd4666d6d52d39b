"""Files that survive a kill at any moment, and reading them back without running code.

    atomic_write_text(path, text)        a text file, through a temporary file and an atomic rename
    write_folder(folder, files)          a folder of files (bytes), filled under a temporary name and renamed
                                         into place: a reader sees all of it or none
    staged_folder(folder)                the same for files the caller writes itself (a large memory map)
    tensor_bytes(tensors), sha256(data)  a safetensors file as bytes, and the checksum a writer records of it
    read_json(path), read_tensors(path)  a missing, truncated, corrupt or (with ``sha256``) altered file is a
                                         one-line DifflabError naming it
    typed_fields(cls, values, where)     JSON values checked against a dataclass's fields before it is built
    output_error(path, error)            an OSError on an output path as that one-line error
    check_output_folder / check_output_file    an output location checked before any work starts

Files and folders get the modes the user's umask gives (tempfile alone would make them private).
Checkpoints (:mod:`difflab.training.checkpoint`) and the metrics cache (:mod:`difflab.metrics.disk_cache`)
both write through :func:`write_folder`. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Iterator

from safetensors import SafetensorError
from safetensors.torch import load, save
import torch
from torch import Tensor

from difflab.errors import DifflabError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool) -> int:
    """The mode open() or mkdir() would give a new file or folder under the user's umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def output_error(path: Path | str, error: OSError) -> DifflabError:
    """A one-line error for an OSError while writing ``path`` (disk full, read-only, file too large, ...)."""
    reason = error.strerror or type(error).__name__
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        hint = "free space or raise the limit"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a location you can write to"
    else:
        hint = "check the path"
    return DifflabError(f"cannot write {path}: {reason}; {hint} (nothing written before is lost)")


def check_output_folder(folder: Path | str, option: str) -> Path:
    """Raise a one-line DifflabError unless ``folder`` is, or can be created as, a folder we may write in.
    Nothing is created here: the check runs before any work, so bad options leave no trace."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DifflabError(f"{option} {folder} is a file, not a folder; choose another path")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DifflabError(f"{option} {folder}: {existing} is a file, so no folder can be made there; choose another "
                           "path")
    try:                                 # a real probe: access() says yes to root on a read-only mount
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise DifflabError(f"{option} {folder}: {existing} is not writable ({e.strerror}); choose another "
                           "location") from None
    return folder


def check_output_file(path: Path | str, option: str, suffixes: tuple[str, ...]) -> Path:
    """Raise a one-line DifflabError unless ``path`` names a file with one of ``suffixes`` that can be written
    (its folder existing or creatable). Checked before any work, so nothing is lost at the end."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DifflabError(f"{option} {path} is a folder; give a file name, e.g. {path / ('out' + suffixes[0])}")
    if path.suffix.lower() not in suffixes:
        raise DifflabError(f"{option} {path}: the file name must end in {', '.join(suffixes)}")
    check_output_folder(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise DifflabError(f"{option} {path} exists and is not writable; choose another file")
    return path


def atomic_write_text(path: Path | str, text: str | bytes) -> None:
    """Write text (or bytes) to path through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode(directory=False))
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


def tensor_bytes(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes for named tensors (moved to the CPU, made contiguous)."""
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """SHA-256 (hex) over the names, dtypes, shapes and bytes of named tensors, in name order: their identity,
    whatever file holds them (safetensors' header order is not fixed, so equal weights may serialise to
    different bytes)."""
    digest = hashlib.sha256()
    for name, value in sorted(tensors.items()):
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_folder(folder: Path | str, files: dict[str, bytes]) -> Path:
    """Write ``files[name]`` to ``folder/name`` atomically, through :func:`staged_folder`: a reader sees all of
    them or none."""
    with staged_folder(folder) as tmp:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    return Path(folder)


@contextlib.contextmanager
def staged_folder(folder: Path | str) -> Iterator[Path]:
    """A temporary sibling folder (``.tmp_<folder name>_*``) for the block to fill (and fsync), renamed to
    ``folder`` when the block ends without error. An existing folder of that name is first renamed aside
    (``.tmp_<folder name>_old_*``) and removed only once the new one is in place; if that fails it is put back.
    The parent is created. On any error the temporary folder is removed and the error raised."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp_{folder.name}_"))
    try:
        yield tmp
        os.chmod(tmp, default_mode(directory=True))
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


def read_tensors(path: Path | str, expected_sha256: str | None = None) -> dict[str, Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file is a one-line DifflabError naming it, and
    so is one whose SHA-256 differs from ``expected_sha256`` (a flipped byte safetensors alone would load)."""
    path = Path(path)
    if not path.exists():
        raise DifflabError(f"checkpoint file {path} is missing")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DifflabError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    try:
        tensors = load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DifflabError(f"checkpoint file {path} is corrupt or truncated ({msg}); "
                           f"use an earlier checkpoint folder or retrain") from None
    if expected_sha256 is not None and sha256(data) != expected_sha256:
        raise DifflabError(f"checkpoint file {path} is damaged (its SHA-256 differs from the one recorded when it "
                           "was written); use an earlier checkpoint folder or retrain")
    return tensors


def read_json(path: Path | str) -> dict[str, Any]:
    """Load a JSON object; a missing or corrupt file is a one-line DifflabError naming it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise DifflabError(f"file {path} is missing") from None
    except IsADirectoryError:
        raise DifflabError(f"{path} is a folder, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DifflabError(f"file {path} is corrupt ({e}); restore it or retrain") from None
    except OSError as e:
        raise DifflabError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    if not isinstance(value, dict):
        raise DifflabError(f"file {path} should hold a JSON object")
    return value


def fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type annotation (int, float, str, bool, None, unions, tuples, dicts)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple)) and all(fits(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def typed_fields(cls: type, values: dict[str, Any], where: str, required: bool = True) -> dict[str, Any]:
    """``values`` checked against the fields of dataclass ``cls``: no unknown key, every field present (when
    ``required``), each value of its field's type; JSON lists become tuples where the field is a tuple.
    A problem is a one-line DifflabError naming ``where``.key."""
    if not isinstance(values, dict):
        raise DifflabError(f"{where} should be a JSON object, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise DifflabError(f"{where} has unknown keys {unknown}; is it from a newer difflab?")
    missing = [n for n in names if n not in values] if required else []
    if missing:
        raise DifflabError(f"{where} lacks {', '.join(missing)}; restore the file or retrain")
    out = {}
    for name, value in values.items():
        if not fits(value, hints[name]):
            shown = getattr(hints[name], "__name__", None) or str(hints[name]).replace("typing.", "")
            raise DifflabError(f"{where}.{name} should be {shown}, got {value!r}; fix the file or retrain")
        out[name] = tuple(value) if isinstance(value, list) and typing.get_origin(hints[name]) is not list else value
    return out
