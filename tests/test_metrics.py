"""Metrics behave as metrics must: closed forms, monotonicity, collapse detection, `evaluate` rebuilt from its parts,
and the shipped classifiers' targets (their cards are re-measured in test_cards.py)."""
import math

import numpy as np
import pytest
import torch

from opengen.core import make_generator
from opengen.data import load_dataset, to_pixel_range
from opengen.metrics import (InceptionUnavailable, RealData, add_noise, classifier_features,
                             classifier_logits_and_features, conditional_accuracy, diversity, draw_samples, evaluate,
                             feature_stats, frechet_distance, inception_features, inception_model, measure,
                             precision_recall, real_images, real_stats, reference_row, results_table)
from shipped import shipped

TARGETS = {'mnist': 0.993, 'fashion': 0.91}


@pytest.mark.xdist_group('cheap')
@pytest.mark.parametrize('ds', ['mnist', 'fashion'])
def test_shipped_classifiers_reach_their_targets(ds):
    "The card's accuracy on all 10,000 test images (the card test re-measures it from the first 1,000, exactly there) reaches the target."
    acc = shipped(f'classifier_{ds}').meta['metrics']['test_accuracy']
    assert acc >= TARGETS[ds], f'{ds} classifier: {acc:.4f} < {TARGETS[ds]}'


