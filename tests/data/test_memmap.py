"""The memory-mapped image cache and its streaming source: the same values as the in-memory path, bit for bit."""

from __future__ import annotations

import os
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.data import image_cache, load_dataset
from difflab.data.image_cache import open_cached, resolve_loader
from difflab.data.memmap import StreamingSource
from difflab.errors import DifflabError
from difflab.training.batches import InMemory, RankRows
from difflab.training.data_order import DataOrder


def image_folder(root: Path, n: int = 24) -> Path:
    """n images in two class folders: PNG and JPEG, RGB, gray, RGBA, palette and 16-bit, of mixed sizes."""
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 9 + i % 5, 7 + 2 * (i % 3)
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        kind = i % 5
        image = [Image.fromarray(rgb), Image.fromarray(rgb[..., 0]), Image.fromarray(rgb).convert("RGBA"),
                 Image.fromarray(rgb).convert("P"), Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)][kind]
        path = root / ("cats" if i % 2 else "dogs") / f"{i:03d}.{'jpg' if kind in (0, 1) and i % 3 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return root


def batches(source, start: int, stop: int, n: int) -> list[torch.Tensor]:
    return list(source.stream(range(start, stop), RankRows(DataOrder(n, 6, seed=3))))


@pytest.mark.parametrize("channels,decode_workers", [(3, 0), (1, 0), (3, 2)])
def test_folder_cache_equals_memory(tmp_path: Path, channels: int, decode_workers: int) -> None:
    root = image_folder(tmp_path / "images")
    memory = load_dataset(str(root), image_size=8, channels=channels)
    cached = open_cached(str(root), image_size=8, channels=channels, cache_dir=tmp_path / "cache",
                         progress=False, decode_workers=decode_workers)
    assert cached.pixels.dtype == np.uint8 and isinstance(cached.pixels, np.memmap)
    same = cached.to_memory()
    assert torch.equal(same.data, memory.data)
    assert torch.equal(same.labels, memory.labels) and same.num_classes == memory.num_classes == 2
    assert (same.files, same.class_names, same.name) == (memory.files, memory.class_names, memory.name)
    assert cached.spec == memory.spec and len(cached) == len(memory)


@pytest.mark.parametrize("kind,stored", [("uint8", "uint8"), ("k/255", "uint8"), ("float", "float32"),
                                         ("first row negative", "float32")])
@pytest.mark.parametrize("options", [{}, {"channels": 1, "split": "test"}, {"image_size": 4, "channels": 3}])
def test_npz_cache_equals_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, stored: str,
                                 options: dict) -> None:
    monkeypatch.setattr(image_cache, "CHUNK_BYTES", 2000)          # several chunks: conversion chunk by chunk
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 6, 5, 3), dtype=np.uint8)
    images = {"uint8": pixels, "k/255": pixels / 255.0, "float": rng.uniform(-1, 1, pixels.shape),
              "first row negative": rng.uniform(0, 1, pixels.shape)}[kind]
    if kind == "first row negative":      # the range of the whole array, not of each chunk, decides the scale
        images[0, 0, 0, 0] = -0.5
    path = tmp_path / "d.npz"
    np.savez_compressed(path, images=images, labels=np.arange(40) % 7)
    memory = load_dataset(str(path), **options)
    cached = open_cached(str(path), cache_dir=tmp_path / "cache", progress=False, **options)
    converted = "channels" in options and options["channels"] == 1 or "image_size" in options
    assert cached.pixels.dtype == ("float32" if converted else stored)
    assert torch.equal(cached.to_memory().data, memory.data)
    assert torch.equal(cached.labels, memory.labels) and cached.num_classes == memory.num_classes == 7


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_equals_in_memory_and_resumes(tmp_path: Path, workers: int) -> None:
    root = image_folder(tmp_path / "images")
    memory = load_dataset(str(root), image_size=8)
    source = StreamingSource(open_cached(str(root), image_size=8, cache_dir=tmp_path / "cache", progress=False),
                             workers=workers, prefetch=2)
    expected = batches(InMemory(memory.data), 5, 10, len(memory))
    got = batches(source, 5, 10, len(memory))
    assert len(got) == 5 and all(torch.equal(a, b) for a, b in zip(got, expected))
    assert all(b.dtype == torch.float32 and b.shape == (6, 3, 8, 8) for b in got)
    stats = source.pop_stats()
    assert set(stats) == {"load_img_per_s", "load_mb_per_s", "load_wait_s"} and stats["load_img_per_s"] > 0
    assert source.pop_stats() == {}
    whole = batches(source, 0, 10, len(memory))
    resumed = batches(source, 7, 10, len(memory))
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole[7:], strict=True))


