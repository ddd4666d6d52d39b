"""The on-disk cache that metrics share: one folder per entry, holding tensors.safetensors + meta.json.

    $DIFFLAB_CACHE (default ~/.cache/difflab)/KIND/NAME/tensors.safetensors
                                                   /meta.json

An entry is written with :func:`difflab.io.write_folder` (filled under a temporary name and renamed into
place), so a reader sees a whole entry or none. A missing or damaged entry reads as a miss (None); the
caller recomputes and writes it again. Nothing is pickled.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from difflab.errors import one_line
from difflab.io import tensor_bytes, write_folder
from difflab.resources import CACHE_ENV

TENSORS = "tensors.safetensors"
META = "meta.json"


def read_entry(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """(tensors, meta) of the entry in ``folder``, or None if it is absent or unreadable (with a warning)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / META).read_text())
        tensors = load_file(str(folder / TENSORS))
    except (OSError, ValueError, SafetensorError) as e:  # JSONDecodeError is a ValueError
        warnings.warn(f"ignoring the damaged cache entry {folder} ({one_line(e)}); it will be recomputed",
                      stacklevel=2)
        return None
    if not isinstance(meta, dict):
        warnings.warn(f"ignoring the damaged cache entry {folder} (meta.json is not an object)", stacklevel=2)
        return None
    return tensors, meta


def write_entry(folder: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> bool:
    """Write an entry atomically to ``folder`` (parents created), replacing a damaged one.

    Returns False, with a warning, if the cache cannot be written (read-only or full disk): a cache
    is an optimisation, so the caller goes on with the values it computed.
    """
    folder = Path(folder)
    try:
        write_folder(folder, {TENSORS: tensor_bytes(tensors),
                              META: json.dumps(meta, indent=1, sort_keys=True).encode()})
    except OSError as e:
        if read_entry(folder) is not None:   # another process wrote a whole entry meanwhile
            return True
        warnings.warn(f"cannot write the cache entry {folder} ({one_line(e)}); set ${CACHE_ENV} to a "
                      "writable folder to keep results between runs", stacklevel=2)
        return False
    return True
