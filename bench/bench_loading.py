"""Loading a data set from the memory-mapped cache vs holding it in memory, on a synthetic image folder.

    python bench/bench_loading.py [--n 2000] [--size 64] [--batch 128] [--steps 100] [--workers 0,1,2]

Writes --n random RGB PNGs of --size x --size to a temporary folder, then reports:
  decode      seconds to decode the folder once: into the cache (open_cached, its default decode pool) and
              into memory (load_dataset, one process), and a second open_cached (the entry reused)
  stream      images/s the training loop receives over --steps batches of --batch (a random order through
              RankRows(DataOrder)): StreamingSource with each --workers count, and InMemory on the CPU;
              with the loader's own figures from pop_stats (load_img_per_s: per second of loader time in
              the item function; load_wait_s: seconds the loop waited)
  memory      the cache file's size (uint8), the pages of its memory map resident in this process after
              every row was read once (from /proc/self/smaps: page cache, shared between processes and
              reclaimable) and the float32 tensor the in-memory path holds
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from difflab.data import load_dataset
from difflab.data.image_cache import open_cached
from difflab.data.memmap import StreamingSource
from difflab.training.batches import InMemory, RankRows
from difflab.training.data_order import DataOrder


def write_folder(root: Path, n: int, size: int) -> None:
    """n random RGB PNGs (smooth gradients plus noise, so PNG compresses as on photos, roughly)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size)[None, :, None]
    for i in range(n):
        pixels = (ramp * rng.uniform(0.2, 1.0, (1, 1, 3)) + rng.integers(0, 56, (size, size, 3))).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i:06d}.png")


def mapped_rss(path: Path) -> int:
    """Bytes of ``path``'s mappings resident in this process (0 where /proc/self/smaps is missing)."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return 0
    total, inside = 0, False
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:               # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


def stream_rate(source, n: int, batch: int, steps: int) -> float:
    """Images per second the consumer receives over ``steps`` batches."""
    order = RankRows(DataOrder(n, batch, seed=0))
    start = time.perf_counter()
    count = sum(len(b) for b in source.stream(range(steps), order))
    return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="images in the folder (default 2000)")
    p.add_argument("--size", type=int, default=64, help="image side (default 64)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--steps", type=int, default=100, help="batches streamed per figure (default 100)")
    p.add_argument("--workers", type=lambda text: [int(w) for w in text.split(",")], default=[0, 1, 2],
                   help="StreamingSource worker counts (default 0,1,2)")
    a = p.parse_args()
    print(f"{a.n} PNGs of {a.size} x {a.size} x 3, batch {a.batch}, {a.steps} steps; {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "images", Path(tmp) / "cache"
        root.mkdir()
        write_folder(root, a.n, a.size)
        t0 = time.perf_counter()
        images = open_cached(str(root), split="all", image_size=a.size, cache_dir=cache, progress=False)
        t1 = time.perf_counter()
        open_cached(str(root), split="all", image_size=a.size, cache_dir=cache, progress=False)
        t2 = time.perf_counter()
        memory = load_dataset(str(root), split="all", image_size=a.size)
        t3 = time.perf_counter()
        print(f"decode  cache {t1 - t0:.2f} s ({a.n / (t1 - t0):.0f} img/s)   memory {t3 - t2:.2f} s "
              f"({a.n / (t3 - t2):.0f} img/s)   reopen cached entry {1000 * (t2 - t1):.0f} ms")
        print(f"stream  in memory (CPU tensor): {stream_rate(InMemory(memory.data), a.n, a.batch, a.steps):,.0f} img/s")
        for workers in a.workers:
            source = StreamingSource(images, workers=workers, pin_memory=False)
            rate = stream_rate(source, a.n, a.batch, a.steps)
            stats = source.pop_stats()
            print(f"stream  memmap, {workers} worker(s): {rate:,.0f} img/s   (load_img_per_s "
                  f"{stats['load_img_per_s']:,.0f}, load_mb_per_s {stats['load_mb_per_s']:.0f}, load_wait_s "
                  f"{stats['load_wait_s']:.2f})")
        images.rows(np.arange(len(images)))                         # touch every row of the map once
        file_bytes = images.pixel_file.path.stat().st_size
        print(f"memory  cache file {file_bytes / 2**20:.1f} MiB uint8; resident in this process after "
              f"reading every row {mapped_rss(images.pixel_file.path) / 2**20:.1f} MiB (page cache, reclaimable); float32 "
              f"tensor in memory {memory.data.numel() * 4 / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
