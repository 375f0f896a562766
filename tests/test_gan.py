"""The GAN chapter: loss formulas, D* on the 1-D toy, the alternating steps, exact resume, and the shipped weights' metrics."""
import math

import pytest
import torch

from opengen.learner import SingleBatchCB, fit
from opengen.metrics import measure
from opengen.models.gan import (GAN, GANTrainCB, d_loss_bce, d_loss_hinge, fit_discriminator, g_loss_hinge,
                                g_loss_nonsaturating, g_loss_saturating, js_divergence, optimal_discriminator,
                                toy_density, toy_dls, toy_samples)
from shipped import sampler_of, shipped


def logit(p): return torch.log(p / (1 - p))


def test_losses_match_their_formulas():
    pr, pf = torch.tensor([0.9, 0.55, 0.7]), torch.tensor([0.2, 0.45, 0.05])
    assert torch.allclose(d_loss_bce(logit(pr), logit(pf)), -(pr.log().mean() + (1 - pf).log().mean()), atol=1e-6)
    assert torch.allclose(g_loss_saturating(logit(pf)), (1 - pf).log().mean(), atol=1e-6)
    assert torch.allclose(g_loss_nonsaturating(logit(pf)), -pf.log().mean(), atol=1e-6)
    lr, lf = torch.tensor([1.5, -0.5]), torch.tensor([0.5, -2.0])
    assert torch.allclose(d_loss_hinge(lr, lf), torch.tensor((0 + 1.5) / 2 + (1.5 + 0) / 2))
    assert torch.allclose(g_loss_hinge(lf), torch.tensor(0.75))


def test_nonsaturating_gradient_does_not_vanish():
    l = torch.tensor([-9.0], requires_grad=True)     # D(G(z)) ~ 1e-4: the fakes are rejected
    g_sat, = torch.autograd.grad(g_loss_saturating(l), l)
    g_ns, = torch.autograd.grad(g_loss_nonsaturating(l), l)
    assert abs(g_sat) < 1e-3 and abs(g_ns) > 0.99


def test_optimal_discriminator_matches_a_converged_one():
    g = torch.Generator().manual_seed(0)
    real, fake = toy_samples(50_000, generator=g), 1.5 * torch.randn(50_000, 1, generator=g)
    torch.manual_seed(0)
    D = GAN(arch='toy', d_norm='none').D
    losses = fit_discriminator(D, real, fake, steps=1500)
    x = torch.linspace(-4, 4, 161)
    p_data, p_g = toy_density(x), torch.exp(-0.5 * (x / 1.5) ** 2) / (1.5 * math.sqrt(2 * math.pi))
    with torch.no_grad(): d = torch.sigmoid(D(x[:, None]))
    where = (p_data + p_g) > 0.05
    err = (d - optimal_discriminator(p_data, p_g))[where].abs()
    assert err.max() < 0.06 and err.mean() < 0.02, (err.max(), err.mean())
    # and the converged D loss is -C(G) = log 4 - 2 JS(p_data || p_g)
    w = torch.linspace(-10, 10, 2001)
    js = js_divergence(toy_density(w), torch.exp(-0.5 * (w / 1.5) ** 2) / (1.5 * math.sqrt(2 * math.pi)), float(w[1] - w[0]))
    assert abs(sum(losses[-100:]) / 100 - (math.log(4) - 2 * js)) < 0.02


def _params(mod): return torch.cat([p.detach().flatten() for p in mod.parameters()]).clone()


@pytest.mark.parametrize('n_critic,single,expected', [(1, True, (1, 1, True, True)), (2, True, (1, 0, False, True)),
                                                      (1, False, (4, 4, True, True)), (2, False, (4, 2, True, True)),
                                                      (3, False, (4, 1, True, True))])
def test_callback_alternates_steps(n_critic, single, expected):
    torch.manual_seed(0)
    m = GAN(arch='toy', z_dim=4, width=16, d_norm='none')
    G0, D0 = _params(m.G), _params(m.D)
    learn = fit(m, epochs=1, dls=toy_dls(1024, 256), n_critic=n_critic, ema=None, show=False, progress=False,
                extra_cbs=[SingleBatchCB()] if single else [])
    cb = learn.cb(GANTrainCB)
    assert (cb.d_steps, cb.g_steps, not torch.equal(G0, _params(m.G)), not torch.equal(D0, _params(m.D))) == expected


def test_image_gan_trains_and_resumes_exactly(tmp_path):
    kw = dict(n_train=512, n_valid=256, show=False, progress=False)
    torch.manual_seed(0); a = GAN(arch='dcgan', width=16, n_classes=10)
    fit(a, 'mnist', 2, **kw)
    torch.manual_seed(0); b = GAN(arch='dcgan', width=16, n_classes=10)
    fit(b, 'mnist', 1, out_dir=tmp_path, **kw)                     # interrupted after one epoch ...
    torch.manual_seed(1); c = GAN(arch='dcgan', width=16, n_classes=10)   # ... a new process, other init ...
    learn = fit(c, 'mnist', 2, out_dir=tmp_path, resume=True, **kw)  # ... resumes from the checkpoint
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(va, vc), k
    assert learn.cb(GANTrainCB).g_steps == 2 * 4


def test_sample_interface():
    m = GAN(arch='dcgan', width=16, n_classes=10)
    x = m.sample(10, labels=list(range(10)), generator=torch.Generator().manual_seed(0))
    assert x.shape == (10, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, m.sample(10, labels=list(range(10)), generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(x, m.sample(10, labels=list(range(10)), generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(x, m.sample(10, labels=[0] * 10, generator=torch.Generator().manual_seed(0)))   # labels reach G
    for bad, msg in (([10] * 10, '0..9'), (None, 'pass labels'), ([1] * 3, 'for 10 images')):
        with pytest.raises(ValueError, match=msg.replace('.', r'\.')): m.sample(10, labels=bad)
    with pytest.raises(ValueError, match='unconditional'): GAN(arch='mlp').sample(2, labels=[1, 2])


@pytest.mark.xdist_group('cheap')
def test_shipped_cgan_meets_acceptance():
    x, y = sampler_of(shipped('cgan_mnist'), 'cgan_mnist')(1000)               # the card test's samples, drawn once
    r = measure(x, y)
    assert r['accuracy'] >= 0.97 and r['diversity'] >= 0.8 and r['recall'] > 0.5, r
