"""Text prompts turned into a Condition at the edge (shared/DESIGN.md "condition"): a frozen encoder gives the
token embeddings and mask a network's cross-attention reads; captions come from labels or an image folder.

    encoder.py    TextEncoder: a frozen Hugging Face encoder from a local folder; "" is the null condition
    captions.py   captions for digit labels, and an image folder's metadata.jsonl

The encoder needs the optional extra ``pip install "difflab[text]"``; it is imported only when loaded.
"""

from difflab.text.captions import CAPTION_TEMPLATES, DIGIT_WORDS, digit_captions, read_metadata_captions
from difflab.text.encoder import DEFAULT_MAX_TOKENS, DEFAULT_TEXT_ENCODER, TextEncoder

__all__ = ["CAPTION_TEMPLATES", "DEFAULT_MAX_TOKENS", "DEFAULT_TEXT_ENCODER", "DIGIT_WORDS", "TextEncoder",
           "digit_captions", "read_metadata_captions"]
