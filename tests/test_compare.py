"""40_compare: the list of shipped generative models, the Pareto front against its definition, the table and the picks."""
import pytest
import torch

from opengen.checkpoints import available_pretrained, load_pretrained
from opengen.compare import (accuracy_fraction, class_samples, comparison_table, dataset_of, evaluate_shipped, pareto_front,
                             real_row, recommend, shipped_generative)
from opengen.nn import Generative


def dominates(a, b): return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def test_the_front_is_what_its_definition_says():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 40):
        cost = (torch.rand(n, generator=g) * 10).round().tolist()          # rounding makes ties in cost
        fid = (torch.rand(n, generator=g) * 5).round(decimals=1).tolist()
        pts, front = list(zip(cost, fid)), pareto_front(cost, fid)
        assert all(not any(dominates(p, pts[i]) for p in pts) for i in front)                       # nothing beats a front point
        assert all(any(dominates(pts[j], pts[i]) for j in front) for i in range(n) if i not in front)   # the rest are beaten by one on it
        assert [pts[i] for i in front] == sorted(pts[i] for i in front)


def test_every_shipped_sampler_is_compared_and_nothing_else():
    names = shipped_generative()
    assert set(names) == {n for n in available_pretrained() if isinstance(load_pretrained(n), Generative)}
    assert 'classifier_mnist' not in names and {'cgan_fashion', 'ddpm_cond_fashion', 'text2img_mnist'} <= set(names)
    assert shipped_generative('fashion') == [n for n in names if n.endswith('_fashion')]
    with pytest.raises(ValueError, match='does not end in a dataset'): dataset_of('cgan')


@pytest.mark.xdist_group('cheap')
def test_the_table_puts_real_data_first_and_reads_accuracy_against_it():
    real = real_row('mnist', n=100, n_boot=10)
    rows = {n: evaluate_shipped(n, n=100, n_boot=10) for n in ('cgan_mnist', 'vae_mnist')}
    t = comparison_table(rows, real)
    assert list(t.index) == ['real data (reference)', 'cgan_mnist', 'vae_mnist']
    assert accuracy_fraction(rows['cgan_mnist'], real) == pytest.approx(rows['cgan_mnist']['accuracy'] / real['accuracy'])
    assert accuracy_fraction(rows['vae_mnist'], real) is None and t.loc['vae_mnist', 'accuracy / real'] == '–'
    assert t.loc['cgan_mnist', 'trained on'].startswith('CPU') and float(t.loc['cgan_mnist', 's / image']) > 0
    lo, hi = rows['cgan_mnist']['ci']['fid_clf']
    assert lo < hi and hi - lo < rows['cgan_mnist']['fid_clf']      # a real interval, narrower than the value it brackets
    best = min(rows, key=lambda n: rows[n]['fid_clf'])
    assert recommend(rows, real)[0].startswith(f'quality (lowest FID): {best} ')
    # a model below the accuracy bar is not recommended, however good its FID
    bad = {**rows, 'cgan_mnist': {**rows['cgan_mnist'], 'accuracy': 0.1, 'fid_clf': 0.01}}
    assert 'cgan_mnist' not in recommend(bad, real)[0].split(';')[0]


@pytest.mark.xdist_group('cheap')
def test_an_unconditional_model_shows_samples_the_classifier_reads_as_the_class():
    from opengen.metrics import classifier_logits_and_features
    x, how = class_samples('vae_mnist', 3, n=4)
    assert how == 'classified' and len(x) == 4
    assert (classifier_logits_and_features(x, 'mnist')[0].argmax(1) == 3).all()
    x, how = class_samples('cgan_mnist', 3, n=4)
    assert how == 'asked for' and x.shape == (4, 1, 28, 28)
