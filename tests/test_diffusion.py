"""Diffusion: the schedules against their papers, the forward process, the posterior, the samplers against their
definitions and against oracles, guidance, the U-Net, training and resume, and the shipped model's acceptance bar."""
import math

import pytest
import torch

from opengen.diffusion.ddpm import Diffusion, NoiseSchedule, drop_labels, eps_to_x0, v_target, v_to_eps, v_to_x0
from opengen.diffusion.guidance import guided_eps
from opengen.learner import Callback, CancelFitException, MetricsCB, fit
from opengen.metrics import measure, reference_row
from opengen.diffusion.unet import UNET_PRESETS, UNet, unet_preset
from opengen.diffusion.samplers import DDIMSampler, DDPMSampler, OutOfRangeWarning, make_sampler
from shipped import sampler_of, shipped

G = lambda s=0: torch.Generator().manual_seed(s)


@pytest.mark.parametrize('kind,T', [('linear', 250), ('cosine', 250), ('linear', 1000)])
def test_closed_form_matches_iterating_the_chain(kind, T):
    s, g = NoiseSchedule(T, kind), G()
    x0 = torch.linspace(-1, 1, 8).repeat(4000, 1)                       # 8 pixel values, 4000 chains each
    x = x0.clone()
    for t in range(T):
        x = s.q_step(x, torch.full((len(x),), t), torch.randn(x.shape, generator=g))
        if t in (T // 10, T // 2, T - 1):
            ab = s.alpha_bar[t]
            assert torch.allclose(x.mean(0), ab.sqrt() * x0[0], atol=0.06)
            assert torch.allclose(x.var(0), (1 - ab).expand(8), atol=0.08)


def test_linear_schedule_is_ho_et_al():
    "β_t evenly spaced from 1e-4 to 0.02 at T = 1000 (Ho et al. 2020), both ends scaled by 1000/T for other T; ᾱ = Π(1 - β)."
    s = NoiseSchedule(1000, 'linear')
    assert abs(s.betas64[0] - 1e-4) < 1e-12 and abs(s.betas64[-1] - 0.02) < 1e-12
    assert torch.allclose(s.betas64.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64), atol=1e-12)
    prod = 1.0
    for t in range(1000):
        prod *= 1 - (1e-4 + (0.02 - 1e-4) * t / 999)
        if t in (0, 99, 499, 999): assert abs(s.alpha_bar64[t].item() - prod) < 1e-12 * max(1, 1 / prod), t
    assert 4.0e-5 < s.alpha_bar64[-1] < 4.1e-5                            # the paper's ᾱ_T ≈ 4.04e-5: almost pure noise
    s = NoiseSchedule(250, 'linear')
    assert abs(s.betas64[0] - 4e-4) < 1e-12 and abs(s.betas64[-1] - 0.08) < 1e-12


def test_cosine_schedule_is_nichol_and_dhariwal():
    "ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008; step t+1 at index t; β clipped at 0.999."
    T, s_ = 250, 0.008
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2
    sched = NoiseSchedule(T, 'cosine')
    for t in (0, 1, 60, 125, 200, 240):
        assert abs(sched.alpha_bar64[t].item() - f(t + 1) / f(0)) < 1e-10, t
    assert sched.betas64.max() <= 0.999 and abs(sched.betas64[-1] - 0.999) < 1e-12     # f(T) = 0: the last β is clipped
    with pytest.raises(ValueError, match='unknown schedule'): NoiseSchedule(T, 'sigmoid')


def test_posterior_is_gaussian_conditioning():
    s = NoiseSchedule(250)
    for t in (1, 10, 100, 249):
        a, ab, abp = s.alphas64[t], s.alpha_bar64[t], s.alpha_bar64[t - 1]
        x0, xt = torch.tensor([[0.5]]), torch.tensor([[-0.2]])
        cov, vt, vp = a.sqrt() * (1 - abp), 1 - ab, 1 - abp
        mean, var = s.posterior(x0, xt, torch.tensor([t]))
        assert abs(mean.item() - (abp.sqrt() * 0.5 + cov / vt * (-0.2 - ab.sqrt() * 0.5)).item()) < 1e-5
        assert abs(var.item() - (vp - cov ** 2 / vt).item()) < 1e-6


