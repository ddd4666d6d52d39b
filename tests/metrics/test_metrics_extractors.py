"""Feature extractors (FID Inception-v3 loading, the built-in classifier), the reference-statistics cache and
the whole evaluation. Nothing is downloaded; every cache lives under a temporary folder."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.metrics import classifier, compute_metrics, reference_stats
from difflab.metrics.classifier import DigitClassifier, builtin_classifier
from difflab.metrics.evaluate import MetricOptions, build_extractor
from difflab.metrics.features import FeatureExtractor
from difflab.metrics.inception import WEIGHTS_FILE, WEIGHTS_URL, FIDInceptionV3, load_inception

# torchvision's inception_v3 has 27,161,264 parameters (its documentation); the FID network drops the
# auxiliary head (3,326,696) and has 1008 instead of 1000 classes (+8 * 2049): 23,850,960.
FID_INCEPTION_PARAMETERS = 27_161_264 - 3_326_696 + 8 * 2049
DIGITS_MIN_TEST_ACCURACY = 0.97  # measured: 1.000 on the 180 held-out digits


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Any cache a test forgets to name goes to a temporary folder, never the home folder."""
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "default_cache"))
    return tmp_path / "default_cache"


@pytest.fixture(scope="session")
def classifier_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("classifier_cache")


@pytest.fixture(scope="session")
def digits_extractor(classifier_cache) -> FeatureExtractor:
    """The built-in digits classifier, trained once per session into a temporary cache."""
    return build_extractor("builtin", "digits", cache_dir=classifier_cache)


# --- FID Inception-v3 ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_inception() -> FIDInceptionV3:
    """The FID network with seeded random weights, scaled so activations stay of order 1 through 94 convs,
    and random BatchNorm statistics, so every kind of tensor in the file matters."""
    gen = torch.Generator().manual_seed(0)
    model = FIDInceptionV3()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("conv.weight"):
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif name.endswith(("bn.weight", "bn.running_var")):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75)
            elif name.endswith(("bn.bias", "bn.running_mean")):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            elif name.startswith("fc."):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.02)
    return model.eval()


