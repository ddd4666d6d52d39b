"""Condition: one value for every kind of conditioning, batched, with its null condition."""

from __future__ import annotations

import pytest
import torch

from difflab.condition import NULL_LABEL, Condition


def full() -> Condition:
    return Condition(labels=torch.tensor([0, 1, 2]), context=torch.randn(3, 4, 5),
                     context_mask=torch.ones(3, 4, dtype=torch.bool), image=torch.randn(3, 1, 2, 2))


def test_rows_are_selected_on_every_field_alike():
    c = full()
    for index in (torch.tensor([2, 0]), torch.tensor([True, False, True]), slice(0, 2)):
        rows = c[index]
        expected = torch.arange(3)[index]
        assert torch.equal(rows.labels, c.labels[expected]) and torch.equal(rows.image, c.image[expected])
        assert torch.equal(rows.context, c.context[expected]) and torch.equal(rows.context_mask, c.context_mask[expected])
    assert len(c[1]) == 1 and len(c) == 3 and Condition().batch_size is None


def test_cat_and_repeat_interleave():
    c = full()
    both = Condition.cat([c, c.null_like()])
    assert len(both) == 6 and torch.equal(both.labels, torch.tensor([0, 1, 2] + [NULL_LABEL] * 3))
    r = c.repeat_interleave(2)
    assert torch.equal(r.labels, torch.tensor([0, 0, 1, 1, 2, 2])) and torch.equal(r.image[1], c.image[0])
    with pytest.raises(ValueError, match="different fields"):
        Condition.cat([c, Condition(labels=torch.tensor([1]))])


def test_drop_replaces_chosen_rows_by_the_null_condition_and_keeps_the_image():
    c = full()
    d = c.drop(torch.tensor([True, False, True]))
    assert torch.equal(d.labels, torch.tensor([NULL_LABEL, 1, NULL_LABEL]))
    assert torch.equal(d.context_mask.any(1), torch.tensor([False, True, False]))
    assert torch.equal(d.context, c.context) and torch.equal(d.image, c.image)
    assert torch.equal(c.null_like().labels, torch.full((3,), NULL_LABEL))


@pytest.mark.parametrize("kwargs,match", [
    (dict(labels=torch.tensor([0, 1]), image=torch.randn(3, 1, 2, 2)), "batch size"),
    (dict(labels=torch.tensor([0.5])), "int64"),
    (dict(context=torch.randn(2, 3, 4)), "context_mask"),
    (dict(context_mask=torch.ones(2, 3, dtype=torch.bool)), "without context"),
    (dict(image=torch.randn(2, 4)), "image"),
])
def test_malformed_conditions_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Condition(**kwargs)
