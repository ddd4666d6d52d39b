"""The measurement operators: dense matrix = forward map, adjoint identity, shapes, masks, noise, baselines."""

from __future__ import annotations

import pytest
import torch

from difflab.errors import DifflabError
from difflab.operators import TASKS, GaussianBlur, build_operator

SHAPES = [(1, 8, 8), (3, 8, 8)]
INPAINT = [t for t in TASKS if t.startswith("inpaint")]


def images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("task", TASKS)
def test_the_matrix_agrees_with_the_forward_map(task, shape):
    op = build_operator(task, shape, seed=1)
    x = images(3, shape)
    A = op.matrix(shape)
    assert A.dtype == torch.float64 and A.shape[1] == x[0].numel()
    assert torch.allclose(op(x).reshape(3, -1), x.reshape(3, -1) @ A.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("task", TASKS)
def test_the_adjoint_satisfies_the_inner_product_identity(task, shape):
    """<A x, y> = <x, A^T y> per image, with a mask per image for inpaint-random."""
    op = build_operator(task, shape, n=2, seed=1)
    x = images(2, shape, seed=2)
    y = torch.randn(op(x).shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lhs = (op(x) * y).flatten(1).sum(1)
    rhs = (x * op.adjoint(y, shape)).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("task", TASKS)
def test_measurement_shapes(task, shape):
    C = shape[0]
    expected = {"sr2": (2, C, 4, 4), "sr4": (2, C, 2, 2)}.get(task, (2, C, 8, 8))
    assert build_operator(task, shape, n=2)(images(2, shape)).shape == expected


def test_random_masks_differ_per_image_remove_the_fraction_and_follow_the_seed():
    shape, n, fraction = (1, 8, 8), 4, 0.7
    masks = build_operator("inpaint-random", shape, n, seed=5, fraction=fraction).mask
    assert masks.shape == (n, 1, 8, 8) and masks.dtype == torch.bool
    assert ((~masks).flatten(1).sum(1) == round(fraction * 64)).all()
    assert len({tuple(m.flatten().tolist()) for m in masks}) == n
    assert torch.equal(masks, build_operator("inpaint-random", shape, n, seed=5, fraction=fraction).mask)
    assert not torch.equal(masks, build_operator("inpaint-random", shape, n, seed=6, fraction=fraction).mask)
    # image i's mask does not depend on how many images there are
    assert torch.equal(masks[:2], build_operator("inpaint-random", shape, 2, seed=5, fraction=fraction).mask)


@pytest.mark.parametrize("task", TASKS)
def test_measure_adds_noise_only_where_something_is_measured(task):
    shape = (3, 8, 8)
    op = build_operator(task, shape, n=2, seed=1)
    x = images(2, shape)
    Ax = op(x)
    assert torch.equal(op.measure(x, 0.0), Ax)
    noise = torch.randn(Ax.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = op.measure(x, 0.1, noise)
    if op.mask is None:
        assert torch.allclose(y - Ax, 0.1 * noise, rtol=0, atol=1e-15)
    else:
        known = op.mask.expand_as(y)
        assert (y[~known] == 0).all()
        assert torch.allclose((y - Ax)[known], 0.1 * noise[known], rtol=0, atol=1e-15)
        assert torch.equal(op.residual(y, x), (0.1 * noise * known).flatten(1).norm(dim=1))
    with pytest.raises(ValueError, match="noise"):
        op.measure(x, 0.1)


def test_rows_slice_the_masks_of_each_image():
    shape = (3, 8, 8)
    op = build_operator("inpaint-random", shape, n=4, seed=2)
    x = images(4, shape)
    part = op.rows(slice(1, 3))
    assert torch.equal(part.mask, op.mask[1:3])
    assert torch.equal(part(x[1:3]), op(x)[1:3])
    single = build_operator("inpaint-box", shape, n=4)
    assert torch.equal(single.rows(slice(1, 3))(x[1:3]), single(x)[1:3])


@pytest.mark.parametrize("task", INPAINT)
def test_the_inpainting_baseline_fills_the_gap_with_the_mean_of_the_measured_pixels(task):
    shape = (3, 8, 8)
    op = build_operator(task, shape, n=2, seed=3)
    x = images(2, shape)
    y = op(x)
    base = op.baseline(y, shape)
    known = op.mask.expand_as(y)
    assert torch.equal(base[known], x[known])
    for i in range(2):
        for c in range(3):
            k = known[i, c]
            mean = x[i, c][k].mean()
            assert torch.allclose(base[i, c][~k], mean.expand(int((~k).sum())), rtol=0, atol=1e-12)


@pytest.mark.parametrize("task", ["sr2", "sr4"])
def test_the_super_resolution_baseline_has_the_image_shape(task):
    shape = (3, 8, 8)
    op = build_operator(task, shape)
    x = torch.full((2, *shape), 0.25, dtype=torch.float64)
    base = op.baseline(op(x), shape)
    assert base.shape == (2, *shape)
    assert torch.allclose(base, x, rtol=0, atol=1e-12)                  # a constant image upsamples to itself


@pytest.mark.parametrize("task", ["denoise", "blur"])
def test_the_baseline_of_an_image_measurement_is_the_measurement(task):
    op = build_operator(task, (1, 8, 8))
    y = images(2, (1, 8, 8))
    assert torch.equal(op.baseline(y, (1, 8, 8)), y)


@pytest.mark.parametrize("size, width", [(1, 1.0), (3, 0.5), (5, 1.0), (7, 3.0)])
def test_a_blur_kernel_sums_to_one(size, width):
    k = GaussianBlur(size, width).kernel(torch.float64, torch.device("cpu"))
    assert k.shape == (size, size) and k.sum().item() == pytest.approx(1.0, abs=1e-14)
    assert torch.equal(k, k.T) and torch.equal(k, k.flip(0))


@pytest.mark.parametrize("call, match", [
    (lambda: build_operator("sr4", (1, 10, 10)), "use sr2"),
    (lambda: build_operator("deblur", (1, 8, 8)), "choose one of"),
    (lambda: build_operator("blur", (1, 8, 8), blur_size=4), "odd"),
    (lambda: build_operator("blur", (1, 8, 8), blur_width=0.0), "blur-width"),
    (lambda: build_operator("inpaint-random", (1, 8, 8), fraction=1.0), "fraction"),
])
def test_bad_options_are_one_line_errors(call, match):
    with pytest.raises(DifflabError, match=match) as error:
        call()
    assert "\n" not in str(error.value)