def _rot(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def test_frechet_distance_is_the_closed_form_of_two_gaussians():
    "d² = |mu_a - mu_b|² + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), on exact statistics (no sampling)."
    mu_a, mu_b = np.array([1., -2.]), np.array([-0.5, 0.5])
    # independent coordinates: the sum of the 1-D distances (mu_a - mu_b)² + (sd_a - sd_b)²
    d = frechet_distance((np.array([1., 0.]), np.diag([4., 1.])), (np.array([-1., 0.]), np.diag([0.25, 1.])))
    assert abs(d - (4 + 1.5 ** 2)) < 1e-9, d
    # commuting covariances (same eigenvectors): the trace term is sum (sqrt(l_a) - sqrt(l_b))²
    R = _rot(0.7)
    Sa, Sb = R @ np.diag([4., 1.]) @ R.T, R @ np.diag([0.25, 9.]) @ R.T
    expected = np.sum((mu_a - mu_b) ** 2) + (2 - 0.5) ** 2 + (1 - 3) ** 2
    assert abs(frechet_distance((mu_a, Sa), (mu_b, Sb)) - expected) < 1e-8
    # non-commuting 2x2: Tr (Sa Sb)^(1/2) = sqrt(Tr(Sa Sb) + 2 sqrt(det(Sa Sb))) (its eigenvalues are real and positive)
    Sb = _rot(-0.3) @ np.diag([0.5, 3.]) @ _rot(-0.3).T
    M = Sa @ Sb
    tr_sqrt = math.sqrt(np.trace(M) + 2 * math.sqrt(np.linalg.det(M)))
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(Sa) + np.trace(Sb) - 2 * tr_sqrt
    assert abs(frechet_distance((mu_a, Sa), (mu_b, Sb)) - expected) < 1e-8
    # equal Gaussians are at distance 0, and the distance is symmetric
    assert abs(frechet_distance((mu_a, Sa), (mu_a, Sa))) < 1e-9
    assert abs(frechet_distance((mu_a, Sa), (mu_b, Sb)) - frechet_distance((mu_b, Sb), (mu_a, Sa))) < 1e-8


def test_feature_stats_are_mean_and_unbiased_covariance():
    f = np.random.default_rng(0).normal(size=(50, 3))
    mu, sigma = feature_stats(f)
    assert np.allclose(mu, f.mean(0)) and np.allclose(sigma, (f - mu).T @ (f - mu) / 49)
    with pytest.raises(ValueError, match='N>=2'): feature_stats(f[:1])


def test_real_vs_real_far_below_real_vs_noise():
    real = frechet_distance(feature_stats(classifier_features(real_images('mnist', n=1000, split='train'))), real_stats('mnist'))
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    fake = frechet_distance(feature_stats(classifier_features(noise)), real_stats('mnist'))
    assert real * 50 < fake


def test_fid_rises_monotonically_with_noise():
    x = real_images('mnist', n=1000, split='train')
    fids = [frechet_distance(feature_stats(classifier_features(add_noise(x, s))), real_stats('mnist'))
            for s in (0, 0.1, 0.2, 0.4, 0.8)]
    assert all(np.diff(fids) > 0), fids


def test_random_inception_pipeline():
    "Grey images reach the network as 3 equal channels at 299 x 299; the features are finite; FID of noisy vs clean is > 0."
    model = inception_model('random')
    x = real_images('mnist', n=4)
    seen = {}
    h = model.blocks[0][0].register_forward_hook(lambda m, i, o: seen.update({'in': i[0]}))   # returns None: output untouched
    f = inception_features(x, model, bs=4); h.remove()
    assert f.shape == (4, 2048) and np.isfinite(f).all()
    assert seen['in'].shape == (4, 3, 299, 299) and torch.equal(seen['in'][:, 0], seen['in'][:, 2])
    fy = inception_features(add_noise(x, 0.3), model, bs=4)
    fid = frechet_distance(feature_stats(np.concatenate([f, f])), feature_stats(np.concatenate([fy, fy])))
    assert np.isfinite(fid) and fid > 0


def test_inception_without_weights_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv('OPENGEN_FID_WEIGHTS', str(tmp_path / 'missing.pth'))
    with pytest.raises(InceptionUnavailable, match='does not exist'): inception_model()


def test_conditional_accuracy_counts_hits_per_class():
    te = load_dataset('mnist', 'test')
    x, y = to_pixel_range(te.x[:500]), te.y[:500]
    pred = classifier_logits_and_features(x)[0].argmax(1)
    r = conditional_accuracy(x, y)
    assert abs(r['accuracy'] - (pred == y).float().mean().item()) < 1e-9 and r['accuracy'] > 0.98
    wrong = (y + 1) % 10                                                       # asking for the next digit: almost never right
    r = conditional_accuracy(x, wrong)
    assert r['accuracy'] < 0.02 and set(r['per_class']) == set(range(10))
    assert abs(r['per_class'][3] - (pred[wrong == 3] == 3).float().mean().item()) < 1e-9


def test_precision_recall_real_vs_real_near_one_and_collapse_detected():
    real = classifier_features(real_images('mnist', n=1000, split='test'))
    train = classifier_features(real_images('mnist', n=1000, split='train'))
    p, r = precision_recall(real, train)
    assert p > 0.8 and r > 0.8, (p, r)
    collapsed = np.repeat(train[:100], 10, axis=0)                             # 100 real images, each 10 times
    p, r = precision_recall(real, collapsed)
    assert p > 0.7 and r < 0.05, (p, r)                                        # realistic, but covers nothing
    off = train + 10 * np.abs(train).max()                                     # far from every real image
    p, r = precision_recall(real, off)
    assert p == 0 and r == 0, (p, r)


def test_diversity_of_real_is_one_and_of_copies_zero():
    lab = torch.arange(500) % 10
    assert abs(diversity(real_images('mnist', lab, split='train'), lab) - 1) < 0.05
    assert diversity(real_images('mnist', lab[:10], split='train')[lab], lab) == 0


def test_evaluate_is_its_parts_and_is_seeded():
    "`evaluate(RealData)` rebuilt by hand from the documented recipe: seeded batches of 250, test-split reference."
    n, bs = 500, 250
    g = make_generator(0)
    labels = torch.arange(n) % 10
    x = torch.cat([real_images('mnist', labels[i:i + bs], split='train', seed=int(torch.randint(0, 2**31, (), generator=g)))
                   for i in range(0, n, bs)])
    logits, feats = classifier_logits_and_features(x)
    p, r = precision_recall(classifier_features(real_images('mnist', n=n, split='test', seed=1)), feats.double().numpy())
    expected = {'fid_clf': frechet_distance(feature_stats(feats.double().numpy()), real_stats('mnist')),
                'precision': p, 'recall': r, 'accuracy': (logits.argmax(1) == labels).float().mean().item(),
                'diversity': diversity(x, labels, seed=2)}
    a = evaluate(RealData('mnist'), 'mnist', n)
    for k, v in expected.items(): assert abs(a[k] - v) < 1e-9, (k, a[k], v)
    assert reference_row('mnist', n)['fid_clf'] == a['fid_clf']                # the reference row is this evaluation
    b = evaluate(RealData('mnist'), 'mnist', n)
    assert all(a[k] == b[k] for k in expected)                                 # same seed, same numbers
    assert evaluate(RealData('mnist'), 'mnist', n, seed=1)['fid_clf'] != a['fid_clf']
    assert a['accuracy'] > 0.98 and a['fid_clf'] < 2                          # real-vs-real FID at n = 500 is ~1.2 (the n-bias)
    assert list(results_table({'again': a}).index) == ['real data (reference)', 'again']


@pytest.mark.xdist_group('cheap')
def test_a_smaller_evaluation_is_a_prefix_of_a_larger_one():
    "What the card tests rely on: the first m samples of an evaluation at n are those of an evaluation at m."
    m = shipped('cgan_mnist')
    x1, y1, _ = draw_samples(m, 500)
    x2, y2, _ = draw_samples(m, 250)
    assert torch.equal(x1[:250], x2) and torch.equal(y1[:250], y2)
    r = evaluate(m, 'mnist', 250)
    assert all(r[k] == v for k, v in measure(x2, y2).items()), r


def test_evaluate_rejects_bad_samples():
    class Bad:
        def sample(self, n, *, generator=None): return torch.rand(n, 1, 28, 28) * 2 - 1   # [-1, 1]
    with pytest.raises(ValueError, match=r'\[0, 1\]'): evaluate(Bad(), 'mnist', 100)
    class Short:
        def sample(self, n, *, generator=None): return torch.rand(n - 1, 1, 28, 28)
    with pytest.raises(ValueError, match='expected 100'): evaluate(Short(), 'mnist', 100)


# ---- KID, the classifier score and bootstrap intervals (issue 22) ----
from opengen.metrics import METRICS_WITH_INTERVALS, bootstrap_intervals, classifier_score, kid, polynomial_kernel  # noqa: E402


def test_kid_is_the_unbiased_mmd_of_its_definition():
    "KID against the pair sums written out: within-set means over distinct pairs, the cross mean over all pairs."
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g).double(), torch.randn(6, 5, generator=g).double() + 0.3
    k = lambda u, v: (u @ v / 5 + 1) ** 3
    within = lambda s: sum(k(s[i], s[j]) for i in range(len(s)) for j in range(len(s)) if i != j) / (len(s) * (len(s) - 1))
    cross = sum(k(u, v) for u in a for v in b) / (len(a) * len(b))
    assert abs(kid(a.numpy(), b.numpy()) - (within(a) + within(b) - 2 * cross).item()) < 1e-9
    assert torch.allclose(polynomial_kernel(a, b), k(a, b.T))
    with pytest.raises(ValueError, match='at least 2'): kid(a[:1], b)