def test_stream_by_rank(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "images")
    memory = load_dataset(str(root), image_size=8)
    source = StreamingSource(open_cached(str(root), image_size=8, cache_dir=tmp_path / "cache", progress=False),
                             workers=0)
    rows = RankRows(DataOrder(len(memory), 6, seed=0), rank=1, world=2)
    assert all(torch.equal(a, b) for a, b in zip(source.stream(range(3), rows),
                                                 InMemory(memory.data).stream(range(3), rows), strict=True))


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    decoded: list[Path] = []
    real = image_cache.read_pixels

    def counting(path: Path, size: int, mode: str) -> np.ndarray:
        decoded.append(path)
        return real(path, size, mode)

    monkeypatch.setattr(image_cache, "read_pixels", counting)
    return decoded


def test_changed_files_rebuild_and_unchanged_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = image_folder(tmp_path / "images", n=12)
    decoded = count_decodes(monkeypatch)

    def entry() -> Path:
        images = open_cached(str(root), image_size=8, cache_dir=tmp_path / "cache", progress=False, decode_workers=0)
        return images.pixel_file.path.parent

    first = entry()
    assert len(decoded) == 10                                 # the train split: 12 less ceil(10 %)
    assert entry() == first and len(decoded) == 10            # unchanged: reused, nothing decoded
    touched = min(root.rglob("*.png"))
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    second = entry()
    assert second != first and len(decoded) == 20
    Image.new("RGB", (9, 9), "red").save(root / "cats" / "new.png")
    third = entry()
    assert third not in (first, second) and len(decoded) > 20
    (root / "cats" / "new.png").unlink()
    assert entry() == second                                  # back to the second folder: that entry again


def test_options_and_split_make_other_entries(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "images", n=12)
    kw = {"cache_dir": tmp_path / "cache", "progress": False}
    folders = {open_cached(str(root), image_size=s, channels=c, split=split, **kw).pixel_file.path.parent
               for s, c, split in [(8, 3, "train"), (6, 3, "train"), (8, 1, "train"), (8, 3, "test")]}
    assert len(folders) == 4