def test_fid_inception_has_the_pytorch_fid_layout(random_inception):
    state = random_inception.state_dict()
    assert sum(p.numel() for p in random_inception.parameters()) == FID_INCEPTION_PARAMETERS
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert state["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in state)


def test_inception_preprocessing_matches_pytorch_fid():
    gray = torch.linspace(-1.2, 1.2, 2 * 8 * 8).reshape(2, 1, 8, 8)
    x = FIDInceptionV3.preprocess(gray)
    assert x.shape == (2, 3, 299, 299)
    assert torch.equal(x, FIDInceptionV3.preprocess(gray.expand(-1, 3, -1, -1)))  # gray = RGB with equal channels
    assert x.min() >= -1 and x.max() <= 1
    # A constant image stays constant through the bilinear resize, at its 8-bit level: 0.3 -> round(165.75) = 166.
    flat = FIDInceptionV3.preprocess(torch.full((1, 3, 32, 32), 0.3))
    assert torch.allclose(flat, torch.full_like(flat, 166 / 127.5 - 1), atol=1e-6)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_inception_weights_load_from_a_file_and_give_identical_features(random_inception, tmp_path, suffix):
    path = tmp_path / f"inception{suffix}"
    state = random_inception.state_dict()
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    extractor = build_extractor("inception", inception_weights=path, batch_size=2)
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    extracted = extractor.extract(images)
    with torch.no_grad():
        features, logits = random_inception(images)
    assert extracted.features.shape == (3, 2048) and extracted.probabilities.shape == (3, 1008)
    assert torch.equal(extracted.features, features)
    assert torch.allclose(extracted.probabilities, torch.softmax(logits.double(), 1).float())
    assert features.std() > 1e-2  # the weights reach the output: a test of loading, not of zeros
    assert extractor.info["weights"] == str(path)


def test_inception_weights_may_lack_batchnorm_counters(random_inception, tmp_path):
    # The weights converted from TensorFlow need not carry num_batches_tracked; it is not a weight.
    state = {k: v for k, v in random_inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "no_counters.pth"
    torch.save(state, path)
    model, _ = load_inception(path)
    assert torch.equal(model.fc.weight, random_inception.fc.weight)


def test_missing_inception_weights_say_where_to_put_them(tmp_path):
    path = tmp_path / "nowhere" / WEIGHTS_FILE
    with pytest.raises(DifflabError) as info:
        load_inception(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and WEIGHTS_URL in message and "--inception-weights" in message


def test_missing_default_inception_weights_name_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(DifflabError, match=str(tmp_path / "torch_home" / "hub" / "checkpoints" / WEIGHTS_FILE)):
        build_extractor("inception")


def test_inception_weights_with_wrong_keys_are_refused(random_inception, tmp_path):
    state = dict(random_inception.state_dict())
    del state["fc.bias"]
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    path = tmp_path / "torchvision_like.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(DifflabError, match=r"keys do not fit.*1 missing \(fc.bias\).*1 unexpected \(AuxLogits"):
        load_inception(path)


def test_inception_weights_with_wrong_shapes_are_refused(random_inception, tmp_path):
    state = dict(random_inception.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # ImageNet's 1000 classes
    path = tmp_path / "thousand_classes.pth"
    torch.save(state, path)
    with pytest.raises(DifflabError, match=r"wrong shape.*fc.(bias|weight)"):
        load_inception(path)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_inception_weights_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "malicious.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": _Payload(marker)}, f, protocol=2)
    with pytest.raises(DifflabError, match="pickled objects other than tensors"):
        load_inception(path)
    assert not marker.exists()
    path.write_bytes(b"")  # and a file that is no state dict at all
    with pytest.raises(DifflabError, match="cannot read Inception weights"):
        load_inception(path)


# --- the built-in classifier -----------------------------------------------------------------------------

def test_builtin_digits_classifier_reaches_its_held_out_accuracy(digits_extractor):
    info = digits_extractor.info
    assert info["n_test"] == 180 and info["n_train"] == 1617
    assert info["test_accuracy"] >= DIGITS_MIN_TEST_ACCURACY
    assert digits_extractor.name == "builtin-digits"


def test_builtin_classifier_is_read_back_from_its_cache(digits_extractor, classifier_cache, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been read, not retrained")

    monkeypatch.setattr(classifier, "train_classifier", no_training)
    model, info = builtin_classifier("digits", cache_dir=classifier_cache)
    assert info == digits_extractor.info
    images = load_dataset("digits", split="test").data
    assert torch.equal(digits_extractor.features(images), FeatureExtractor("again", model).features(images))


def test_builtin_classifier_features_accept_other_sizes_and_rgb(digits_extractor):
    images = load_dataset("digits", split="test", image_size=16, channels=3).data
    extracted = digits_extractor.extract(images)
    assert extracted.features.shape == (180, 128) and extracted.probabilities.shape == (180, 10)
    labels = load_dataset("digits", split="test").labels
    assert (extracted.probabilities.argmax(1) == labels).float().mean() > 0.9


def test_builtin_features_exist_only_for_the_builtin_sets():
    with pytest.raises(DifflabError, match="--features inception"):
        build_extractor("builtin", "moons")
    with pytest.raises(DifflabError, match="builtin, inception"):
        build_extractor("clip", "digits")


# --- the reference-statistics cache ----------------------------------------------------------------------

def counting_extractor(name: str, seed: int) -> tuple[FeatureExtractor, list[int]]:
    """An untrained digits CNN (seeded) as an extractor, and a list that grows by one per forward call."""
    torch.manual_seed(seed)
    extractor = FeatureExtractor(name, DigitClassifier(8, (8, 8, 16)), batch_size=500)
    calls: list[int] = []
    extractor.network.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    return extractor, calls


def test_reference_statistics_are_computed_once_then_read_from_the_cache(tmp_path):
    extractor, calls = counting_extractor("counting", seed=0)
    first = reference_stats(extractor, "digits", split="train", cache_dir=tmp_path)
    assert sum(calls) == 1617 and not first.from_cache
    second = reference_stats(extractor, "digits", split="train", cache_dir=tmp_path)
    assert sum(calls) == 1617 and second.from_cache  # no image went through the network again
    assert torch.equal(first.features, second.features)
    assert (first.mu == second.mu).all() and (first.sigma == second.sigma).all()
    assert first.mu.shape == (16,) and first.sigma.shape == (16, 16)
    assert len(list((tmp_path / "reference_stats").iterdir())) == 1


def test_a_changed_extractor_or_split_gets_a_new_cache_entry(tmp_path):
    extractor, calls = counting_extractor("counting", seed=0)
    base = reference_stats(extractor, "digits", cache_dir=tmp_path)
    retrained, retrained_calls = counting_extractor("counting", seed=1)  # same name, other weights
    other = reference_stats(retrained, "digits", cache_dir=tmp_path)
    assert sum(retrained_calls) == 1617 and not other.from_cache and other.key != base.key
    test_split = reference_stats(extractor, "digits", split="test", cache_dir=tmp_path)
    assert not test_split.from_cache and len(test_split.features) == 180
    assert len(list((tmp_path / "reference_stats").iterdir())) == 3


def test_a_damaged_cache_entry_is_recomputed(tmp_path):
    extractor, calls = counting_extractor("counting", seed=0)
    reference_stats(extractor, "digits", split="test", cache_dir=tmp_path)
    (entry,) = (tmp_path / "reference_stats").iterdir()
    (entry / "tensors.safetensors").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="damaged cache entry"):
        again = reference_stats(extractor, "digits", split="test", cache_dir=tmp_path)
    assert not again.from_cache and sum(calls) == 2 * 180
    assert reference_stats(extractor, "digits", split="test", cache_dir=tmp_path).from_cache  # rewritten


# --- the whole evaluation --------------------------------------------------------------------------------

def test_compute_metrics_of_real_digits_beats_noise(digits_extractor, tmp_path):
    options = MetricOptions(fid_resamples=20)
    real = load_dataset("digits", split="test").data
    report = compute_metrics(real, digits_extractor, "digits", options=options, cache_dir=tmp_path)
    noise = torch.rand(180, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = compute_metrics(noise, digits_extractor, "digits", options=options, cache_dir=tmp_path)

    assert (report.n_generated, report.n_reference, report.reference) == (180, 1617, "digits/train")
    assert report.extractor == "builtin-digits" and report.extractor_info["test_accuracy"] >= 0.97
    assert report.fid_interval[0] <= report.fid_interval[1] and report.fid_resamples == 20
    assert report.kid_subset_size == 180 and report.is_splits == 10 and report.pr_k == 3
    # Held-out digits against the training digits: close; uniform noise: far.
    assert report.fid < bad.fid / 10 and report.kid_mean < bad.kid_mean / 10
    assert report.precision > 0.7 and report.recall > 0.7
    # Noise covers little of the digits (recall); some of it falls in the wide balls of outlying digits.
    assert bad.recall < 0.2 and bad.precision < report.precision / 2
    assert report.is_mean > 5 and bad.is_mean < report.is_mean
    assert json.loads(report.to_json())["fid_interval"] == list(report.fid_interval)
    table = report.table()
    assert "180 generated vs 1617 reference images (digits/train)" in table and "builtin-digits" in table
    assert all(name in table for name in ("FID", "KID", "IS", "precision", "recall", "95% CI"))
