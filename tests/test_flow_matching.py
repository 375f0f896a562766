"""Flow matching (28_flow_matching): the path and its velocity against autograd, conditional = marginal flow matching up to a
constant on a toy with a closed-form field, Tweedie's score, DDIM as an Euler step, the ODE samplers' orders, guidance on the
velocity, the model contract, and the shipped model's acceptance figures (its card is re-measured by test_cards)."""
import math

import pytest
import torch

from opengen.checkpoints import load_pretrained
from opengen.diffusion.ddpm import eps_to_x0
from opengen.diffusion.flow_matching import (ODE_SAMPLERS, FlowMatching, FMTrainCB, HeunSampler, ddpm_to_fm_time, eps_to_score, euler_step, fm_path,
                                             gmm_log_density, gmm_velocity, heun_step, make_ode_sampler, ode_solve, ring_means,
                                             ring_samples, sliced_wasserstein, velocity_target, velocity_to_eps, velocity_to_x0)
from opengen.diffusion.guidance import cfg_combine
from opengen.diffusion.samplers import make_sampler
from opengen.diffusion.unet import unet_preset
from opengen.metrics import reference_row

MU, S = ring_means(), 0.15


def test_the_path_runs_from_data_to_noise_at_the_conditional_velocity():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    assert torch.equal(fm_path(x0, eps, torch.zeros(3)), x0) and torch.equal(fm_path(x0, eps, torch.ones(3)), eps)
    t = torch.rand(3, generator=g).requires_grad_()
    (grad,) = torch.autograd.grad(fm_path(x0, eps, t).sum(), t)
    torch.testing.assert_close(grad, velocity_target(x0, eps).sum((1, 2, 3)))


def test_conditional_and_marginal_losses_differ_by_the_same_constant_for_any_field():
    g = torch.Generator().manual_seed(0)
    fields = [lambda x, t: torch.zeros_like(x), lambda x, t: 0.7 * x - t, lambda x, t: torch.sin(2 * x) * t]
    diffs, C = [], []
    batches = []
    for tv in torch.linspace(0.05, 0.95, 10, dtype=torch.float64).tolist():
        x0, e = ring_samples(20000, MU, S, g), torch.randn(20000, 2, generator=g, dtype=torch.float64)
        xt = fm_path(x0, e, torch.full((20000,), tv, dtype=torch.float64))
        batches.append((tv, xt, velocity_target(x0, e), gmm_velocity(xt, tv, MU, S)))
    for v in fields:
        diffs.append(sum((((v(xt, tv) - uc) ** 2).sum(1) - ((v(xt, tv) - u) ** 2).sum(1)).mean().item() for tv, xt, uc, u in batches) / 10)
    c = sum(((uc - u) ** 2).sum(1).mean().item() for tv, xt, uc, u in batches) / 10
    assert max(diffs) - min(diffs) < 0.03 * c and all(abs(d - c) < 0.03 * c for d in diffs), (diffs, c)
    # a wrong "marginal" field (the conditional mean of x0 alone, not of ε − x0) breaks the identity
    wrong = [sum((((v(xt, tv) - uc) ** 2).sum(1) - ((v(xt, tv) + u) ** 2).sum(1)).mean().item() for tv, xt, uc, u in batches) / 10 for v in fields[1:]]
    assert max(wrong) - min(wrong) > 0.1 * c


@pytest.mark.parametrize('t', [0.05, 0.5, 0.95])
def test_the_score_is_minus_eps_over_sigma(t):
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).requires_grad_()
    (score,) = torch.autograd.grad(gmm_log_density(x, t, MU, S).sum(), x)
    eps_hat = velocity_to_eps(gmm_velocity(x.detach(), t, MU, S), x.detach(), t)
    torch.testing.assert_close(score, eps_to_score(eps_hat, t), atol=1e-8, rtol=1e-8)


def test_conversions_round_trip_and_a_ddpm_point_is_a_rescaled_path_point():
    g = torch.Generator().manual_seed(2)
    x0, eps, t = torch.randn(4, 1, 5, 5, generator=g), torch.randn(4, 1, 5, 5, generator=g), torch.rand(4, generator=g) * 0.9 + 0.05
    xt, v = fm_path(x0, eps, t), velocity_target(x0, eps)
    torch.testing.assert_close(velocity_to_x0(v, xt, t), x0); torch.testing.assert_close(velocity_to_eps(v, xt, t), eps)
    for ab in (0.99, 0.5, 0.02):
        tf, k = ddpm_to_fm_time(torch.tensor(ab))
        torch.testing.assert_close(k * (ab ** 0.5 * x0 + (1 - ab) ** 0.5 * eps), fm_path(x0, eps, tf.expand(4)))


