"""The shipped weights against their model cards, for the tests: each figure a card states about its weights is measured
again from the weights (never read back), with one sampling run per (weights, n, settings) per test process.

How each kind of figure is re-measured (`card_checks`):
- quality figures of `evaluate` (FID, precision, recall, accuracy, diversity) and the real-data reference row: a fresh
  seeded evaluation at the card's n, compared to the card's rounding (`card_tol`);
- diffusion models, whose evaluations at n = 1,000 cost minutes: only the first samples of the card's evaluation are
  drawn (`evaluate` draws batch after batch from one seeded generator, so a run with fewer samples is a prefix of the
  card's run); they are compared, to `card_tol`, with the card's own figures for exactly those samples (the n = 500 rows of
  the steps and guidance studies of `ddpm_cond_mnist`; the 250-sample `check` of each ablation evaluation), and the
  card's n = 1,000 figures with the same samples within the stated tolerance of a smaller n (`consistent`);
- the VAEs' test ELBO: recomputed on the seeded binarisation of the test set (`elbo_on_test_set`), to its rounding;
- validation losses that training measured with the raw (not averaged) weights on random binarisations, latents, noise
  and times: recomputed with the shipped weights on the first test images (`VALID_N`; 1,000 for diffusion and flow
  matching) within a stated tolerance;
- the classifiers' test accuracy: recomputed on the whole test set;
- the VQ-VAE's reconstruction report (nats per image, codebook usage and perplexity on all 10,000 test images, the
  metrics of the first 1,000 reconstructions): recomputed from the weights;
- the token prior's bits per code (held-out, seen and null captions, all 10,000 test images) and its seen-template row:
  recomputed; its evaluation samples are drawn with the held-out caption templates, as its card's were.
Figures of things that are not in the weights (training wall time, steps, history, images/s on that machine, repeats with
other training seeds, snapshots during training) are listed in `NOT_REMEASURED` with the reason.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from opengen.checkpoints import load_pretrained
from opengen.diffusion.ablation import arm_runs
from opengen.data import load_dataset, to_pixel_range
from opengen.diffusion.ddpm import Diffusion
from opengen.metrics import CHECK_N, CHECK_TEST_N, QUALITY, DomainClassifier, classifier_accuracy, classifier_check, draw_samples, measure, reference_row
from opengen.models.ae import AE, recon_loss
from opengen.models.vae import VAE, elbo_on_test_set
from opengen.models.flows import ImageFlow, bits_per_dim_on_test_set
from opengen.models.vqvae import VQVAE, reconstruction_report
from opengen.tokens.prior import TokenPrior, bits_per_code, bits_per_code_by_condition
from opengen.diffusion.flow_matching import FlowMatching, fm_path, velocity_target
from opengen.diffusion.latent import KLAutoencoder, autoencoder_report

NOT_REMEASURED = {                  # card entries that describe the training run or the machine, not the weights
    'images_per_s': 'sampling speed of the machine that made the card', 's_per_image': 'likewise',
    'wall_time_s': 'training wall time', 'train_time_s': 'training wall time', 'history': 'per-epoch training log',
    'steps': 'optimizer steps of training', 'd_steps': 'likewise', 'g_steps': 'likewise', 'epochs': 'training length',
    'progress': 'snapshots taken during training (their weights are not shipped)',
    'repeats': 'runs with other training seeds (their weights are not shipped)',
    'guidance_choice': 'a study on seed 1 that chose the default guidance scale (not in the fast suite)',
    'sampling_seed_1': 'the same evaluation with sampling seed 1 (not in the fast suite)',
    'valid_bpd': "validation bits/dim of the training run's last epoch (the weights before averaging, random dequantization noise)",
}
def card_sample_options(model) -> dict:
    "The sampling options of a card's evaluation where they are not the defaults: a text prior is evaluated on its held-out caption templates."
    return {'templates': 'heldout'} if isinstance(model, TokenPrior) and model.condition == 'text' else {}


class Check(NamedTuple):
    "One card figure: what the card says, what was measured now, and the allowed difference."
    figure: str
    card: float
    fresh: float
    tol: float

    @property
    def ok(self) -> bool:
        if self.card is None or self.fresh is None: return self.card is None and self.fresh is None
        return abs(self.fresh - self.card) <= self.tol

    def __str__(self): return f'{self.figure}: card {self.card}, measured {self.fresh} (tolerance {self.tol:.3g})'


def card_tol(key: str, card: float) -> float:
    "The same seeded computation again: the card's rounding (4 decimals) plus another machine's float noise."
    if key.startswith('fid'): return 1e-3 * max(1.0, abs(card))
    return 1.01e-3                 # fractions of 1,000 samples: one sample more or less is 0.001


def binomial_tol(p: float, m: int, n: int, z: float = 4.0) -> float:
    "|acc(first m of n) - acc(all n)| allowed: z standard deviations of (1 - m/n)(acc_m - acc_rest), plus rounding."
    p = min(max(p, 0.005), 0.995)
    return z * (1 - m / n) * math.sqrt(p * (1 - p) * (1 / m + 1 / (n - m))) + 1e-3


def consistent(card_row: dict, fresh: dict, m: int, n: int, dataset: str = 'mnist', conditional: bool = True) -> list[Check]:
    """A card's evaluation at n against the measurement of its first m samples (m < n), within the sampling tolerance of m.

    Accuracy: `binomial_tol`. FID: at fewer samples FID is biased upwards by about what real data's FID rises from n to m,
    so FID_m must lie within 0.4 (ref_m - ref_n) + 0.3 FID_n of FID_n + (ref_m - ref_n). Diversity (labels given): within
    0.03; of unconditional samples, whose classes the classifier assigns: within 0.1; both for m ≥ 250, and a factor
    sqrt(250 / m) wider below (the check's m = 100: fewer pairs per class). Precision and recall at a smaller n
    move too much to say (kNN radii grow) and are compared only exactly, on the card's own figures for those samples.
    These tolerances were set on the nine shipped models that are cheap to sample (measured at m = 250 and 500 against
    their cards at n = 1,000: the largest deviation was 55 % of its tolerance; with m = 100 added, 89 %: `pytest -s -m slow
    -k tolerances` measures them again) and are applied to the diffusion models."""
    ref_m, ref_n = reference_row(dataset, m)['fid_clf'], reference_row(dataset, n)['fid_clf']
    bias = ref_m - ref_n
    out = [Check(f'fid_clf (n={n}) from its first {m}', card_row['fid_clf'] + bias, fresh['fid_clf'],
                 0.4 * bias + 0.3 * card_row['fid_clf'])]
    if card_row.get('accuracy') is not None:
        out.append(Check(f'accuracy (n={n}) from its first {m}', card_row['accuracy'], fresh['accuracy'],
                         binomial_tol(card_row['accuracy'], m, n)))
    if card_row.get('diversity') is not None:
        out.append(Check(f'diversity (n={n}) from its first {m}', card_row['diversity'], fresh['diversity'],
                         (0.03 if conditional else 0.1) * math.sqrt(max(1.0, 250 / m))))
    return out


def compare(prefix: str, card: dict, fresh: dict, keys=QUALITY) -> list[Check]:
    "Exact re-measurement: every `keys` figure the card states."
    return [Check(f'{prefix}{k}', card[k], fresh[k], card_tol(k, card[k])) for k in keys if k in card and card[k] is not None]


# --- sampling once per process --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def shipped(name: str):
    "The shipped model `name`, loaded once per process (tests read it; they must not change it)."
    return load_pretrained(name)


def sampler_of(model, cache_key: str | None = None):
    "A function `(n, **options) -> (x, labels)` drawing like `evaluate` with seed 0; cached per process when `cache_key`."
    if cache_key is None: return lambda n, **o: draw_samples(model, n, **o)[:2]
    return lambda n, **o: _drawn(cache_key, n, tuple(sorted(o.items())))


@functools.lru_cache(maxsize=None)
def flow_test_bpd(name: str) -> dict:
    "The shipped flow's bits per dimension on all 10,000 test images, as its card measured them (once per process: minutes)."
    return bits_per_dim_on_test_set(shipped(name))


@functools.lru_cache(maxsize=None)
def vq_report(name: str) -> dict:
    "The shipped VQ-VAE's reconstruction report on all 10,000 test images (once per process)."
    return reconstruction_report(shipped(name))


def vq_checks(model: VQVAE, m: dict, rep: dict) -> list[Check]:
    "A VQ-VAE card's reconstruction figures against a fresh report: nats and perplexity to their rounding, usage to one code."
    tol = {'recon_nats': 2e-3, 'perplexity': 0.01, 'usage': 0.5 / model.K + 1e-4}
    return [Check(k, m[k], rep[k], tol.get(k) or card_tol(k.removeprefix('recon_'), m[k])) for k in rep if k in m]


def prior_checks(model: TokenPrior, meta: dict, draw, ds: str) -> list[Check]:
    "A token prior's bits per code (each condition, all test images) and its seen-template row, measured again."
    out = []
    for k, v in meta['metrics'].items():
        if not k.startswith('bits_per_code_'): continue
        which = k.removeprefix('bits_per_code_')
        opts = {'null': True} if which == 'null' else {'templates': which} if which in ('seen', 'heldout') else {}
        out.append(Check(k, v, bits_per_code(model, ds, **opts), 2e-4))
    if meta.get('seen_templates'):
        out += compare('seen_templates.', meta['seen_templates'], measure(*draw(meta['eval_n'], templates='seen'), ds))
    return out


@functools.lru_cache(maxsize=None)
def _drawn(name: str, n: int, options: tuple):
    return draw_samples(shipped(name), n, **dict(options))[:2]


# --- the figures of each kind of card -------------------------------------------------------------------------------
def _reference(meta: dict, dataset: str) -> list[Check]:
    ref = meta.get('reference_real_data')
    return compare('reference_real_data.', ref, reference_row(dataset, meta['eval_n'])) if ref else []


# Validation losses are re-measured on the first VALID_N test images (training measured them on all 10,000): the tolerance
# of the card's rounding and of training's random binarisation, widened by `mean_tol` for the smaller n.
VALID_N = 2000


@torch.no_grad()
def vae_valid_parts(model: VAE, dataset: str = 'mnist', seed: int = 0, n: int = VALID_N) -> tuple[float, float]:
    "Mean reconstruction NLL and KL (nats/image) of `model.loss` on the first n test images as training's validation sees"
    " them: dynamically binarised for the Bernoulli likelihood, grey levels kept for the others."
    te = load_dataset(dataset, 'test')
    x, y = to_pixel_range(te.x[:n]), te.y[:n] if model.conditional else None
    model.eval(); torch.manual_seed(seed)                                      # the binarisation and the draws of z
    seen = torch.bernoulli if model.likelihood == 'bernoulli' else (lambda b: b)
    parts = [model.loss(seen(x[i:i + 1000]), None if y is None else y[i:i + 1000])[1:] for i in range(0, len(x), 1000)]
    return tuple(torch.stack(p).mean().item() for p in zip(*parts))


@torch.no_grad()
def ae_valid_recon(model: AE, dataset: str = 'mnist', n: int = VALID_N) -> float:
    "Mean `recon_loss` (Bernoulli NLL, nats/image) of the first n test images' reconstructions, as training's validation measures it."
    model.eval()
    return torch.stack([recon_loss(model(x), x) for x in to_pixel_range(load_dataset(dataset, 'test').x[:n]).split(1000)]).mean().item()


@torch.no_grad()
def diffusion_valid_loss(model: Diffusion, dataset: str = 'mnist', n: int = 1000, seed: int = 0) -> float:
    "The training loss (labels dropped as in training) on the first n test images, t, ε and the dropout drawn from `seed`."
    te = load_dataset(dataset, 'test')
    x0, y = to_pixel_range(te.x[:n], (-1., 1.)), te.y[:n]
    model.eval(); torch.manual_seed(seed); out = []
    for xb, yb in zip(x0.split(500), y.split(500)):
        t, eps = torch.randint(0, model.T, (len(xb),)), torch.randn_like(xb)
        pred = model.net(model.schedule.q_sample(xb, t, eps), t, **model.train_inputs(yb))
        out.append(((pred - model.target(xb, eps, t)) ** 2).flatten(1).mean(1))
    return torch.cat(out).mean().item()


@torch.no_grad()
def flow_valid_loss(model: FlowMatching, dataset: str = 'mnist', n: int = 1000, seed: int = 0) -> float:
    "The flow-matching loss (labels dropped as in training) on the first n test images, t, ε, the dropout (and a latent model's posterior draws) from `seed`."
    te = load_dataset(dataset, 'test')
    x, y = to_pixel_range(te.x[:n], model.fit_defaults['pixel_range']), te.y[:n]
    model.eval(); torch.manual_seed(seed); out = []
    for xb, yb in zip(x.split(500), y.split(500)):
        x0 = model.to_path_space(xb)
        t, eps = torch.rand(len(xb)), torch.randn_like(x0)
        pred = model.net(fm_path(x0, eps, t), model.time_scale * t, **model.train_inputs(yb))
        out.append(((pred - velocity_target(x0, eps)) ** 2).flatten(1).mean(1))
    return torch.cat(out).mean().item()


@functools.lru_cache(maxsize=None)
def ae_report(name: str) -> dict:
    "The shipped first stage's reconstruction report on all 10,000 test images (once per process)."
    return autoencoder_report(shipped(name))


def ae_checks(m: dict, rep: dict) -> list[Check]:
    "A first stage's card against a fresh report: nats, KL and the scale to their rounding, the reconstruction metrics as `compare` does."
    tol = {'recon_nats': 2e-3, 'kl_nats': 0.011, 'scale': 1.1e-5, 'scaled_mean_std': 1.1e-4}
    return [Check(k, m[k], rep[k], tol.get(k) or card_tol(k.removeprefix('recon_'), m[k])) for k in rep if k in m]


@functools.lru_cache(maxsize=None)
def classifier_test_accuracy(name: str) -> float:
    "Accuracy of the shipped classifier `name` on its whole test set, measured once per process."
    return classifier_accuracy(shipped(name), dataset_of(shipped(name).meta))


def dataset_of(meta: dict) -> str:
    return 'fashion' if 'fashion' in (meta.get('data', '') + meta.get('description', '')).lower() else 'mnist'


def fresh_check(model, meta: dict, draw, parts: tuple = ('samples', 'test_images')) -> dict:
    """The `check` block of a card, measured now from the weights: the quality figures of the first `check n` samples of
    the card's evaluation (`evaluate`'s prefix) and each test-set figure on the first `check n` test images (the n the card
    states, else `CHECK_N` / `CHECK_TEST_N`), computed by the same library calls as the recipe's card (`save_evaluated` and
    the family's finish); only the `parts` asked for. An ablation arm keeps its checks in its evaluation rows (`_arm_checks`)."""
    ds, card, out = dataset_of(meta), meta.get('check', {}), {}
    if 'eval_n' in meta and 'evaluation' not in meta and 'samples' in parts:
        n = card.get('samples', {}).get('n', CHECK_N)
        x, y = draw(n, **card_sample_options(model))
        out['samples'] = {'n': n, **{k: round(v, 4) for k, v in measure(x, y, ds).items() if k in QUALITY and v is not None}}
    if 'test_images' not in parts: return out
    n = card.get('test_images', {}).get('n', 1000 if isinstance(model, DomainClassifier) else CHECK_TEST_N)
    test = None
    if isinstance(model, DomainClassifier): test = {k: v for k, v in classifier_check(model, ds, n).items() if k != 'n'}
    elif isinstance(model, VAE): test = {'test_elbo_nats': round(elbo_on_test_set(model, ds, n=n), 4)}
    elif isinstance(model, ImageFlow): test = {f'test_{k}': v for k, v in bits_per_dim_on_test_set(model, ds, n=n).items() if k in ('bpd', 'bpd_single')}
    elif isinstance(model, VQVAE): test = {k: v for k, v in reconstruction_report(model, ds, n=n, n_metrics=CHECK_N).items() if k not in ('n', 'metrics_n')}
    elif isinstance(model, TokenPrior): test = {f'bits_per_code_{k}': round(v, 4) for k, v in bits_per_code_by_condition(model, ds, n).items()}
    elif isinstance(model, KLAutoencoder): test = {k: v for k, v in autoencoder_report(model, ds, n=n, n_metrics=CHECK_N).items() if k not in ('n', 'metrics_n')}
    if test is not None: out['test_images'] = {'n': n, **test}
    return out


