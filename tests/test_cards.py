"""Every shipped weight states what it does: each model card figure is measured again from the weights (tests/shipped.py
says how, figure by figure), and a deliberately damaged copy of a shipped weight fails the same check."""
import pytest

from opengen.checkpoints import available_pretrained, load, read_meta, read_safetensors, write_safetensors
from opengen.core import WEIGHTS_DIR
from opengen.diffusion.ablation import arm_runs
from opengen.metrics import measure
from shipped import NOT_REMEASURED, QUALITY, arm_card_figures, card_checks, compare, consistent, dataset_of, full_card_checks, sampler_of, shipped

NAMES = available_pretrained()
# the models whose check samples take the longest (diffusion, the flow, the token prior) each in an xdist group of their own,
# so that one worker draws a model's samples once for every test that needs them; the rest share the group 'cheap'
GROUP = {n: n if n.startswith(('ablation', 'text2img', 'dalle', 'fm_', 'ldm_cond', 'ddpm', 'flow')) else 'cheap' for n in NAMES}


def test_every_shipped_weight_has_a_card_test():
    assert len(NAMES) == 25 and set(GROUP) == set(NAMES), NAMES


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.xdist_group(GROUP[n])) for n in NAMES])
def test_card_states_what_the_weights_do(name):
    meta = shipped(name).meta
    checks = card_checks(shipped(name), meta, sampler_of(shipped(name), name), name)
    assert len(checks) >= (2 if 'classifier' in name else 4), [str(c) for c in checks]
    bad = [str(c) for c in checks if not c.ok]
    assert not bad, '\n'.join(bad)
    # every figure the card states is either re-measured above or listed as a fact of the training run or the machine
    metrics = meta.get('metrics', {})
    if 'evaluation' in meta:                       # an ablation card: its metrics are one of its (re-measured) evaluation rows
        assert any(all(row.get(k) == v for k, v in metrics.items()) for row in meta['evaluation'].values()), metrics
        return
    measured = {c.figure.split('.')[-1].split(' ')[0] for c in checks} | set(meta['check'].get('test_images', {}))
    for key in metrics:
        assert key in measured or key in NOT_REMEASURED, f'{name}: card figure {key!r} is neither re-measured nor listed'


def damaged(tmp_path, name: str, key: str, scale: float = 0.7):
    "A copy of shipped weight `name` with tensor `key` scaled by `scale`, everything else (its card included) unchanged."
    tensors, header = read_safetensors(WEIGHTS_DIR / f'{name}.safetensors')
    assert key in tensors, sorted(tensors)
    write_safetensors(tmp_path / f'{name}.safetensors', {**tensors, key: tensors[key] * scale}, header)
    return load(tmp_path / f'{name}.safetensors')


# one tensor of weights of five families, each scaled by 0.7: the generator's output layer of the GAN (a layer followed by batch
# norm would not do: the norm undoes the scaling), the VAE's and the VQ-VAE's encoders (sampling never runs them: only the
# test-set figures of the check can notice), a coupling of the flow, the output convolution of a diffusion arm
DAMAGE = [('cgan_mnist', 'G.net.7.weight', 'check.samples.fid_clf'), ('vae_mnist', 'encoder.head.2.weight', 'check.test_images.test_elbo_nats'),
          ('vqvae_mnist', 'encoder.4.weight', 'check.test_images.recon_nats'), ('flow_mnist', 'level1.layers.1.net.blocks.0.c1.weight', 'check.test_images.test_bpd'),
          ('ablation_a1_mnist', 'net.out.2.weight', 'evaluation[A1].check[labels].fid_clf'), ('classifier_mnist', 'head.1.weight', 'check.test_images.test_nll')]


@pytest.mark.parametrize('name,key,figure', [pytest.param(*d, marks=pytest.mark.xdist_group(GROUP[d[0]])) for d in DAMAGE])
def test_a_damaged_copy_fails_its_card_test(tmp_path, name, key, figure):
    "One tensor scaled by 0.7, the card unchanged: the card test fails, on the figure that sees that tensor."
    bad = damaged(tmp_path, name, key)
    part = figure.split('.')[1] if figure.startswith('check.') else None      # the part of the card's check that sees the tensor
    checks = card_checks(bad, bad.meta, sampler_of(bad), only=part)
    print('\n'.join(f"{'FAIL' if not c.ok else 'ok  '} {c}" for c in checks))   # `pytest -s -k damaged` shows the figures
    assert figure in {c.figure for c in checks if not c.ok}, [str(c) for c in checks]


def test_a_cards_guidance_selection_is_its_default():
    "Every card that chose its guidance scale on another seed ships that choice, at the sampler and steps it was chosen for."
    from opengen.diffusion.guidance import choose_guidance_scale
    chosen = 0
    for name in NAMES:
        h = read_meta(WEIGHTS_DIR / f'{name}.safetensors')
        sel, cfg = h['meta'].get('guidance_selection'), h['config']
        if not sel: continue
        chosen += 1
        assert sel['seed'] != 0 and choose_guidance_scale(sel['rows'], sel['min_accuracy']) == sel['chosen_s'] == cfg['guidance_scale'], name
        assert all(sel.get(k, cfg[k]) == cfg[k] for k in ('sampler', 'steps')), (name, sel, cfg)
        assert {k: h['meta']['sampler_defaults'][k] for k in ('sampler', 'steps', 'guidance_scale')} == {k: cfg[k] for k in ('sampler', 'steps', 'guidance_scale')}, name
    assert chosen >= 3


