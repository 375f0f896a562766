"""Diffusion: the forward process, the posterior, the samplers, guidance, the U-Net, the shipped model and the CLI."""
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from opengen.checkpoints import load_pretrained
from opengen.learner import Callback, CancelFitException
from opengen.diffusion import Diffusion, NoiseSchedule, drop_labels, eps_to_x0, fit_diffusion, v_target, v_to_eps, v_to_x0
from opengen.guidance import guided_eps
from opengen.metrics import evaluate, reference_row
from opengen.models.unet import UNET_PRESETS, UNet, unet_preset
from opengen.samplers import DDIMSampler, DDPMSampler, OutOfRangeWarning, make_sampler

BIN = Path(sys.executable).parent / 'opengen'


@pytest.mark.parametrize('kind,T', [('linear', 250), ('cosine', 250), ('linear', 1000)])
def test_closed_form_matches_iterating_the_chain(kind, T):
    s, g = NoiseSchedule(T, kind), torch.Generator().manual_seed(0)
    x0 = torch.linspace(-1, 1, 8).repeat(4000, 1)                       # 8 pixel values, 4000 chains each
    x = x0.clone()
    for t in range(T):
        x = s.q_step(x, torch.full((len(x),), t), torch.randn(x.shape, generator=g))
        if t in (T // 10, T // 2, T - 1):
            ab = s.alpha_bar[t]
            assert torch.allclose(x.mean(0), ab.sqrt() * x0[0], atol=0.06)
            assert torch.allclose(x.var(0), (1 - ab).expand(8), atol=0.08)


def test_posterior_is_gaussian_conditioning():
    s = NoiseSchedule(250)
    for t in (1, 10, 100, 249):
        a, ab, abp = s.alphas64[t], s.alpha_bar64[t], s.alpha_bar64[t - 1]
        x0, xt = torch.tensor([[0.5]]), torch.tensor([[-0.2]])
        cov, vt, vp = a.sqrt() * (1 - abp), 1 - ab, 1 - abp
        mean, var = s.posterior(x0, xt, torch.tensor([t]))
        assert abs(mean.item() - (abp.sqrt() * 0.5 + cov / vt * (-0.2 - ab.sqrt() * 0.5)).item()) < 1e-5
        assert abs(var.item() - (vp - cov ** 2 / vt).item()) < 1e-6


def test_parameterisations_convert():
    s, g = NoiseSchedule(250), torch.Generator().manual_seed(0)
    x0, eps = torch.rand(3, 1, 28, 28, generator=g) * 2 - 1, torch.randn(3, 1, 28, 28, generator=g)
    ab = s.alpha_bar[torch.tensor([3, 100, 240])].view(-1, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    v = v_target(x0, eps, ab)
    assert torch.allclose(v_to_eps(v, xt, ab), eps, atol=1e-4) and torch.allclose(v_to_x0(v, xt, ab), x0, atol=1e-4)
    assert torch.allclose(eps_to_x0(eps, xt, ab), x0, atol=3e-3)


@pytest.mark.parametrize('clip', [False, True])
@pytest.mark.parametrize('n', [250, 50, 7])
def test_ddim_eta_one_is_the_ddpm_step(clip, n):
    s, g = NoiseSchedule(250), torch.Generator().manual_seed(1)
    x, eps, z = (torch.randn(2, 1, 28, 28, generator=g) for _ in range(3))
    a, b = DDPMSampler(s, clip_x0=clip).set_timesteps(n), DDIMSampler(s, eta=1.0, clip_x0=clip).set_timesteps(n)
    for t in a.timesteps:
        (xa, x0a), (xb, x0b) = a.step(eps, t, x, noise=z), b.step(eps, t, x, noise=z)
        assert torch.allclose(xa, xb, atol=1e-4) and torch.allclose(x0a, x0b, atol=1e-5)


def test_sampler_errors():
    s = NoiseSchedule(250)
    with pytest.raises(ValueError, match='between 1 and 250'): DDIMSampler(s).set_timesteps(251)
    with pytest.raises(ValueError, match='eta'): DDIMSampler(s, eta=2.0)
    with pytest.raises(ValueError, match='unknown sampler'): make_sampler('heun', s)


def _random_model(preset='tiny'):
    torch.manual_seed(0)
    m = Diffusion(unet=unet_preset(preset, n_classes=10)).eval()
    with torch.no_grad():
        for p in m.parameters(): p.normal_(0, 0.05)
    return m


def test_guidance_endpoints_and_batching():
    m, g = _random_model(), torch.Generator().manual_seed(0)
    x, t, y = torch.randn(3, 1, 28, 28, generator=g), torch.tensor([4, 90, 200]), torch.tensor([7, 0, 9])
    with torch.no_grad():
        c, u = m.net(x, t, y), m.net(x, t, torch.full_like(y, 10))
        assert torch.allclose(guided_eps(m, x, t, y, 1.0), c, atol=1e-5)
        assert torch.allclose(guided_eps(m, x, t, y, 0.0), u, atol=1e-5)
        assert torch.allclose(guided_eps(m, x, t, y, 2.5), u + 2.5 * (c - u), atol=1e-4)


@pytest.mark.parametrize('name', list(UNET_PRESETS))
def test_unet_shape_and_batch_equivariance(name):
    m = UNet(**unet_preset(name, n_classes=10)).eval()
    with torch.no_grad():
        for p in m.parameters(): p.normal_(0, 0.05)
        x, t, y = torch.randn(5, 1, 28, 28), torch.randint(0, 250, (5,)), torch.randint(0, 11, (5,))
        out = m(x, t, y)
        assert out.shape == x.shape
        perm = torch.tensor([3, 0, 4, 1, 2])
        assert torch.allclose(m(x[perm], t[perm], y[perm]), out[perm], atol=1e-4)


def test_label_dropout_rate():
    y = torch.arange(10).repeat(2000)
    d = drop_labels(y, 0.1, 10, torch.Generator().manual_seed(0))
    assert abs((d == 10).float().mean().item() - 0.1) < 0.01 and torch.equal(d[d != 10], y[d != 10])


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    kw = dict(n_train=512, n_valid=128, bs=64, lr=3e-3, show=False, progress=False)
    torch.manual_seed(0); a = Diffusion(unet=unet_preset('tiny', n_classes=10))
    learn, _ = fit_diffusion(a, epochs=4, **kw)
    class Interrupt(Callback):                                           # a crash after epoch 2 of 4 (after the checkpoint)
        order = 300
        def after_epoch(self, learn):
            if learn.epoch == 1: raise CancelFitException()
    torch.manual_seed(0); b = Diffusion(unet=unet_preset('tiny', n_classes=10))
    fit_diffusion(b, epochs=4, out_dir=tmp_path, extra_cbs=(Interrupt(),), **kw)
    torch.manual_seed(5); c = Diffusion(unet=unet_preset('tiny', n_classes=10))
    fit_diffusion(c, epochs=4, out_dir=tmp_path, resume=True, **kw)
    for (k, va), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(va, vc), k
    from opengen.learner import MetricsCB
    losses = [r['loss'] for r in learn.cb(MetricsCB).steps]
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4])


