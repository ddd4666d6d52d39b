"""DataSpec: the data description a run records once."""

from __future__ import annotations

import json

import pytest
import torch

from difflab.dataspec import DataSpec


def test_what_a_spec_says():
    pixels, latents, points = DataSpec.pixels(3, 8, 8), DataSpec("latents", (4, 2, 2)), DataSpec.points(2)
    assert pixels.clip_range == (-1.0, 1.0) and latents.clip_range is None and points.clip_range is None
    assert (pixels.layout, latents.layout, points.layout) == ("image", "image", "vector")


@pytest.mark.parametrize("spec", [DataSpec.pixels(1, 8, 8), DataSpec("latents", (4, 2, 2)), DataSpec.points(5)])
def test_json_round_trip(spec):
    assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("kind,shape", [("pixels", (8, 8)), ("points", (2, 2)), ("voxels", (1,)), ("pixels", (0, 8, 8))])
def test_bad_specs_are_refused(kind, shape):
    with pytest.raises(ValueError):
        DataSpec(kind, shape)


def test_check_names_the_mismatch():
    DataSpec.points(2).check(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"points \(3,\)"):
        DataSpec.points(3).check(torch.zeros(5, 2))