def check_tol(key: str, card: float) -> float:
    "A check figure measured again: its rounding (4 decimals) and another machine's float noise."
    return card_tol(key, card) if key in QUALITY else 2e-4 + 1e-5 * abs(card)


# How far a card's figure on all N test images may lie from the same figure on its first m (its `check`): z = 4 standard
# errors of a mean of m of N images, sqrt(1/m - 1/N) * sd, with sd the spread of the per-image values relative to their mean.
# Measured once on the first 1,000 test images of the shipped weights (per-image values of the same computations): ELBO
# 24-36 % of the mean (vae2d the widest), bits/dim 24 %, reconstruction nats 26 %, KL 19 %, bits per code 20 %; the
# constants are the largest, rounded up. Figures whose value at fewer images is biased rather than noisy (codebook usage
# and perplexity, the FID-type figures of reconstructions) are compared exactly on the prefix only.
PER_IMAGE_REL_SD = {'test_elbo_nats': 0.4, 'test_bpd': 0.3, 'test_bpd_single': 0.3, 'recon_nats': 0.3, 'kl_nats': 0.3,
                    'bits_per_code_heldout': 0.25, 'bits_per_code_seen': 0.25, 'bits_per_code_null': 0.25, 'bits_per_code_test': 0.25}


def mean_tol(key: str, card: float, m: int, n: int = 10000, z: float = 4.0) -> float | None:
    "The allowed |full − prefix| of a per-image mean (`PER_IMAGE_REL_SD`), or None for a figure compared on its prefix only."
    if key == 'test_accuracy': return binomial_tol(card, m, n)
    rel = PER_IMAGE_REL_SD.get(key)
    return None if rel is None else z * rel * abs(card) * math.sqrt(1 / m - 1 / n) + 1e-3


