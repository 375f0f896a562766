"""Metrics behave as metrics must: identities, monotonicity, reproducibility, and the shipped classifiers' accuracy."""
import numpy as np
import pytest
import torch

from opengen.checkpoints import read_meta
from opengen.core import WEIGHTS_DIR
from opengen.data import load_dataset, to_pixel_range
from opengen.metrics import (InceptionUnavailable, RealData, add_noise, classifier_features, conditional_accuracy,
                             evaluate, feature_stats, frechet_distance, inception_features, inception_model,
                             load_classifier, precision_recall, real_images, real_stats, reference_row, results_table,
                             classifier_accuracy, diversity)

TARGETS = {'mnist': 0.993, 'fashion': 0.91}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv('OPENGEN_CACHE', str(tmp_path_factory.getbasetemp() / 'cache'))


@pytest.mark.parametrize('ds', ['mnist', 'fashion'])
def test_shipped_classifiers_reach_their_targets(ds):
    acc = classifier_accuracy(load_classifier(ds), ds)
    card = read_meta(WEIGHTS_DIR / f'classifier_{ds}.safetensors')['meta']['metrics']['test_accuracy']
    assert acc >= TARGETS[ds], f'{ds} classifier: {acc:.4f} < {TARGETS[ds]}'
    assert abs(acc - card) < 1e-3   # the model card states what the weights do
    assert f'{card}' in (WEIGHTS_DIR / f'classifier_{ds}.md').read_text()


def test_fid_of_a_set_against_itself_is_zero():
    f = classifier_features(real_images('mnist', n=1000))
    assert abs(frechet_distance(feature_stats(f), feature_stats(f))) < 1e-6


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
    model = inception_model('random')
    x = real_images('mnist', n=6)
    f = inception_features(x, model, bs=4)
    assert f.shape == (6, 2048) and np.isfinite(f).all()
    assert np.allclose(inception_features(x, model, bs=6), f, atol=1e-4)   # batching does not change features
    # a grey image repeated to 3 channels is what the network sees
    seen = {}
    h = model.blocks[0][0].register_forward_hook(lambda m, i, o: seen.update({'in': i[0]}))   # returns None: output untouched
    inception_features(x[:1], model); h.remove()
    assert seen['in'].shape == (1, 3, 299, 299) and torch.allclose(seen['in'][:, 0], seen['in'][:, 2])
    y = add_noise(x, 0.3)
    fid = frechet_distance(feature_stats(np.concatenate([f, f])), feature_stats(inception_features(torch.cat([y, y]), model)))
    assert np.isfinite(fid) and fid > 0


def test_inception_without_weights_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv('OPENGEN_FID_WEIGHTS', str(tmp_path / 'missing.pth'))
    with pytest.raises(InceptionUnavailable, match='does not exist'): inception_model()


def test_accuracy_of_real_test_images_matches_classifier():
    te = load_dataset('mnist', 'test')
    acc = conditional_accuracy(to_pixel_range(te.x), te.y)['accuracy']
    assert acc >= read_meta(WEIGHTS_DIR / 'classifier_mnist.safetensors')['meta']['metrics']['test_accuracy'] - 1e-4


def test_precision_recall_real_vs_real_near_one():
    p, r = precision_recall(classifier_features(real_images('mnist', n=1000, split='test')),
                            classifier_features(real_images('mnist', n=1000, split='train')))
    assert p > 0.8 and r > 0.8, (p, r)


def test_diversity_of_real_is_one_and_of_copies_zero():
    lab = torch.arange(500) % 10
    assert abs(diversity(real_images('mnist', lab, split='train'), lab) - 1) < 0.05
    assert diversity(real_images('mnist', lab[:10], split='train')[lab], lab) == 0


def test_evaluate_reproduces_reference_and_is_seeded():
    ref = reference_row('mnist', 500)
    a, b = evaluate(RealData('mnist'), 'mnist', 500), evaluate(RealData('mnist'), 'mnist', 500)
    for k in ('fid_clf', 'precision', 'recall', 'accuracy', 'diversity'):
        assert a[k] == b[k] == ref[k]
    c = evaluate(RealData('mnist'), 'mnist', 500, seed=1)
    assert c['fid_clf'] != a['fid_clf']
    assert ref['accuracy'] > 0.98 and ref['fid_clf'] < 2   # real-vs-real FID at n = 500 is ~1.2-1.5 (the n-bias)
    table = results_table({'again': a})
    assert list(table.index) == ['real data (reference)', 'again']


def test_evaluate_rejects_bad_samples():
    class Bad:
        def sample(self, n, *, generator=None): return torch.rand(n, 1, 28, 28) * 2 - 1   # [-1, 1]
    with pytest.raises(ValueError, match=r'\[0, 1\]'): evaluate(Bad(), 'mnist', 100)