def test_a_ddim_step_is_an_euler_step_in_straight_path_variables():
    ddpm = load_pretrained('ddpm_cond_mnist')
    smp = make_sampler('ddim', ddpm.schedule, eta=0.0, clip_x0=False).set_timesteps(10)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)).double()
    for t in smp.timesteps[1:-1]:
        with torch.no_grad(): eps = ddpm.eps(x.float(), torch.full((3,), t), torch.arange(3)).double()
        x_ddim, _ = smp.step(eps, t, x)
        ab, ab_prev = smp.alpha_bars(t)
        (tf, k), (tn, kn) = ddpm_to_fm_time(torch.tensor(ab)), ddpm_to_fm_time(torch.tensor(ab_prev))
        z_next = k * x + (tn - tf) * (eps - eps_to_x0(eps, x, ab))
        torch.testing.assert_close(z_next / kn, x_ddim, atol=1e-5, rtol=0)


def test_euler_is_first_order_and_heun_second_order():
    a, x1 = 1.3, torch.ones(1, dtype=torch.float64)
    err = {s: [abs(ode_solve(lambda x, t: -a * x, x1, s, n).item() - math.exp(a)) for n in (16, 32, 64)] for s in ODE_SAMPLERS}
    for s, order in (('euler', 1), ('heun', 2)):
        for e1, e2 in zip(err[s], err[s][1:]): assert abs(math.log2(e1 / e2) - order) < 0.15, (s, err[s])


@pytest.mark.parametrize('name, one_step', [('euler', euler_step), ('heun', heun_step)])
def test_the_samplers_interface_equals_the_one_function_steps_and_counts_evaluations(name, one_step):
    v_fn = lambda x, t: torch.sin(3 * x) * (1 + t) - x
    x1 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid, x = torch.linspace(1, 0, 7, dtype=torch.float64).tolist(), x1
    for t, tn in zip(grid[:-2], grid[1:-1]): x = one_step(v_fn, x, t, tn)
    x = euler_step(v_fn, x, grid[-2], grid[-1])                              # Heun's last step, to t = 0, is an Euler step
    calls = []
    out = ode_solve(lambda x, t: calls.append(1) or v_fn(x, t[0]), x1, name, 6)
    torch.testing.assert_close(out, x, atol=1e-12, rtol=0)
    assert len(calls) == make_ode_sampler(name).set_timesteps(6).nfe == {'euler': 6, 'heun': 11}[name]


def test_heun_with_a_corrector_at_zero_is_plain_heun_to_the_end():
    v_fn = lambda x, t: torch.sin(3 * x) * (1 + t) - x
    x1 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid, x = torch.linspace(1, 0, 5, dtype=torch.float64).tolist(), x1
    for t, tn in zip(grid, grid[1:]): x = heun_step(v_fn, x, t, tn)
    smp = HeunSampler(euler_last=False)
    torch.testing.assert_close(ode_solve(lambda x, t: v_fn(x, t[0]), x1, smp, 4), x, atol=1e-12, rtol=0)
    assert smp.nfe == 8


def test_the_exact_field_transports_the_gaussian_to_the_data():
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(3000, 2, generator=g, dtype=torch.float64)
    out = ode_solve(lambda x, t: gmm_velocity(x, float(t[0]), MU, S), x1, 'heun', 25)
    ref, ref2 = ring_samples(3000, MU, S, g), ring_samples(3000, MU, S, g)
    sw = lambda a: sliced_wasserstein(a, ref, generator=torch.Generator().manual_seed(0))
    assert sw(out) < 1.5 * sw(ref2) < 0.2 * sw(x1)