@pytest.mark.xdist_group('cheap')
def test_kid_of_real_vs_real_is_near_zero_with_both_signs():
    draws = [kid(classifier_features(real_images('mnist', n=200, split='test', seed=s)),
                 classifier_features(real_images('mnist', n=200, split='train', seed=s))) for s in range(10)]
    assert min(draws) < 0 < max(draws), draws                     # unbiased: it scatters around 0, a biased MMD² would not
    assert abs(np.mean(draws)) < 0.01, draws
    collapsed = classifier_features(real_images('mnist', torch.arange(10), split='train').repeat(20, 1, 1, 1))
    # a set of ten repeated digits sits far outside that scatter (ten standard deviations above it)
    assert kid(classifier_features(real_images('mnist', n=200, split='test')), collapsed) > np.mean(draws) + 10 * np.std(draws)


def test_classifier_score_spans_one_to_the_number_of_classes():
    one_class = torch.zeros(100, 10); one_class[:, 3] = 30.
    uniform = torch.zeros(100, 10)
    balanced = torch.zeros(100, 10); balanced[torch.arange(100), torch.arange(100) % 10] = 30.
    half = torch.zeros(100, 10); half[torch.arange(100), torch.arange(100) % 5] = 30.   # confident, five classes
    assert abs(classifier_score(one_class) - 1) < 1e-6 and abs(classifier_score(uniform) - 1) < 1e-6
    assert abs(classifier_score(balanced) - 10) < 1e-3 and abs(classifier_score(half) - 5) < 1e-3


@pytest.mark.xdist_group('cheap')
def test_the_real_vs_real_intervals_cover_the_reference():
    "Another real set's 95 % intervals contain the real-data reference row (the bias shift is what makes FID's do)."
    ref = reference_row('mnist', 1000)
    x, y, _ = draw_samples(RealData('mnist'), 1000, seed=1)
    ci = bootstrap_intervals(x, y, 'mnist', n_boot=100, seed=1)
    point = measure(x, y, 'mnist', seed=1)
    for key in ('fid_clf', 'kid', 'precision', 'recall', 'is_clf', 'diversity'):
        lo, hi = ci[key]
        assert lo <= ref[key] <= hi, (key, ci[key], ref[key])
        assert lo <= point[key] <= hi and hi - lo > 0, (key, ci[key], point[key])
    assert ci['fid_clf'][1] - ci['fid_clf'][0] < 2 * point['fid_clf']   # an interval, not everything
    assert set(METRICS_WITH_INTERVALS) <= set(ci)