def card_checks(model, meta: dict, draw, name: str | None = None, only: str | None = None) -> list[Check]:
    """Every figure of the card `meta` that `model`'s weights determine, measured again (`draw` samples like `evaluate`;
    `name`: shipped, share measurements): its `check` block exactly, and from it every full-size figure within the tolerance
    of the smaller n (`consistent`, `mean_tol`); the figures whose measurement costs little, at full size. `only`: just the
    check block's part 'samples' or 'test_images' (what a damaged copy's test needs)."""
    ds, m, out = dataset_of(meta), meta.get('metrics', {}), []
    if 'evaluation' in meta:                                                   # an ablation arm (26_ablation)
        return _arm_checks(model, meta, draw, ds)
    card, fresh = meta.get('check', {}), fresh_check(model, meta, draw, (only,) if only else ('samples', 'test_images'))
    assert card, f'the card has no check block: python tools/card_checks.py --write {name or "NAME"}'
    if only:
        return [Check(f'check.{only}.{k}', v, fresh[only].get(k), check_tol(k, v)) for k, v in card[only].items() if k != 'n']
    for part in ('samples', 'test_images'):
        assert (part in card) == (part in fresh), (part, sorted(card), sorted(fresh))
        if part not in card: continue
        out += [Check(f'check.{part}.{k}', v, fresh[part].get(k), check_tol(k, v)) for k, v in card[part].items() if k != 'n']
    if 'samples' in fresh:                                                     # the card's evaluation at n from its first samples
        k, n = fresh['samples']['n'], meta['eval_n']
        out += consistent(m, fresh['samples'], k, n, ds, conditional=model.condition != 'none')
        out += _reference(meta, ds)
    for key, v in card.get('test_images', {}).items():                         # a test-set figure from its first images
        tol = mean_tol(key, m[key], card['test_images']['n']) if key in m else None
        if key in m and tol is not None: out.append(Check(f'{key} (all test images) from its first {card["test_images"]["n"]}', m[key], v, tol))
    if isinstance(model, ImageFlow):                                           # the temperature rows, from their first samples
        for tau, row in meta.get('by_temperature', {}).items():      # at the default temperature: the check's own samples
            x, y = draw(CHECK_N, **({} if float(tau) == model.temperature else {'temperature': float(tau)}))
            out += [c._replace(figure=f'by_temperature[{tau}].{c.figure}') for c in consistent(row, measure(x, y, ds), CHECK_N, meta['eval_n'], ds)]
    if isinstance(model, TokenPrior) and meta.get('seen_templates'):           # the seen-template row, likewise
        x, y = draw(CHECK_N, templates='seen')
        out += [c._replace(figure=f'seen_templates.{c.figure}') for c in consistent(meta['seen_templates'], measure(x, y, ds), CHECK_N, meta['eval_n'], ds)]
    if isinstance(model, Diffusion) or isinstance(model, FlowMatching):
        out += _study_checks(model, meta, draw, ds)
    if isinstance(model, FlowMatching) and 'valid_loss' in m:
        out.append(Check('valid_loss (1,000 test images)', m['valid_loss'], flow_valid_loss(model, ds), 0.15 * m['valid_loss']))
    if isinstance(model, VAE) and 'valid_recon_nats' in m:
        rec, kl = vae_valid_parts(model, ds)
        out += [Check(f'valid_recon_nats (first {VALID_N} test images)', m['valid_recon_nats'], rec,     # a density can exceed 1
                      1.0 + 0.01 * abs(m['valid_recon_nats']) + mean_tol('recon_nats', m['valid_recon_nats'], VALID_N)),
                Check(f'valid_kl_nats (first {VALID_N} test images)', m['valid_kl_nats'], kl,
                      0.5 + 0.02 * m['valid_kl_nats'] + mean_tol('kl_nats', m['valid_kl_nats'], VALID_N))]
    elif isinstance(model, AE) and 'valid_recon_nats' in m:
        out.append(Check(f'valid_recon_nats (first {VALID_N} test images)', m['valid_recon_nats'], ae_valid_recon(model, ds),
                         1.0 + 0.01 * abs(m['valid_recon_nats']) + mean_tol('recon_nats', m['valid_recon_nats'], VALID_N)))
    return out