def test_v_is_its_definition_and_the_parameterisations_convert():
    "v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x0 (Salimans & Ho 2022): with ᾱ = 0.36, x0 = 0.5, ε = -1, v = 0.6·(-1) - 0.8·0.5 = -1."
    assert torch.allclose(v_target(torch.tensor(0.5), torch.tensor(-1.), torch.tensor(0.36)), torch.tensor(-1.0))
    s, g = NoiseSchedule(250), G()
    x0, eps = torch.rand(3, 1, 28, 28, generator=g) * 2 - 1, torch.randn(3, 1, 28, 28, generator=g)
    t = torch.tensor([3, 100, 240])
    ab = s.alpha_bar[t].view(-1, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    v = v_target(x0, eps, ab)
    assert torch.allclose(v_to_eps(v, xt, ab), eps, atol=1e-4) and torch.allclose(v_to_x0(v, xt, ab), x0, atol=1e-4)
    assert torch.allclose(eps_to_x0(eps, xt, ab), x0, atol=3e-3)
    m = Diffusion(unet=unet_preset('tiny'), prediction='v')
    assert torch.allclose(m.target(x0, eps, t), ab.sqrt() * eps - (1 - ab).sqrt() * x0, atol=1e-6)


def _timesteps(T: int, n: int) -> list[int]:
    "The documented timestep set: n values evenly spaced over 0..T-1, rounded, noisiest first."
    return sorted({round(i * (T - 1) / (n - 1)) if n > 1 else 0 for i in range(n)}, reverse=True)


@pytest.mark.parametrize('n', [250, 50, 7])
def test_deterministic_ddim_with_the_true_eps_lands_on_the_forward_marginal(n):
    "Given the true ε, one η = 0 DDIM step from x_t = sqrt(ᾱ) x0 + sqrt(1-ᾱ) ε lands on sqrt(ᾱ') x0 + sqrt(1-ᾱ') ε."
    s, g = NoiseSchedule(250), G(2)
    x0, eps = torch.rand(2, 1, 28, 28, generator=g) * 1.8 - 0.9, torch.randn(2, 1, 28, 28, generator=g)
    smp = DDIMSampler(s, eta=0.0).set_timesteps(n)
    ts = _timesteps(250, n)
    assert smp.timesteps == ts
    for t, tp in zip(ts, ts[1:] + [-1]):
        ab, abp = s.alpha_bar64[t].item(), (s.alpha_bar64[tp].item() if tp >= 0 else 1.0)
        xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
        x_prev, x0_hat = smp.step(eps, t, xt)
        assert torch.allclose(x0_hat, x0, atol=2e-3 if ab < 1e-3 else 1e-4), t
        assert torch.allclose(x_prev, math.sqrt(abp) * x0 + math.sqrt(1 - abp) * eps, atol=2e-3 if ab < 1e-3 else 1e-4), t


@pytest.mark.parametrize('clip', [False, True])
@pytest.mark.parametrize('n', [250, 50, 7])
def test_ddpm_step_is_the_posterior_and_ddim_eta_one_is_the_ddpm_step(clip, n):
    "The DDPM step against Gaussian conditioning written here (respaced: α = ᾱ/ᾱ'), x̂0 computed here, not by the sampler."
    s, g = NoiseSchedule(250), G(1)
    x, eps, z = (torch.randn(2, 1, 28, 28, generator=g) for _ in range(3))
    a, b = DDPMSampler(s, clip_x0=clip).set_timesteps(n), DDIMSampler(s, eta=1.0, clip_x0=clip).set_timesteps(n)
    ts = _timesteps(250, n)
    for t, tp in zip(ts, ts[1:] + [-1]):
        ab, abp = s.alpha_bar64[t].item(), (s.alpha_bar64[tp].item() if tp >= 0 else 1.0)
        x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
        if clip: x0 = x0.clamp(-1, 1)
        alpha = ab / abp
        cov, vt, vp = math.sqrt(alpha) * (1 - abp), 1 - ab, 1 - abp     # Cov(x_t, x_t'), Var x_t, Var x_t' given x0
        mean = math.sqrt(abp) * x0 + cov / vt * (x - math.sqrt(ab) * x0)
        var = vp - cov ** 2 / vt
        expected = mean if tp < 0 else mean + math.sqrt(var) * z          # no noise at the last step
        (xa, x0a), (xb, x0b) = a.step(eps, t, x, noise=z), b.step(eps, t, x, noise=z)
        assert torch.allclose(x0a, x0, atol=1e-4) and torch.allclose(x0b, x0, atol=1e-4), t
        assert torch.allclose(xa, expected, atol=1e-4) and torch.allclose(xb, expected, atol=1e-4), t


def test_sampler_errors():
    s = NoiseSchedule(250)
    with pytest.raises(ValueError, match='between 1 and 250'): DDIMSampler(s).set_timesteps(251)
    with pytest.raises(ValueError, match='eta'): DDIMSampler(s, eta=2.0)
    with pytest.raises(ValueError, match='unknown sampler'): make_sampler('heun', s)


def _random_model(preset='tiny'):
    torch.manual_seed(0)
    m = Diffusion(unet=unet_preset(preset, n_classes=10)).eval()
    with torch.no_grad():
        for p in m.parameters(): p.normal_(0, 0.05, generator=G())
    return m


def test_guidance_endpoints_and_batching():
    m, g = _random_model(), G()
    x, t, y = torch.randn(3, 1, 28, 28, generator=g), torch.tensor([4, 90, 200]), torch.tensor([7, 0, 9])
    with torch.no_grad():
        c, u = m.net(x, t, y), m.net(x, t, torch.full_like(y, 10))
        assert (c - u).abs().max() > 1e-3                                    # the label matters, so the endpoints differ
        assert torch.allclose(guided_eps(m, x, t, y, 1.0), c, atol=1e-5)
        assert torch.allclose(guided_eps(m, x, t, y, 0.0), u, atol=1e-5)
        assert torch.allclose(guided_eps(m, x, t, y, 2.5), u + 2.5 * (c - u), atol=1e-4)


@pytest.mark.parametrize('name', list(UNET_PRESETS))
def test_unet_shape_and_batch_equivariance(name):
    m = UNet(**unet_preset(name, n_classes=10)).eval()
    g = G()
    with torch.no_grad():
        for p in m.parameters(): p.normal_(0, 0.05, generator=g)
        x, t, y = torch.randn(5, 1, 28, 28, generator=g), torch.randint(0, 250, (5,), generator=g), torch.randint(0, 11, (5,), generator=g)
        out = m(x, t, y)
        assert out.shape == x.shape
        perm = torch.tensor([3, 0, 4, 1, 2])
        assert torch.allclose(m(x[perm], t[perm], y[perm]), out[perm], atol=1e-4)


def test_label_dropout_rate():
    y = torch.arange(10).repeat(1000)                                        # 10,000 labels
    d = drop_labels(y, 0.1, 10, G())
    assert abs((d == 10).float().mean().item() - 0.1) < 0.01 and torch.equal(d[d != 10], y[d != 10])
    assert not (drop_labels(y, 0.0, 10, G()) == 10).any() and (drop_labels(y, 1.0, 10, G()) == 10).all()


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    kw = dict(n_train=512, n_valid=128, bs=64, lr=3e-3, show=False, progress=False)
    torch.manual_seed(0); a = Diffusion(unet=unet_preset('tiny', n_classes=10))
    learn = fit(a, 'mnist', 4, ema=None, **kw)
    class Interrupt(Callback):                                           # a crash after epoch 2 of 4 (after the checkpoint)
        order = 300
        def after_epoch(self, learn):
            if learn.epoch == 1: raise CancelFitException()
    torch.manual_seed(0); b = Diffusion(unet=unet_preset('tiny', n_classes=10))
    fit(b, 'mnist', 4, ema=None, out_dir=tmp_path, extra_cbs=(Interrupt(),), **kw)
    torch.manual_seed(5); c = Diffusion(unet=unet_preset('tiny', n_classes=10))
    fit(c, 'mnist', 4, ema=None, out_dir=tmp_path, resume=True, **kw)
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(va, vc), k
    losses = [r['loss'] for r in learn.cb(MetricsCB).steps]
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4])