def test_out_of_range_samples_warn():
    m = _random_model()
    with pytest.warns(OutOfRangeWarning, match='outside the data range'):
        m.sample(4, labels=[1, 2, 3, 4], steps=5, generator=torch.Generator().manual_seed(0))


def test_shipped_model_meets_acceptance():
    m = load_pretrained('ddpm_cond_mnist')
    r = evaluate(m, 'mnist', 1000)                       # the model's defaults: DDIM, 50 steps, its guidance scale
    ref = reference_row('mnist', 1000)
    assert m.defaults['sampler'] == 'ddim' and m.defaults['steps'] <= 50
    assert r['accuracy'] >= 0.99 and r['fid_clf'] <= 2 * ref['fid_clf'] and r['diversity'] >= 0.8, (r, ref['fid_clf'])
    assert abs(r['fid_clf'] - m.meta['metrics']['fid_clf']) < 1e-3 * max(1, r['fid_clf'])   # the card states what it does
    st = {(row['sampler'], row['steps']): row['fid_clf'] for row in m.meta['steps_study']}
    assert st[('ddim', 50)] <= 1.15 * st[('ddpm', m.T)]


def test_cli_train_and_sample_ddpm(tmp_path):
    out = tmp_path / 'run'
    r = subprocess.run([str(BIN), 'train', 'ddpm', '--cond', '--epochs', '1', '--n-train', '256', '--eval-n', '100', '--out', str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    w = out / 'ddpm_cond_mnist.safetensors'
    assert w.exists() and w.with_suffix('.md').exists() and (out / 'snapshots').is_dir()
    r = subprocess.run([str(BIN), 'sample', 'ddpm', '--digit', '4', '--guidance-scale', '2', '--steps', '5', '-n', '4',
                        '--weights', str(w), '--out', str(tmp_path / 'fours.png')], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'fours.png').read_bytes()[:4] == b'\x89PNG'
    for bad in (['sample', 'ddpm', '--digit', '4', '--steps', '0', '--out', 'x.png'],
                ['sample', 'cgan', '--digit', '4', '--guidance-scale', '2', '--out', 'x.png'],
                ['train', 'cgan', '--cond', '--epochs', '1', '--out', str(tmp_path / 'x')]):
        r = subprocess.run([str(BIN), *bad], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
