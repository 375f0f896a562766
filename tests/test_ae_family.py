"""The autoencoder family: numerical identities, the bound ordering, and the shipped weights' stated metrics."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from opengen.checkpoints import load_pretrained
from opengen.data import load_dataset, to_pixel_range
from opengen.metrics import evaluate
from opengen.models.ae import AE, interpolate
from opengen.models.cvae import CVAE, digit_by_z_grid, transfer_style
from opengen.models.vae import VAE, binarize, gaussian_kl, log_likelihood_iw, neg_log_lik, reparameterize


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = torch.randn(7, 5), torch.randn(7, 5) * 2
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0., 1.)).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), ref, atol=1e-5)


def test_reparameterised_gradient_matches_finite_differences():
    eps = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    f = lambda m, lv: torch.sin(reparameterize(m, lv, eps)).mean()   # any smooth f
    m, lv = torch.tensor(0.3, requires_grad=True), torch.tensor(-1.0, requires_grad=True)
    gm, glv = torch.autograd.grad(f(m, lv), (m, lv))
    h = 1e-3
    with torch.no_grad():
        assert abs(gm - (f(m + h, lv) - f(m - h, lv)) / (2 * h)) < 1e-3
        assert abs(glv - (f(m, lv + h) - f(m, lv - h)) / (2 * h)) < 1e-3
    # and the estimate is the true gradient: d/dm E[sin(m + s eps)] = cos(m) exp(-s^2 / 2)
    assert abs(gm - math.cos(0.3) * math.exp(-math.exp(-1.0) / 2)) < 0.02


def test_iw_bound_increases_with_k():
    vae = load_pretrained('vae_mnist')
    x = binarize(to_pixel_range(load_dataset('mnist', 'test').x[:64]))
    b = [log_likelihood_iw(vae, x, k, generator=torch.Generator().manual_seed(0)).mean().item() for k in (1, 10, 100, 500)]
    assert b[0] < b[1] < b[2] < b[3] < 0, b


def test_shipped_vae_reports_its_likelihood():
    m = load_pretrained('vae_mnist').meta
    assert -130 < m['metrics']['test_elbo_nats'] < -80 and 'binaris' in m['data']


def test_shipped_cvae_meets_acceptance():
    r = evaluate(load_pretrained('cvae_mnist'), 'mnist', 1000)
    assert r['accuracy'] >= 0.97 and r['diversity'] >= 0.8, r


def test_shipped_family_cards_match_their_weights():
    for name in ('ae_mnist', 'vae_mnist', 'cvae_mnist'):
        m = load_pretrained(name)
        r = evaluate(m, 'mnist', m.meta['eval_n'])
        assert abs(r['fid_clf'] - m.meta['metrics']['fid_clf']) < 1e-3 * max(1, r['fid_clf'])


def test_cvae_is_the_vae_with_the_hook():
    assert issubclass(CVAE, VAE) and CVAE().conditional and not VAE().conditional
    m = CVAE(latent_dim=4)
    with pytest.raises(ValueError, match='0..9'): m.sample(2, labels=[0, 10])
    assert digit_by_z_grid(m, 3).shape == (30, 1, 28, 28)
    assert transfer_style(m, torch.rand(1, 1, 28, 28), 3).shape == (10, 1, 28, 28)


def test_likelihoods_are_normalised_where_they_should_be():
    l = torch.randn(1, 1, 28, 28)
    x = torch.rand(1, 1, 28, 28)
    # the continuous Bernoulli NLL is the BCE minus log C(lambda), and C >= 2 everywhere
    assert (neg_log_lik(l, x, 'cbernoulli') < neg_log_lik(l, x, 'bernoulli')).all()
    with pytest.raises(ValueError): neg_log_lik(l, x, 'laplace')


def test_ae_round_trip_and_interpolation_shapes():
    ae = AE(latent_dim=3)
    x = torch.rand(2, 1, 28, 28)
    assert interpolate(ae, x[:1], x[1:], 5).shape == (5, 1, 28, 28)
    with pytest.raises(ValueError, match='unconditional'): ae.sample(2, labels=[1, 2])
