"""Latent diffusion's set-up (Rombach et al. 2022): a run's training images encoded once by its autoencoder, the
latents cached on disk, scaled to unit variance, and the codec that decodes samples.

    difflab train --autoencoder runs/ae ...   a fresh run: the autoencoder's EMA weights are copied into the run
                                              (RUN/autoencoder.safetensors), s = 1 / std(E(x)) over the data
    difflab train --resume RUN                the run's own copy and s are used

The cache, $DIFFLAB_CACHE/latents/<key>/, is keyed by the SHA-256 of the autoencoder's weights and of the images,
so a changed autoencoder (retrained, resumed, another run) never reads the latents of another; an entry that is
damaged, or whose content does not match what it was written for, is recomputed and written again, never
trusted.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from difflab.codecs import AutoencoderCodec
from difflab.codecs.autoencoder import CHUNK, WEIGHTS, check_fits
from difflab.config import RunConfig
from difflab.data import ArrayDataset
from difflab.errors import DifflabError
from difflab.io import atomic_write_text, output_error, tensor_bytes, tensors_sha256
from difflab.metrics.disk_cache import read_entry, write_entry
from difflab.metrics.stats_cache import data_hash
from difflab.resources import cache_root

CACHE_KIND = "latents"


def is_latent(cfg: RunConfig) -> bool:
    """Whether the run's diffusion runs on an autoencoder's latents (difflab train --autoencoder)."""
    return cfg.codec.get("name") == AutoencoderCodec.name


def cache_folder(autoencoder_sha256: str, images_sha256: str, cache_dir: Path | str | None = None) -> Path:
    """The cache entry of one autoencoder's latents of one set of images."""
    key = hashlib.sha256(f"{autoencoder_sha256}:{images_sha256}".encode()).hexdigest()
    return cache_root(cache_dir) / CACHE_KIND / key[:24]


@torch.no_grad()
def encode_images(codec: AutoencoderCodec, images: Tensor, device: torch.device | str = "cpu",
                  progress: bool = False) -> Tensor:
    """E(x) (N, C, h, w), unscaled, of images (N, C_in, H, W), in chunks on ``device``; returned on the CPU."""
    out = []
    for start in tqdm(range(0, len(images), CHUNK), disable=not progress or len(images) <= CHUNK,
                      desc=f"encoding {len(images)} images", dynamic_ncols=True):
        out.append(codec.unscaled(images[start:start + CHUNK].to(device)).float().cpu())
    return torch.cat(out)


def cached_latents(codec: AutoencoderCodec, images: Tensor, device: torch.device | str = "cpu",
                   cache_dir: Path | str | None = None, progress: bool = False) -> tuple[Tensor, bool]:
    """(E(x) of every image (N, C, h, w), unscaled; whether it came from the cache). A cache entry is used only
    when it was written for this autoencoder (its SHA-256) and these images, and holds N finite latents of the
    codec's shape; anything else is recomputed (with a warning when an entry was there) and written again."""
    images_sha = data_hash(images)
    folder = cache_folder(codec.sha256, images_sha, cache_dir)
    want = (len(images), *codec.model_spec.shape)
    entry = read_entry(folder)          # damaged: None, with a warning
    if entry is not None:
        tensors, meta = entry
        z = tensors.get("latents")
        if (meta.get("autoencoder_sha256") == codec.sha256 and meta.get("images_sha256") == images_sha
                and z is not None and tuple(z.shape) == want and bool(torch.isfinite(z).all())):
            return z.float(), True
        warnings.warn(f"ignoring the latent cache entry {folder}: it does not hold the latents of these images "
                      "under this autoencoder; they will be recomputed", stacklevel=2)
    z = encode_images(codec, images, device, progress)
    write_entry(folder, {"latents": z}, {"autoencoder_sha256": codec.sha256, "images_sha256": images_sha,
                                         "shape": list(want), "source": codec.source})
    return z, False


@dataclass
class LatentSetup:
    """What a latent run trains on: its codec (weights attached), the scaled training latents (N, C, h, w), and
    the autoencoder's weights file to write into a fresh run (None on resume: the run has it)."""

    codec: AutoencoderCodec
    latents: Tensor
    weights: bytes | None
    from_cache: bool

    def write_weights(self, run_dir: Path) -> None:
        """Put the autoencoder's weights into the run folder (atomically), if this is a fresh run."""
        if self.weights is None:
            return
        path = Path(run_dir) / WEIGHTS
        try:
            atomic_write_text(path, self.weights)
        except OSError as e:
            raise output_error(path, e) from None


def prepare_latents(cfg: RunConfig, data: ArrayDataset, run_dir: Path, device: torch.device | str = "cpu",
                    progress: bool = False) -> tuple[RunConfig, LatentSetup]:
    """A latent run's codec and training latents. A fresh run (cfg.codec = {"name": "autoencoder", "source": DIR})
    reads the autoencoder of DIR (difflab train-autoencoder), checks it reads the data's images, and fixes the
    scale s = 1 / std(E(x)) over the training images; a resumed run (its config.json's full codec) reads the
    weights copied into ``run_dir``. Returns the config with the full codec and the set-up."""
    if data.kind != "image":
        raise DifflabError(f"--autoencoder encodes images, and {data.name!r} is a set of {data.kind}: use an image "
                           "data set")
    if cfg.data.sr_scale is not None:
        raise DifflabError("--task sr conditions a pixel-space network on the low-resolution image: train it "
                           "without --autoencoder")
    if "sha256" in cfg.codec:                                              # a resumed run: its own copy
        codec = AutoencoderCodec(data.spec, cfg.codec, run_dir)
        weights = None
    else:
        from difflab.pipelines.autoencoder import load_autoencoder

        source = cfg.codec.get("source")
        if not source:
            raise DifflabError("--autoencoder needs the folder of a run of difflab train-autoencoder")
        if not Path(source).expanduser().exists():
            raise DifflabError(f"--autoencoder {source} does not exist: give the run folder of `difflab "
                               "train-autoencoder --out DIR`")
        ae = load_autoencoder(Path(source).expanduser(), device="cpu")
        check_fits(ae.module.config, data.spec, f"the autoencoder {ae.run_dir}")
        state = {k: v.detach().cpu().contiguous() for k, v in ae.module.state_dict().items()}
        weights = tensor_bytes(state, {"format": "difflab", "source": str(ae.checkpoint)})
        codec = AutoencoderCodec(data.spec, {"name": AutoencoderCodec.name, "network": ae.module.config.to_json(),
                                             "scale": 1.0, "weights": WEIGHTS, "sha256": tensors_sha256(state),
                                             "source": str(ae.checkpoint)}).attach(ae.module)
    z, hit = cached_latents(codec, data.data, device, progress=progress)
    if weights is not None:
        std = float(z.std())
        if not std > 0:
            raise DifflabError(f"the autoencoder {codec.source} maps every image to the same latent (std {std}); "
                               "train it longer or check its run")
        codec.scale = 1.0 / std
    codec.folder = Path(run_dir)
    return replace(cfg, codec=codec.config()), LatentSetup(codec, codec.scale * z, weights, hit)
