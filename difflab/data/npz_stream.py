"""One array of an .npz archive read in chunks of rows, never whole.

An .npz is a zip archive of .npy members ("images.npy", "labels.npy", ...). A member is opened as a stream
(``zipfile`` decompresses a deflated member as it is read), its .npy header gives shape and dtype, and the
rows follow in C order, so ``rows`` bytes at a time is ``rows`` examples at a time. Errors are the same
one-line DifflabErrors that :func:`difflab.data.npz.read_arrays` gives.

    layout = npz_layout(path)                     shapes and dtypes, from the headers alone
    read_labels(layout)                           the (small) labels array, or None
    for start, chunk in read_chunks(layout, rows): ...    chunk = rows start .. start + len(chunk)
"""

from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from difflab.data.npz import READ_ERRORS, check_archive, data_key, label_key, read_error
from difflab.errors import DifflabError

NPY_SUFFIX = ".npy"
# The .npy header readers NumPy makes public, by format version (np.savez writes 1.0, or 2.0 for huge headers).
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


@dataclass(frozen=True)
class NpzLayout:
    """Where the data (and labels) of an archive lie: member names, and the data's shape and dtype."""

    path: Path
    data_member: str
    label_member: str | None
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def row_bytes(self) -> int:
        """Bytes of one example as stored."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn the errors of a damaged archive into read_error's one-line DifflabError."""
    try:
        yield
    except READ_ERRORS as e:
        raise read_error(path, e) from e


def npz_layout(path: Path) -> NpzLayout:
    """The layout of the archive at ``path``, read from the zip directory and the data member's header."""
    check_archive(path)
    with _reading(path), zipfile.ZipFile(path) as archive:
        members = {name.removesuffix(NPY_SUFFIX): name for name in archive.namelist()}
        keys = list(members)
        labels_at = label_key(keys)
        data_at = members[data_key(path, keys)]
        with archive.open(data_at) as file:
            shape, dtype = _read_header(path, file)
    return NpzLayout(path=path, data_member=data_at, label_member=None if labels_at is None else members[labels_at],
                     shape=shape, dtype=dtype)


def read_labels(layout: NpzLayout) -> np.ndarray | None:
    """The whole labels array (one number per example: small), or None if the archive has none."""
    if layout.label_member is None:
        return None
    with _reading(layout.path), zipfile.ZipFile(layout.path) as archive, archive.open(layout.label_member) as file:
        return np.lib.format.read_array(file, allow_pickle=False)


def read_chunks(layout: NpzLayout, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, up to ``rows`` rows of the data array, read-only) in order, holding one chunk at a time."""
    n, row_bytes = layout.shape[0], layout.row_bytes
    with _reading(layout.path), zipfile.ZipFile(layout.path) as archive, archive.open(layout.data_member) as file:
        _read_header(layout.path, file)
        for start in range(0, n, rows):
            count = min(rows, n - start)
            buffer = file.read(count * row_bytes)
            if len(buffer) != count * row_bytes:
                raise EOFError(f"{layout.data_member} ends after {start * row_bytes + len(buffer)} of "
                               f"{n * row_bytes} data bytes")
            yield start, np.frombuffer(buffer, dtype=layout.dtype).reshape(count, *layout.shape[1:])


def _read_header(path: Path, file: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the .npy header at the start of ``file``, which is left at the first data byte."""
    version = np.lib.format.read_magic(file)
    if version not in HEADER_READERS:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    shape, fortran_order, dtype = HEADER_READERS[version](file)
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    if fortran_order and len(shape) > 1:
        raise DifflabError(f"{path}: the data array is stored in Fortran order, which cannot be read row by row; "
                           "save numpy.ascontiguousarray(images) instead")
    return tuple(shape), dtype