def _conditional(name: str) -> bool:
    "Whether a shipped weight's saved config asks for a class (its own `n_classes` or its U-Net's); classifiers aside."
    cfg = read_meta(WEIGHTS_DIR / f'{name}.safetensors')['config']
    return not name.startswith('classifier') and bool(cfg.get('n_classes') or (cfg.get('unet') or {}).get('n_classes'))


FASHION_GENERATORS = [n for n in NAMES if n.endswith('_fashion') and _conditional(n)]


@pytest.mark.parametrize('name', FASHION_GENERATORS)
def test_the_fashion_models_reach_the_bar(name):
    "Every shipped Fashion-MNIST model draws the class it is asked for at least 90 % as often as the classifier reads real images"
    " correctly, and at least 0.8 of the real images' within-class diversity, both at the card's n = 1,000 (the card figures that"
    " `test_card_states_what_the_weights_do` re-measures)."
    meta = read_meta(WEIGHTS_DIR / f'{name}.safetensors')['meta']
    m, real = meta['metrics'], meta['reference_real_data']
    assert meta['eval_n'] == 1000 and 'fashion' in meta['data'], meta.get('data')
    assert m['accuracy'] >= 0.9 * real['accuracy'], (name, m['accuracy'], real['accuracy'])
    assert m['diversity'] >= 0.8 * real['diversity'], (name, m['diversity'], real['diversity'])


def test_every_conditional_family_ships_a_fashion_model():
    "The conditional families of the comparison's Fashion table (CVAE, CGAN, DDPM) each have a Fashion-MNIST weight."
    assert {'cvae_fashion', 'cgan_fashion', 'ddpm_cond_fashion'} <= set(FASHION_GENERATORS), FASHION_GENERATORS


def test_cards_render_their_figures():
    "The Markdown card beside each weight shows the figures of its header (a card that went stale would differ)."
    for name in NAMES:
        meta = read_meta(WEIGHTS_DIR / f'{name}.safetensors')['meta']
        md = (WEIGHTS_DIR / f'{name}.md').read_text()
        for k, v in meta.get('metrics', {}).items():
            if k in QUALITY or k.startswith(('test_', 'valid_')): assert f'{v:.4g}' in md or str(v) in md, (name, k, v)


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in NAMES if GROUP[n] != 'cheap'])
def test_diffusion_card_at_its_full_n(name):
    "`make test-slow`: the diffusion cards' n = 1,000 figures sampled in full (minutes each), to the card's rounding."
    m = shipped(name)
    draw = sampler_of(m, name)
    if 'evaluation' not in m.meta:
        d = m.defaults
        checks = compare('', m.meta['metrics'], measure(*draw(m.meta['eval_n'], sampler=d['sampler'], steps=d['steps'])))
    else:
        checks = [c for arm, row in m.meta['evaluation'].items() for what, opts in arm_runs(m, row).items()
                  for c in compare(f'evaluation[{arm}][{what}].', arm_card_figures(row, what),
                                   measure(*draw(row['n'], **opts), seed=row['seed']))]
    bad = [str(c) for c in checks if not c.ok]
    assert checks and not bad, '\n'.join(bad)


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in NAMES if not n.startswith(('ddpm', 'fm_', 'ldm_cond', 'ablation', 'text2img'))])
def test_card_in_full(name):
    "`make test-slow`: the figures the fast card test reaches from its check (n = 1,000 evaluations, all 10,000 test images), measured in full."
    checks = full_card_checks(shipped(name), shipped(name).meta, sampler_of(shipped(name), name), name)
    bad = [str(c) for c in checks if not c.ok]
    assert checks and not bad, '\n'.join(bad)


@pytest.mark.slow
def test_the_smaller_n_tolerances_hold_on_the_cheap_models():
    "How `consistent`'s tolerances were chosen: on the nine cheap models, their first 250 and 500 samples against the card at"
    " n = 1,000 (`pytest -s -m slow -k tolerances` prints the largest deviation as a fraction of its tolerance)."
    worst = 0.0
    for name in [n for n in NAMES if GROUP[n] == 'cheap' and 'classifier' not in n]:
        meta = shipped(name).meta
        x, y = sampler_of(shipped(name), name)(meta['eval_n'])
        for k in (100, 250, 500):
            ds = dataset_of(meta)
            checks = consistent(meta['metrics'], measure(x[:k], None if y is None else y[:k], ds), k, meta['eval_n'], ds, conditional=y is not None)
            assert all(c.ok for c in checks), [str(c) for c in checks if not c.ok]
            worst = max([worst] + [abs(c.fresh - c.card) / c.tol for c in checks])
    print(f'largest deviation: {worst:.0%} of its tolerance')
    assert worst < 1