def full_card_checks(model, meta: dict, draw, name: str) -> list[Check]:
    """`make test-slow`: every figure of a card that is not a diffusion model's or an ablation arm's (those:
    `test_diffusion_card_at_its_full_n`), measured again in full, to the card's rounding: the evaluation at its n, the
    test-set figures on all 10,000 test images (minutes for the flow's 8 dequantization draws per image)."""
    ds, m, out = dataset_of(meta), meta.get('metrics', {}), []
    if 'test_accuracy' in m: return [Check('test_accuracy', m['test_accuracy'], classifier_test_accuracy(name), 1.01e-4)]
    out += compare('', m, measure(*draw(meta['eval_n'], **card_sample_options(model)), ds)) + _reference(meta, ds)
    if 'test_elbo_nats' in m: out.append(Check('test_elbo_nats', m['test_elbo_nats'], elbo_on_test_set(model, ds), 0.0051))
    if isinstance(model, ImageFlow) and 'test_bpd' in m:
        tb = flow_test_bpd(name)
        out += [Check('test_bpd', m['test_bpd'], tb['bpd'], 0.00051), Check('test_bpd_single', m['test_bpd_single'], tb['bpd_single'], 0.00051)]
        for tau, row in meta.get('by_temperature', {}).items():
            out += compare(f'by_temperature[{tau}].', row, measure(*draw(meta['eval_n'], temperature=float(tau)), ds))
    if isinstance(model, VQVAE) and 'usage' in m: out += vq_checks(model, m, vq_report(name))
    if isinstance(model, TokenPrior): out += prior_checks(model, meta, draw, ds)
    if isinstance(model, KLAutoencoder) and 'recon_nats' in m: out += ae_checks(m, ae_report(name))
    return out


