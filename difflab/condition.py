"""What a model is conditioned on, as one typed value that data, objectives, denoisers and samplers pass
along without looking inside; only networks read it.

    Condition(labels=(B,) int64)                         class labels; NULL_LABEL (-1) means "no label"
    Condition(context=(B, L, E), context_mask=(B, L))    token embeddings (e.g. of a prompt), mask True = token
    Condition(image=(B, C, H, W))                        channels concatenated to the network's input
                                                         (a low-resolution image for super-resolution)

Every field is optional and batched along dim 0. The null condition, what a conditional model sees when it is
run unconditionally, is part of the type: labels become NULL_LABEL and the context is masked out; an image
stays, since it is the input being restored rather than a choice of what to generate.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Sequence

import torch
from torch import Tensor

NULL_LABEL = -1


@dataclass(frozen=True, eq=False)   # eq=False: a field-wise __eq__ on tensors would raise, not compare
class Condition:
    labels: Tensor | None = None          # (B,) int64 in [0, K) or NULL_LABEL
    context: Tensor | None = None         # (B, L, E) float
    context_mask: Tensor | None = None    # (B, L) bool, True where context holds a token
    image: Tensor | None = None           # (B, C, H, W) float

    def __post_init__(self) -> None:
        sizes = {f.name: t.shape[0] for f in fields(self) if (t := getattr(self, f.name)) is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"condition fields disagree on the batch size: {sizes}")
        if self.labels is not None and (self.labels.ndim != 1 or self.labels.dtype != torch.int64):
            raise ValueError(f"labels must be (B,) int64, got {tuple(self.labels.shape)} {self.labels.dtype}")
        if self.context is not None:
            if self.context.ndim != 3:
                raise ValueError(f"context must be (B, L, E), got {tuple(self.context.shape)}")
            if self.context_mask is None or self.context_mask.shape != self.context.shape[:2]:
                raise ValueError("context needs a (B, L) context_mask")
        elif self.context_mask is not None:
            raise ValueError("context_mask without context")
        if self.image is not None and self.image.ndim != 4:
            raise ValueError(f"image must be (B, C, H, W), got {tuple(self.image.shape)}")

    # --- batch operations: the same on every field ------------------------------------------------
    def _map(self, fn: Callable[[Tensor], Tensor]) -> Condition:
        return Condition(**{f.name: None if (t := getattr(self, f.name)) is None else fn(t) for f in fields(self)})

    @property
    def batch_size(self) -> int | None:
        """B, or None for an empty condition."""
        present = [t for f in fields(self) if (t := getattr(self, f.name)) is not None]
        return present[0].shape[0] if present else None

    def __len__(self) -> int:
        return self.batch_size or 0

    def __getitem__(self, index: Tensor | slice | int) -> Condition:
        """The rows ``index`` selects (a slice, an index tensor or a bool mask)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda t: t[index.to(t.device) if isinstance(index, Tensor) else index])

    def to(self, device: torch.device | str) -> Condition:
        return self._map(lambda t: t.to(device))

    def repeat_interleave(self, repeats: int) -> Condition:
        """Each row repeated ``repeats`` times in place (row i becomes rows i*r .. i*r + r - 1)."""
        return self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    @staticmethod
    def cat(conditions: Sequence[Condition]) -> Condition:
        """Rows of several conditions stacked along the batch (they must carry the same fields)."""
        present = [{f.name for f in fields(c) if getattr(c, f.name) is not None} for c in conditions]
        if any(p != present[0] for p in present):
            raise ValueError("conditions to concatenate carry different fields")
        return Condition(**{name: torch.cat([getattr(c, name) for c in conditions]) for name in present[0]})

    def without_labels(self) -> Condition | None:
        """The same condition without its labels (None if nothing else is left): what an unconditional model
        steered by a classifier reads."""
        rest = replace(self, labels=None)
        return rest if rest.batch_size is not None else None

    # --- the null condition ---------------------------------------------------------------------------
    def null_like(self) -> Condition:
        """The same batch with no label and no context (see the module docstring)."""
        return self.drop(torch.ones(len(self), dtype=torch.bool))

    def drop(self, mask: Tensor) -> Condition:
        """Rows where ``mask`` (B,) bool is True replaced by the null condition (classifier-free training)."""
        labels, context_mask = self.labels, self.context_mask
        if labels is not None:
            labels = torch.where(mask.to(labels.device), torch.full_like(labels, NULL_LABEL), labels)
        if context_mask is not None:
            context_mask = context_mask & ~mask.to(context_mask.device)[:, None]
        return replace(self, labels=labels, context_mask=context_mask)


def check_condition(cond: Condition | None, reader: str, labels: bool = False, context: bool = False,
                    image: bool = False) -> None:
    """Raise ValueError if ``cond`` carries a field that ``reader`` (a network, an exact model) was not built to
    read (``labels``, ``context``, ``image``: whether it reads them)."""
    if cond is None:
        return
    unread = [name for name, present, read in (("labels", cond.labels is not None, labels),
                                               ("context", cond.context is not None, context),
                                               ("image", cond.image is not None, image)) if present and not read]
    if unread:
        raise ValueError(f"this {reader} was not built to read the condition's {', '.join(unread)}")
