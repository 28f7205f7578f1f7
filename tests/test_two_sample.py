"""two_sample.py: the unbiased MMD^2 and its H1 variance against brute force, the permutation
test's type-I error near alpha on same-law samples (200 tests: the rate in a binomial band)
and its power on a clear shift, kernel training raising its objective, the witness and the
detection metrics."""

from __future__ import annotations

import math

import pytest
import torch

from pflow_explore import two_sample as ts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_off_diagonal_mean_matches_a_double_loop():
    k = torch.randn(5, 5, generator=torch.Generator().manual_seed(4))
    brute = sum(float(k[i, j]) for i in range(5) for j in range(5) if i != j) / 20
    assert math.isclose(float(ts.off_diagonal_mean(k)), brute, rel_tol=1e-6)
    assert float(ts.off_diagonal_mean(k)) != float(k.mean())  # the diagonal is left out


def test_unbiased_mmd_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g) + 0.5
    k = lambda a, b: ts.gaussian_gram(a, b, 1.3)
    brute = 0.0
    for i in range(7):
        for j in range(7):
            if i != j:
                brute += k(x[i : i + 1], x[j : j + 1]) + k(y[i : i + 1], y[j : j + 1])
                brute -= k(x[i : i + 1], y[j : j + 1]) + k(x[j : j + 1], y[i : i + 1])
    mmd2, var = ts.mmd_u2_and_var(k(x, x), k(y, y), k(x, y))
    assert math.isclose(float(mmd2), float(brute) / 42, rel_tol=1e-5)
    assert float(var) >= 0
    pooled = k(torch.cat([x, y]), torch.cat([x, y]))
    kxx, kyy = k(x, x), k(y, y)
    expected = (kxx.sum() - kxx.trace()) / 42 + (kyy.sum() - kyy.trace()) / 42 - 2 * k(x, y).mean()
    assert float(ts.mmd2_from_gram(pooled, 7)) == pytest.approx(float(expected), rel=1e-5)


def test_type_one_error_near_alpha_and_power_on_a_shift():
    g = torch.Generator().manual_seed(1)
    gram = lambda a, b: ts.gaussian_gram(a, b, 1.5)
    n_tests, alpha = 200, 0.05
    pool = torch.randn(2000, 2, generator=g)
    rate = ts.rejection_rate(gram, pool, None, 15, n_tests, alpha, 60, g)
    half = 3 * math.sqrt(alpha * (1 - alpha) / n_tests)  # a 3-sigma binomial band
    assert alpha - half <= rate <= alpha + half, rate
    shifted = torch.randn(2000, 2, generator=g) + torch.tensor([1.5, 0.0])
    assert ts.rejection_rate(gram, pool, shifted, 15, 40, alpha, 60, g) > 0.8


def test_permutation_test_refuses_bad_arguments():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError):
        ts.permutation_test(lambda a, b: ts.gaussian_gram(a, b, 1.0), x, x[:1], 0.05, 10)


def test_training_raises_the_power_objective_and_the_witness_points_to_the_fakes():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(400, 6, generator=g)
    fake = torch.randn(400, 6, generator=g) * torch.tensor([1, 1, 1, 1, 1, 2.5])  # one wider axis
    torch.manual_seed(0)
    kernel = ts.DeepKernel(6, 32, 8, input_bandwidth=5.0)
    before = -float(ts.power_objective(kernel, real[300:], fake[300:]).detach())
    hist = ts.train_kernel(kernel, real[:300], fake[:300], 150, 128, 3e-3, g)
    after = -float(ts.power_objective(kernel, real[300:], fake[300:]).detach())
    assert after > before and len(hist) == 150
    tests_real = real[300:].reshape(20, 5, 6)
    tests_fake = fake[300:].reshape(20, 5, 6)
    w_real = ts.witness_scores(kernel, tests_real, real[:150], fake[:150])
    w_fake = ts.witness_scores(kernel, tests_fake, real[:150], fake[:150])
    assert ts.auroc(w_real, w_fake) > 0.8


def test_mean_embedding_gram_is_the_mean_of_frame_kernels():
    torch.manual_seed(0)
    kernel = ts.DeepKernel(3, 8, 4)
    a, b = torch.randn(2, 4, 3), torch.randn(3, 4, 3)
    gram = ts.mean_embedding_gram(kernel, 4)(a.flatten(1), b.flatten(1))
    with torch.no_grad():
        expected = kernel.gram(a[1], b[2]).mean()
    assert gram.shape == (2, 3) and torch.isclose(gram[1, 2], expected)


def test_detection_metrics_and_auroc():
    real, fake = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([2.5, 3.5, 4.0, 0.5])
    m = ts.detection_metrics(real, fake, threshold=2.2)
    assert m["recall"] == 0.75 and m["fpr"] == 0.25
    assert m["precision"] == 0.75 and m["f1"] == pytest.approx(0.75)
    from sklearn.metrics import roc_auc_score

    labels = [0] * 4 + [1] * 4
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, torch.cat([real, fake]).tolist()))
    se = ts.bootstrap_metrics(real, fake, 2.2, 50, torch.Generator().manual_seed(0))
    assert se["recall"] > 0
    gain = ts.bootstrap_gain(real, fake, 2.2, real, fake, 2.2, 20, torch.Generator().manual_seed(0))
    assert gain["f1"] == 0.0  # a detector against itself: no difference in any resample