def _study_checks(model, meta: dict, draw, ds: str) -> list[Check]:
    """A diffusion or flow-matching card: the rows of its studies at the default sampler settings (n = 500 of the same
    seeded run) from the check's first samples, within the tolerance of the smaller n; its validation loss."""
    d, out, m = model.defaults, [], meta['metrics']
    study = [r for r in meta.get('steps_study', []) if r['sampler'] == d['sampler'] and r['steps'] == d['steps']]
    study += [r | {'sampler': d['sampler'], 'steps': d['steps']} for r in meta.get('guidance_study', []) if r['s'] == d['guidance_scale']]
    # a card that carries a study (ddpm_cond_mnist) must have a row at its defaults; one without (ddpm_cond_fashion) is checked on its n = 1,000 figures
    assert study or not ({'steps_study', 'guidance_study'} & set(meta)), 'the card has no study row at its default sampler settings to re-measure'
    k = meta['check']['samples']['n']
    x, y = draw(k, **card_sample_options(model))                               # the check's own samples (the defaults): drawn once
    fresh = measure(x, y, ds)
    for r in study:
        name = f"{'guidance' if 's' in r else 'steps'}_study[{r['sampler']} {r['steps']}, s={d['guidance_scale']}]"
        out += [c._replace(figure=f'{name}.{c.figure}') for c in consistent(r, fresh, k, r['n'], ds)]
    if isinstance(model, Diffusion) and 'valid_loss' in m:
        out.append(Check('valid_loss (1,000 test images)', m['valid_loss'], diffusion_valid_loss(model, ds), 0.15 * m['valid_loss']))
    return out