def test_out_of_range_samples_warn():
    m = _random_model()
    with pytest.warns(OutOfRangeWarning, match='outside the data range'):
        m.sample(4, labels=[1, 2, 3, 4], steps=5, generator=G())


@pytest.mark.xdist_group('ddpm_cond_mnist')
def test_shipped_model_meets_acceptance():
    "The bar on the card's evaluation (n = 1,000, which the card test re-measures) and on its first 100 samples (the card"
    " test's check samples, drawn once): accuracy, FID against real data, diversity."
    m = shipped('ddpm_cond_mnist')
    assert m.defaults['sampler'] == 'ddim' and m.defaults['steps'] <= 50
    for r, n in ((m.meta['metrics'], m.meta['eval_n']),
                 (measure(*sampler_of(m, 'ddpm_cond_mnist')(m.meta['check']['samples']['n'], sampler=m.defaults['sampler'], steps=m.defaults['steps'])), 100)):
        ref = reference_row('mnist', n)
        assert r['accuracy'] >= 0.99 and r['fid_clf'] <= 2 * ref['fid_clf'] and r['diversity'] >= 0.8, (n, r, ref['fid_clf'])


@pytest.mark.slow
def test_ddim_50_steps_is_as_good_as_ddpm_250():
    "The steps study's claim, both rows sampled again (n = 500; DDPM's 250 guided steps take about six CPU-minutes)."
    m = shipped('ddpm_cond_mnist')
    st = {(r['sampler'], r['steps']): r for r in m.meta['steps_study']}
    ddim = measure(*sampler_of(m, 'ddpm_cond_mnist')(500, sampler='ddim', steps=50))
    ddpm = measure(*sampler_of(m, 'ddpm_cond_mnist')(500, sampler='ddpm', steps=m.T))
    assert abs(ddpm['fid_clf'] - st[('ddpm', m.T)]['fid_clf']) < 1e-3 * max(1, ddpm['fid_clf'])
    assert ddim['fid_clf'] <= 1.15 * ddpm['fid_clf'], (ddim['fid_clf'], ddpm['fid_clf'])
