"""The metric formulas against closed forms and hand-checked cases (features only: no networks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from difflab.errors import DifflabError
from difflab.metrics.fid import fid_bootstrap_interval, fid_from_features, frechet_distance
from difflab.metrics.inception_score import inception_score
from difflab.metrics.kid import kernel_inception_distance, mmd2_unbiased
from difflab.metrics.precision_recall import knn_radii, precision_recall


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """A (d, d) orthogonal matrix (Q of a Gaussian matrix's QR)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# --- FID -------------------------------------------------------------------------------------------------

def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((500, 16)) @ rng.standard_normal((16, 16))  # correlated
    assert abs(fid_from_features(features, features)) < 1e-6


def test_fid_of_a_set_against_itself_is_zero_when_the_covariance_is_singular():
    # 20 points in 64 dimensions: rank-19 covariance, the singular product pytorch-fid guards against.
    features = np.random.default_rng(1).standard_normal((20, 64))
    value = fid_from_features(features, features)
    assert math.isfinite(value) and abs(value) < 1e-4


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    # S1 = Q diag(a^2) Q^T, S2 = Q diag(b^2) Q^T commute, so Tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (a - b)^2;
    # the common rotation Q makes sqrtm work on full matrices.
    rng = np.random.default_rng(2)
    d = 12
    a, b = rng.uniform(0.2, 2.0, d), rng.uniform(0.2, 2.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    q = random_rotation(d, rng)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((a - b) ** 2)
    value = frechet_distance(mu1, q @ np.diag(a ** 2) @ q.T, mu2, q @ np.diag(b ** 2) @ q.T)
    assert value == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_the_closed_form_for_non_commuting_2x2_covariances():
    # For 2x2 M = S1 S2 with eigenvalues l1, l2 > 0: Tr M^1/2 = sqrt(l1) + sqrt(l2) = sqrt(tr M + 2 sqrt(det M)).
    s1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    trace_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = 8.0 + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_fid_of_samples_of_two_gaussians_matches_the_closed_form():
    # N(mu1, diag(s1^2)) vs a shifted, rescaled N(mu2, diag(s2^2)): FID = |mu1 - mu2|^2 + sum (s1 - s2)^2 = 3.851.
    # With N = 20000 per set the estimate's spread over seeds is 0.03 (measured over 20 seeds): tolerance 0.15.
    d, n = 8, 20000
    mu1, mu2 = np.zeros(d), np.linspace(-0.2, 0.8, d)
    s1, s2 = np.linspace(0.5, 1.5, d), np.linspace(1.2, 0.6, d)
    rng = np.random.default_rng(3)
    x = mu1 + s1 * rng.standard_normal((n, d))
    y = mu2 + s2 * rng.standard_normal((n, d))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    value = fid_from_features(torch.from_numpy(x).float(), torch.from_numpy(y).float())  # features as float32
    assert value == pytest.approx(expected, abs=0.15)


def test_fid_bootstrap_interval_brackets_the_spread_of_independent_estimates():
    # FID of N = 300 per set in D = 32: finite-N bias is large here, and a plain percentile interval of the
    # resampled FIDs lies entirely above every fresh estimate (measured: [2.3, 3.4] vs fresh [1.3, 1.9]).
    # The interval from one draw must hold the estimate and the median of 40 fresh draws, and be as wide
    # as their 95 % range within a factor 0.8 to 3 (measured 1.3 to 2.2 over seeds 0-5: conservative).
    d, n = 32, 300
    rng = np.random.default_rng(4)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)

    def draw() -> tuple[np.ndarray, np.ndarray]:
        return rng.standard_normal((n, d)) @ mix + 0.1, rng.standard_normal((n, d)) @ mix

    fresh = np.quantile([fid_from_features(*draw()) for _ in range(40)], [0.025, 0.5, 0.975])
    generated, reference = draw()
    low, high = fid_bootstrap_interval(generated, reference, n_resamples=100, level=0.95,
                                       rng=np.random.default_rng(0))
    assert low < fid_from_features(generated, reference) < high
    assert low < fresh[1] < high
    assert 0.8 < (high - low) / (fresh[2] - fresh[0]) < 3.0


# --- KID -------------------------------------------------------------------------------------------------

def test_mmd2_unbiased_equals_the_double_sum():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 0.5
    m, d = len(x), x.shape[1]

    def k(u: np.ndarray, v: np.ndarray) -> float:
        return (u @ v / d + 1) ** 3

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    between = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    assert mmd2_unbiased(x, y) == pytest.approx(within - 2 * between, rel=1e-12)


def test_kid_of_two_samples_of_one_distribution_is_zero_within_its_std():
    rng = np.random.default_rng(6)
    mix = rng.standard_normal((32, 32))
    x = torch.from_numpy(rng.standard_normal((2000, 32)) @ mix)
    y = torch.from_numpy(rng.standard_normal((2000, 32)) @ mix)
    mean, std = kernel_inception_distance(x, y, n_subsets=50, subset_size=500, rng=np.random.default_rng(0))
    assert std > 0
    assert abs(mean) < std


def test_kid_of_shifted_distributions_is_many_stds_above_zero():
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal((2000, 32)))
    y = torch.from_numpy(rng.standard_normal((2000, 32)) + 0.3)
    mean, std = kernel_inception_distance(x, y, n_subsets=50, subset_size=500, rng=np.random.default_rng(0))
    assert mean > 5 * std