def test_guidance_on_the_velocity_is_the_guidance_formula():
    torch.manual_seed(0)
    m = FlowMatching(unet=unet_preset('tiny', n_classes=10)).eval()
    for p in m.parameters(): p.data.normal_(0, 0.05)                       # a non-trivial network
    x, t, y = torch.randn(4, 1, 28, 28), torch.rand(4), torch.arange(4)
    from opengen.diffusion.guidance import guided
    with torch.no_grad():
        vc, vu = m.velocity(x, t, y), m.velocity(x, t, None)
        torch.testing.assert_close(guided(m.velocity, m.with_null, x, t, y, 2.5), cfg_combine(vc, vu, 2.5), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(guided(m.velocity, m.with_null, x, t, y, 0.0), vu)


@pytest.mark.filterwarnings('ignore::UserWarning')   # an untrained model's x̂0 leaves the data range
def test_the_model_keeps_the_contract_and_refuses_bad_options():
    m = FlowMatching(unet=unet_preset('tiny', n_classes=10))
    m.train()
    a = m.sample(3, [1, 2, 3], generator=torch.Generator().manual_seed(0), steps=2, sampler='euler')
    b = m.sample(3, [1, 2, 3], generator=torch.Generator().manual_seed(0), steps=2, sampler='euler')
    assert torch.equal(a, b) and a.shape == (3, 1, 28, 28) and m.training
    for bad in (dict(steps=0), dict(steps=1001), dict(sampler='ddim'), dict(guidance_scale=float('nan'))):
        with pytest.raises(ValueError) as e: m.sample(2, [1, 2], **bad)
        assert len(str(e.value).splitlines()) == 1
    assert m.samplers == ('heun', 'euler') and m.config['sampler'] == 'heun'


def test_the_training_step_regresses_the_conditional_velocity():
    class Fixed(torch.nn.Module):
        "What FMTrainCB needs of a model, with the U-Net replaced by a known function."
        time_scale = 1.
        def net(self, x, t): return 0.5 * x + t.view(-1, 1, 1, 1)
        def train_inputs(self, y): return {}
        def to_path_space(self, x): return x
    class Learn: pass
    learn, cb = Learn(), FMTrainCB()
    learn.model, learn.batch = Fixed(), (torch.rand(6, 1, 4, 4) * 2 - 1, torch.zeros(6, dtype=torch.long))
    torch.manual_seed(5); cb.predict(learn); cb.get_loss(learn)
    torch.manual_seed(5)
    x0 = learn.batch[0]; t = torch.rand(6); eps = torch.randn_like(x0)
    expected = (learn.model.net(fm_path(x0, eps, t), t) - (eps - x0)).pow(2).mean()
    torch.testing.assert_close(learn.loss, expected)


def test_the_shipped_model_meets_its_acceptance():
    "fm_cond_mnist at its defaults (<= 16 NFE, a guided evaluation counted once): accuracy >= 99 %, classifier FID <= 2x real data, n = 1,000 (test_cards re-measures these figures)."
    m = load_pretrained('fm_cond_mnist')
    meta = m.meta
    assert meta['sampler_defaults']['nfe'] <= 16 and meta['eval_n'] == 1000
    assert meta['sampler_defaults']['nfe'] == m.nfe() == make_ode_sampler(m.defaults['sampler']).set_timesteps(m.defaults['steps']).nfe
    assert meta['metrics']['accuracy'] >= 0.99
    assert meta['metrics']['fid_clf'] <= 2 * reference_row('mnist', 1000)['fid_clf']


def test_the_recipe_chooses_the_scale_on_seed_one_and_adopts_it(monkeypatch):
    "A flow recipe's `finish`: `guidance_study` on seed 1 at the default sampler, the scale `choose_guidance_scale` picks becomes the default and the saved config."
    import opengen.diffusion.guidance as G
    from opengen.checkpoints import RECIPES
    from opengen.diffusion.flow_matching import flow_matching_finish
    calls = []
    def fake_study(model, scales, n, seed, dataset, **options):
        calls.append(dict(scales=scales, n=n, seed=seed, **options))
        return [{'s': s, 'accuracy': a, 'fid_clf': f} for s, a, f in zip(scales, (0.95, 0.99, 1.0), (1.2, 1.5, 2.0))]
    monkeypatch.setattr(G, 'guidance_study', fake_study)
    m = FlowMatching(unet=unet_preset('tiny', n_classes=10), sampler='euler', steps=4)
    class Learn: history = [{'valid_loss': 0.5}]
    meta = flow_matching_finish(scales=(1, 1.5, 2), min_accuracy=0.98)(m, Learn(), 'mnist', 1000)
    assert calls == [dict(scales=(1, 1.5, 2), n=500, seed=1, sampler='euler', steps=4)]
    sel = meta['guidance_selection']
    assert sel['chosen_s'] == 1.5 and sel['sampler'] == 'euler' and sel['steps'] == 4       # s = 1 has the lower FID but misses 98 %
    assert m.defaults['guidance_scale'] == m.config['guidance_scale'] == 1.5
    assert meta['sampler_defaults'] == {'steps': 4, 'guidance_scale': 1.5, 'sampler': 'euler', 'nfe': 4}
    # other options are chosen for, and adopted, only when asked; `adopt=False` leaves the model alone
    sel = G.select_guidance_scale(m, scales=(1, 1.5, 2), min_accuracy=0.9, adopt=False, sampler='heun', steps=3)
    assert sel['chosen_s'] == 1 and calls[-1]['sampler'] == 'heun' and m.defaults['sampler'] == 'euler' and m.defaults['guidance_scale'] == 1.5
    G.select_guidance_scale(m, scales=(1, 1.5, 2), min_accuracy=0.9, sampler='heun', steps=3)
    assert m.defaults == {'steps': 3, 'guidance_scale': 1, 'sampler': 'heun'} and m.config['sampler'] == 'heun' and m.nfe() == 5
    assert RECIPES['ldm_cond_mnist'].config['sampler'] == 'euler'