def arm_card_figures(row: dict, what: str) -> dict:
    "The n = 1,000 figures an ablation row states for one of its runs (its precision, recall and diversity are the held-out run's)."
    if what == 'seen': return {'fid_clf': row['fid_clf_seen'], 'accuracy': row['accuracy_seen']}
    return ({k: row[k] for k in ('fid_clf', 'precision', 'recall', 'diversity')}
            | {'accuracy': row['accuracy_heldout'] if what == 'heldout' else row['accuracy_seen']})


def _arm_checks(model, meta: dict, draw, ds: str) -> list[Check]:
    "An ablation card: each evaluation's `check` (its first samples) exactly, and the evaluation's n = 1,000 figures from them."
    out = []
    for arm, row in meta['evaluation'].items():
        assert 'check' in row, f'evaluation {arm} has no check rows: add them with opengen.diffusion.ablation.record_check'
        for what, opts in arm_runs(model, row).items():
            card_check = row['check'][what]
            x, y = draw(card_check['n'], **opts)
            fresh = measure(x, y, ds, seed=row['seed'])
            out += compare(f'evaluation[{arm}].check[{what}].', card_check, fresh)
            out += [c._replace(figure=f'evaluation[{arm}][{what}].{c.figure}')
                    for c in consistent(arm_card_figures(row, what), fresh, card_check['n'], row['n'], ds, conditional=y is not None)]
    return out
