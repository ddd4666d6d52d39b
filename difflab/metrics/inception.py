"""The Inception-v3 of the FID literature, in plain torch, so that numbers compare with papers.

Architecture: TensorFlow's 2015-12-05 Inception-v3 as ported by pytorch-fid (Heusel et al. 2017, FID;
Seitzer, pytorch-fid): torchvision's Inception3 layout with 1008 classes and no auxiliary head, where
  - Mixed_5b-d (A) and Mixed_6b-e (C) and Mixed_7b (E) average-pool without counting the zero padding
    (TensorFlow's behaviour), and
  - Mixed_7c (E) max-pools in its pool branch.
Module names match torchvision's, so the state dict ``pt_inception-2015-12-05-6726825d.pth`` loads key for
key. Features: the 2048-d global average pool ("pool3"); logits: the 1008-way ``fc`` (for IS).

Preprocessing as pytorch-fid: gray -> 3 channels, values clamped to [-1, 1] and rounded to 8-bit levels
(papers measure PNG files), bilinear resize to 299x299 (align_corners=False).

Weights are never downloaded: they are read from a file the user names, else from torch hub's cache
(~/.cache/torch/hub/checkpoints/), with safetensors or ``torch.load(weights_only=True)`` (no code runs).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from difflab.data.dataset import convert_channels
from difflab.errors import DifflabError, one_line
from difflab.metrics.features import DEFAULT_BATCH_SIZE, FeatureExtractor

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
INPUT_SIZE = 299
NUM_CLASSES = 1008      # the TF graph's 1008-way softmax (1000 ImageNet classes + 8 unused)
FEATURE_DIM = 2048
EXTRACTOR_NAME = "inception-v3-fid"
MAX_NAMED_KEYS = 3


class ConvBN(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3, TensorFlow's) -> ReLU; torchvision's BasicConv2d."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def tf_avg_pool(x: Tensor) -> Tensor:
    """3x3 stride-1 average pool that, like TensorFlow's, averages only the pixels inside the image."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1 (Mixed_5b-d)."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(c_in, 64, 1)
        self.branch5x5_1 = ConvBN(c_in, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(c_in, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(tf_avg_pool(x)),
        ], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool/2 (Mixed_6a)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-e)."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(c_in, 192, 1)
        self.branch7x7_1 = ConvBN(c_in, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(c_in, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(tf_avg_pool(x)),
        ], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool/2 (Mixed_7a)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(c_in, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(c_in, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs (Mixed_7b: pool="avg", Mixed_7c: pool="max", as in the FID graph)."""

    def __init__(self, c_in: int, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(c_in, 320, 1)
        self.branch3x3_1 = ConvBN(c_in, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(c_in, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(pooled),
        ], dim=1)


class FIDInceptionV3(nn.Module):
    """x (B, C, H, W) in [-1, 1], C in {1, 3} -> (pool3 features (B, 2048), logits (B, 1008))."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    @staticmethod
    def preprocess(x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, 3, 299, 299): 8-bit levels, bilinear resize (pytorch-fid)."""
        x = convert_channels(x, 3).clamp(-1, 1)
        x = torch.round((x + 1) * 127.5) / 127.5 - 1  # the values a PNG file holds
        return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.preprocess(x)                                                   # (B, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))        # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                             # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                            # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)                             # (B, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,  # -> (B, 768, 17, 17)
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):              # -> (B, 2048, 8, 8)
            x = block(x)
        features = x.mean(dim=(2, 3))                                            # (B, 2048) pool3
        return features, self.fc(features)                                       # (B, 1008)


def default_weights_path() -> Path:
    """Where torch hub (and so pytorch-fid) caches the FID weights: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def is_torch_save_file(path: Path) -> bool:
    """Whether a file looks like torch.save output: a zip archive (PyTorch >= 1.6) or a pickle (protocol >= 2)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return True                       # let the loader report the read error
    return zipfile.is_zipfile(path) or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A flat {name: tensor} dict from .safetensors or a torch.save'd state dict; never runs pickled code."""
    if path.suffix != ".safetensors" and not is_torch_save_file(path):
        raise DifflabError(f"{path}: cannot read Inception weights: not a file written by torch.save (neither a zip "
                           f"archive nor a pickle; a text or HTML page?); use {WEIGHTS_FILE} from {WEIGHTS_URL}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # what weights_only raises for anything but tensors and containers
        raise DifflabError(f"{path}: holds pickled objects other than tensors, which difflab does not load "
                           f"(that could run code); use {WEIGHTS_FILE} from {WEIGHTS_URL}") from None
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = one_line(e).split(". ")[0]
        raise DifflabError(f"{path}: cannot read Inception weights ({first}); it must be a plain state dict "
                           f"saved with torch.save or safetensors, such as {WEIGHTS_FILE}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise DifflabError(f"{path}: not a state dict of named tensors; use {WEIGHTS_FILE} from {WEIGHTS_URL}")
    return dict(state)


def _named(keys: list[str]) -> str:
    """"a, b, c and 4 more" for a sorted list of keys."""
    more = f" and {len(keys) - MAX_NAMED_KEYS} more" if len(keys) > MAX_NAMED_KEYS else ""
    return ", ".join(keys[:MAX_NAMED_KEYS]) + more


def load_inception(weights: Path | str | None = None) -> tuple[FIDInceptionV3, Path]:
    """The FID Inception-v3 with weights from ``weights`` (default: default_weights_path()), in eval mode.

    Raises a one-line DifflabError if the file is missing, unreadable, or its keys or shapes do not fit.
    """
    path = default_weights_path() if weights is None else Path(weights).expanduser()
    if not path.is_file():
        raise DifflabError(f"Inception weights not found at {path}; download {WEIGHTS_URL} (pytorch-fid's FID "
                           f"weights) to {default_weights_path()} or pass --inception-weights FILE")
    state = read_state_dict(path)
    model = FIDInceptionV3()
    own = model.state_dict()
    # BatchNorm's step counter is not a weight; files converted from TensorFlow may lack it.
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = ([f"{len(missing)} missing ({_named(missing)})"] if missing else []) + \
                ([f"{len(unexpected)} unexpected ({_named(unexpected)})"] if unexpected else [])
        raise DifflabError(f"{path}: keys do not fit the FID Inception-v3: {'; '.join(parts)}; use {WEIGHTS_FILE} "
                           f"from {WEIGHTS_URL}")
    wrong = sorted(k for k in state if state[k].shape != own[k].shape)
    if wrong:
        k = wrong[0]
        raise DifflabError(f"{path}: {len(wrong)} tensors have the wrong shape for the FID Inception-v3 (e.g. {k}: "
                           f"{tuple(state[k].shape)}, expected {tuple(own[k].shape)}); use {WEIGHTS_FILE} from "
                           f"{WEIGHTS_URL}")
    model.load_state_dict({**{k: own[k] for k in optional}, **state}, strict=True)
    return model.eval(), path


def inception_extractor(weights: Path | str | None = None, *, device: torch.device | str = "cpu",
                        batch_size: int = DEFAULT_BATCH_SIZE) -> FeatureExtractor:
    """FeatureExtractor "inception-v3-fid": 2048-d pool3 features, 1008-way probabilities."""
    model, path = load_inception(weights)
    info = {"kind": "Inception-v3 (TF 2015-12-05, pytorch-fid port)", "weights": str(path)}
    return FeatureExtractor(EXTRACTOR_NAME, model, batch_size=batch_size, device=device, info=info)