@pytest.mark.parametrize("damage", ["truncate", "meta", "labels"])
def test_damaged_entry_is_rebuilt_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 damage: str) -> None:
    root = image_folder(tmp_path / "images", n=12)
    kw = {"image_size": 8, "cache_dir": tmp_path / "cache", "progress": False, "decode_workers": 0}
    folder = open_cached(str(root), **kw).pixel_file.path.parent
    if damage == "truncate":
        with open(folder / "pixels.bin", "r+b") as f:
            f.truncate(100)
    elif damage == "meta":
        (folder / "meta.json").write_text('{"version": 1, "key": ')
    else:
        (folder / "labels.npy").write_bytes(b"junk")
    decoded = count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match="rebuilding the damaged image cache entry"):
        images = open_cached(str(root), **kw)
    assert len(decoded) == 10 and images.pixel_file.path.parent == folder
    assert torch.equal(images.to_memory().data, load_dataset(str(root), image_size=8).data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_cached(str(root), **kw)                           # whole again: no warning


def test_kill_during_build_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = image_folder(tmp_path / "images", n=12)
    calls = count_decodes(monkeypatch)
    real = image_cache.read_pixels

    def dies(path: Path, size: int, mode: str) -> np.ndarray:
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(path, size, mode)

    monkeypatch.setattr(image_cache, "read_pixels", dies)
    with pytest.raises(KeyboardInterrupt):
        open_cached(str(root), image_size=8, cache_dir=tmp_path / "cache", progress=False, decode_workers=0)
    assert [p.name for p in (tmp_path / "cache" / "images").iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("decode_workers", [0, 2])
def test_corrupt_image_same_error_as_memory(tmp_path: Path, decode_workers: int) -> None:
    root = image_folder(tmp_path / "images", n=12)
    (root / "cats" / "001.png").write_bytes(b"not a png")
    with pytest.raises(DifflabError) as memory:
        load_dataset(str(root), image_size=8)
    with pytest.raises(DifflabError) as cached:
        open_cached(str(root), image_size=8, cache_dir=tmp_path / "cache", progress=False,
                    decode_workers=decode_workers)
    assert str(cached.value) == str(memory.value) and "\n" not in str(cached.value)
    assert "001.png: not a readable image" in str(cached.value)


def test_large_npz_is_read_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.random.default_rng(2).integers(0, 256, (2400, 3, 16, 16), dtype=np.uint8)   # 1.8 MB
    path = tmp_path / "big.npz"
    np.savez_compressed(path, images=images)
    monkeypatch.setattr(image_cache, "CHUNK_BYTES", 16 * 3 * 16 * 16 * 4)      # 16 rows at a time
    tracemalloc.start()
    try:
        cached = open_cached(str(path), split="all", cache_dir=tmp_path / "cache", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < images.nbytes / 4, f"peak {peak} bytes while caching {images.nbytes} bytes of images"
    assert np.array_equal(cached.pixels, images)


def test_sources_that_stay_in_memory(tmp_path: Path) -> None:
    with pytest.raises(DifflabError, match="digits is a small built-in set and stays in memory"):
        open_cached("digits", cache_dir=tmp_path)
    path = tmp_path / "points.npz"
    np.savez(path, x=np.zeros((10, 2), np.float32))
    with pytest.raises(DifflabError, match="2-D points, which stay in memory"):
        open_cached(str(path), cache_dir=tmp_path)
    with pytest.raises(DifflabError, match="no such image folder or .npz file"):
        open_cached(str(tmp_path / "missing"), cache_dir=tmp_path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DifflabError, match="bad.npz"):
        open_cached(str(bad), cache_dir=tmp_path)


def test_resolve_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = image_folder(tmp_path / "images", n=12)
    assert resolve_loader("auto", "digits") == "memory" and resolve_loader("memmap", str(root)) == "memmap"
    assert resolve_loader("auto", str(root), image_size=8) == "memory"
    monkeypatch.setattr(image_cache, "AUTO_MEMMAP_BYTES", 10 * 3 * 8 * 8 * 4 - 1)
    assert resolve_loader("auto", str(root), image_size=8) == "memmap"
    with pytest.raises(DifflabError, match="--loader must be one of memory, memmap, auto"):
        resolve_loader("disk", str(root))


def test_a_stream_leaves_torchs_global_rng_alone(tmp_path):
    """A DataLoader seeds its workers from torch's global RNG unless given a generator; a resumed run starts one
    stream more than the run it continues, so that would change its dropout draws."""
    from difflab.data.memmap import StreamingSource
    from difflab.training.batches import RankRows
    from difflab.training.data_order import DataOrder

    images = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", images=images)
    cached = open_cached(str(tmp_path / "x.npz"), split="all", cache_dir=tmp_path / "cache", progress=False)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for workers in (0, 1):
        list(StreamingSource(cached, workers=workers).stream(range(3), RankRows(DataOrder(20, 4, 0))))
    assert torch.equal(torch.get_rng_state(), before)