# --- Inception Score -------------------------------------------------------------------------------------

@pytest.mark.parametrize("classes", [2, 10, 1008])
def test_inception_score_of_confident_uniform_predictions_equals_the_number_of_classes(classes):
    # One-hot p(y|x), every class equally often in every split: KL = log K for each image, IS = K exactly.
    splits = 5
    labels = torch.arange(classes * splits * 3) % classes
    probabilities = torch.nn.functional.one_hot(labels, classes).float()
    mean, std = inception_score(probabilities, splits)
    assert mean == pytest.approx(classes, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_is_one_when_predictions_carry_no_information():
    uniform = torch.full((100, 10), 0.1)
    assert inception_score(uniform, 4)[0] == pytest.approx(1.0, rel=1e-12)
    one_class = torch.nn.functional.one_hot(torch.full((100,), 3), 10).float()
    assert inception_score(one_class, 4)[0] == pytest.approx(1.0, rel=1e-12)


def test_inception_score_takes_the_marginal_within_each_split():
    # 50 confident "0" then 50 confident "1": one split sees both classes (IS 2); two splits see one each (IS 1).
    p = torch.nn.functional.one_hot(torch.arange(100) // 50, 2).double()
    assert inception_score(p, 1)[0] == pytest.approx(2.0, rel=1e-12)
    assert inception_score(p, 2)[0] == pytest.approx(1.0, rel=1e-12)


def test_inception_score_of_two_class_mixture_matches_the_formula():
    # Half the images p = (0.9, 0.1), half (0.1, 0.9): p(y) = (0.5, 0.5), KL = 0.9 log 1.8 + 0.1 log 0.2 each.
    p = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64).repeat(50, 1)
    expected = math.exp(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    assert inception_score(p, 1)[0] == pytest.approx(expected, rel=1e-12)


# --- precision / recall ----------------------------------------------------------------------------------

def test_precision_recall_of_disjoint_sets_is_zero():
    rng = torch.Generator().manual_seed(8)
    real = torch.randn(300, 16, generator=rng)
    fake = torch.randn(300, 16, generator=rng) + 100.0
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_precision_recall_of_identical_sets_is_one():
    features = torch.randn(300, 16, generator=torch.Generator().manual_seed(9)) * 5.0 + 3.0
    assert precision_recall(features, features.clone(), k=3) == (1.0, 1.0)


def test_precision_recall_of_a_hand_checked_case():
    # 1-D, k = 1. Real 0, 1, 2, 3: each ball has radius 1 (nearest other point), covering [-1, 4].
    # Fake 0.5 (inside) and 10 (outside): precision 1/2. The two fake points are each other's nearest
    # neighbour, radius 9.5: balls [-9, 10] and [0.5, 19.5] cover every real point: recall 1.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[0.5], [10.0]])
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    # A fake point exactly on a ball's boundary counts as inside (<=, as in the paper's eq. 1).
    assert precision_recall(real, torch.tensor([[4.0], [10.0]]), k=1)[0] == 0.5


def test_precision_recall_does_not_depend_on_the_block_size():
    gen = torch.Generator().manual_seed(10)
    real, fake = torch.randn(257, 8, generator=gen), torch.randn(203, 8, generator=gen) * 1.3 + 0.2
    whole = precision_recall(real, fake, k=3)
    blocked = precision_recall(real, fake, k=3, max_elements=1000)  # blocks of 3-4 rows
    assert whole == blocked
    assert 0.0 < whole[0] < 1.0 and 0.0 < whole[1] < 1.0


def test_knn_radius_is_the_kth_neighbour_not_the_point_itself():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 4.0, 16.0]  # squared distances
    assert knn_radii(points, k=3).tolist() == [49.0, 36.0, 16.0, 49.0]
    with pytest.raises(DifflabError, match="k-nearest"):
        knn_radii(points, k=4)