@pytest.mark.xdist_group('cheap')
def test_intervals_separate_a_damaged_set_and_reach_evaluate():
    "Real images with noise: their FID interval lies wholly above the real set's, and `evaluate(intervals=...)` puts it in res['ci']."
    x, y, _ = draw_samples(RealData('mnist'), 500, seed=1)
    clean = bootstrap_intervals(x, y, 'mnist', n_boot=50, seed=1)
    noisy = bootstrap_intervals(add_noise(x, 0.3), y, 'mnist', n_boot=50, seed=1)
    assert noisy['fid_clf'][0] > clean['fid_clf'][1] and noisy['precision'][1] < clean['precision'][0]
    r = evaluate(RealData('mnist'), 'mnist', 200, intervals=20)
    assert r['ci']['n_boot'] == 20 and r['ci']['fid_clf'][0] <= r['fid_clf'] <= r['ci']['fid_clf'][1]
    assert '[' in results_table({'real': r}, reference=False).iloc[0, 0]
    with pytest.raises(ValueError, match='n_boot'): bootstrap_intervals(x, y, 'mnist', n_boot=3)


@pytest.mark.xdist_group('cheap')
def test_a_resample_is_measured_as_its_definition_says():
    "The bootstrap's weighted sums against the metrics written out on the resampled rows (copies of one sample never neighbours or pairs)."
    from opengen.metrics import _Resampler, feature_stats, frechet_distance, classifier_logits_and_features
    x = add_noise(real_images('mnist', n=300, split='train', seed=3), 0.03, seed=1).clamp(0, 1); lab = torch.arange(300) % 10
    stats = _Resampler(x, lab, 'mnist', 0, 3)
    i = torch.randint(300, (300,), generator=torch.Generator().manual_seed(0))
    got, f = stats(i), stats.feats[i]
    same = i[:, None] == i[None, :]
    kth = torch.cdist(f, f).masked_fill(same, float('inf')).kthvalue(3, dim=1).values
    px = x[i].flatten(1).double(); d = torch.cdist(px, px) / 28
    per = [d[m][:, m][~same[m][:, m]].mean().item() for m in (lab[i] == c for c in range(10))]
    k_ff = polynomial_kernel(f, f)
    want = {'fid_clf': frechet_distance(feature_stats(f.numpy()), stats.real_st),
            'kid': stats.k_rr + k_ff[~same].mean().item() - 2 * polynomial_kernel(stats.real_f, f).mean().item(),
            'precision': stats.in_real[i].double().mean().item(),
            'recall': (torch.cdist(stats.real_f, f) <= kth[None]).any(1).double().mean().item(),
            'accuracy': (classifier_logits_and_features(x, 'mnist')[0].argmax(1)[i] == lab[i]).double().mean().item(),
            'diversity': float(np.mean(per)) / stats.real_div, 'is_clf': classifier_score(stats.logits[i])}
    assert set(got) == set(want)
    for k in want: assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), (k, got[k], want[k])
    assert len(set(i.tolist())) < 300     # the resample does hold copies, so the exclusions were exercised


def test_intervals_of_bounded_metrics_stay_in_their_range():
    "A metric near its bound keeps its interval inside its range (digits under heavy noise: precision near 0, recall 0); the"
    " clipping itself on draws whose shifted percentile would cross 0."
    from opengen.metrics import METRIC_RANGES, bias_shifted_interval, real_images
    for x in (add_noise(real_images('mnist', n=200, split='train', seed=2), 0.6),):
        ci = bootstrap_intervals(x, None, 'mnist', n_boot=20, seed=2)
        for key, (low, high) in METRIC_RANGES.items():
            if key not in ci: continue
            assert (low is None or ci[key][0] >= low) and (high is None or ci[key][1] <= high), (key, ci[key])
            assert ci[key][0] <= ci[key][1]
    draws = [0.02, 0.03, 0.01, 0.02]
    assert bias_shifted_interval(draws, 0.004)[0] < 0 <= bias_shifted_interval(draws, 0.004, bounds=(0., 1.))[0]
    assert bias_shifted_interval([0.97, 0.99, 0.98], 0.999, bounds=(0., 1.))[1] <= 1.
