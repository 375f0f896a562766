"""The redesign's promises, over every shipped weight: one model contract (`opengen.nn.Generative`), complete saved
configs (`Configurable`), one recipe per shipped weight, all trained through the one `fit`, and no import cycle."""
import inspect
import subprocess
import sys

import pytest
import torch
from torch import nn

import opengen.cli  # noqa: F401  (imports every family, so every recipe is registered)
import opengen.learner
from opengen.checkpoints import (RECIPES, Configurable, available_pretrained, constructor_parameters, get_recipe, load,
                                 read_meta, save)
from opengen.core import WEIGHTS_DIR
from opengen.diffusion.text import TextDiffusion
from opengen.learner import train
from opengen.nn import CONDITIONS, Generative
from shipped import shipped

NAMES = available_pretrained()
GENERATIVE = [n for n in NAMES if not n.startswith('classifier')]
G = lambda s: torch.Generator().manual_seed(s)


def quick(model) -> dict:
    "Cheap sampling options: 3 denoising steps for a diffusion model."
    return {'steps': 3} if 'steps' in model.sample_options else {}


def labels_for(model, n: int):
    return None if model.condition == 'none' else torch.arange(n) % model.n_classes


# --- the model contract ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', GENERATIVE)
def test_every_shipped_generative_model_keeps_the_contract(name):
    m = load(WEIGHTS_DIR / f'{name}.safetensors')                   # a private copy: this test switches its mode
    assert isinstance(m, Generative) and m.condition in CONDITIONS and isinstance(m.sample_options, tuple)
    assert (m.n_classes > 0) == (m.condition != 'none')              # declared, not discovered from a signature
    y = labels_for(m, 6)
    for mode in (True, False):                                       # the mode it finds is the mode it leaves
        m.train(mode)                                                # (a frozen part, like the token prior's VQ-VAE, may stay in eval)
        before = [sub.training for sub in m.modules()]
        assert m.training == mode
        x = m.sample(6, y, generator=G(0), **quick(m))
        assert [sub.training for sub in m.modules()] == before, f'{name}: sample() did not restore train({mode})'
    assert x.shape == (6, 1, 28, 28) and x.device.type == 'cpu' and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and torch.isfinite(x).all()
    assert torch.equal(x, m.sample(6, y, generator=G(0), **quick(m)))            # the same seed, the same images
    assert not torch.equal(x, m.sample(6, y, generator=G(1), **quick(m)))        # another seed, other images


@pytest.mark.parametrize('name', GENERATIVE)
def test_bad_labels_and_options_are_clear_value_errors(name):
    m = shipped(name)
    C = m.n_classes
    if m.condition == 'none':
        with pytest.raises(ValueError, match='unconditional'): m.sample(2, [1, 2])
    else:
        with pytest.raises(ValueError, match=f'0\\.\\.{C - 1}'): m.sample(2, [1, C], **quick(m))
        with pytest.raises(ValueError, match='for 2 images'): m.sample(2, [1], **quick(m))
    if m.condition == 'label':
        with pytest.raises(ValueError, match='pass labels'): m.sample(2, **quick(m))
    with pytest.raises(ValueError, match='takes no option'): m.sample(2, labels_for(m, 2), colour='red')
    with pytest.raises(ValueError, match='positive int'): m.sample(0, labels_for(m, 0))
    if 'guidance_scale' in m.sample_options and m.condition != 'none':
        for s in (float('nan'), float('inf')):
            with pytest.raises(ValueError, match='finite'): m.sample(2, labels_for(m, 2), guidance_scale=s, **quick(m))


def test_text_models_take_prompts_or_captions_of_labels():
    m = shipped('text2img_mnist')
    assert m.condition == 'text' and {'prompts', 'templates'} <= set(m.sample_options)
    a = m.sample(2, prompts=['a handwritten seven', 'a handwritten one'], generator=G(0), steps=3)
    b = m.sample(2, [7, 1], generator=G(0), steps=3)             # labels are read as captions of the first template
    assert torch.equal(a, b)


# --- complete configs -----------------------------------------------------------------------------------------------
def missing_parameters(cls: type, config: dict) -> set:
    "The constructor parameters of `cls` (along its hierarchy) that a saved config does not name."
    return set(constructor_parameters(cls)) - set(config)


@pytest.mark.parametrize('name', NAMES)
def test_every_saved_config_names_every_constructor_parameter(name):
    h = read_meta(WEIGHTS_DIR / f'{name}.safetensors')
    m = shipped(name)
    assert not missing_parameters(type(m), h['config']), (name, missing_parameters(type(m), h['config']))
    if 'unet' in h['config']:                                     # the U-Net's own config is saved whole too
        assert not missing_parameters(type(m.net), h['config']['unet'])
    rebuilt = type(m)(**h['config'])                              # the config alone rebuilds the same architecture
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


def test_inherited_defaults_are_saved_and_a_dropping_subclass_is_caught(tmp_path):
    "TextDiffusion passes T, schedule, prediction, sampler on through **kwargs: they are saved; a subclass that drops one is caught."
    m = TextDiffusion(unet=dict(widths=(16, 32), patch=2, cond_dim=384))
    assert {'T', 'schedule', 'prediction', 'sampler', 'steps'} <= set(m.config) and m.config['T'] == 250
    assert set(m.config['unet']) == set(constructor_parameters(type(m.net)))

    class Forgetful(TextDiffusion):                              # a constructor that records its config by hand, as the old
        def __init__(self, unet=None, **kwargs):                 # mixin did: only its own arguments
            super().__init__(unet=unet, **kwargs)
            object.__setattr__(self, 'config', {'unet': unet, **kwargs})
        __init__._records_config = True                          # (Configurable leaves a hand-written recorder alone)
    bad = Forgetful(unet=dict(widths=(16, 32), patch=2, cond_dim=384), schedule='cosine')
    save(bad, tmp_path / 'forgetful.safetensors')
    lost = missing_parameters(Forgetful, read_meta(tmp_path / 'forgetful.safetensors')['config'])
    assert {'T', 'prediction', 'sampler', 'encoder', 'dataset', 'templates'} <= lost and 'schedule' not in lost, lost
    # what such a file rebuilds follows today's defaults: change one and the model changes under the same weights
    assert load(tmp_path / 'forgetful.safetensors', model_cls=Forgetful).T == 250

    class Plain(Configurable, nn.Module):                        # the check is not tautological on a plain class either
        def __init__(self, a: int = 1, b: int = 2): super().__init__()
    assert missing_parameters(Plain, {'a': 1}) == {'b'}


# --- one recipe per shipped weight, all through one fit -------------------------------------------------------------
def test_every_shipped_weight_has_its_recipe():
    for name in NAMES:
        r, ds = get_recipe(name)
        assert r.weights_name(ds) == name and isinstance(r.build(), r.cls)
        assert read_meta(WEIGHTS_DIR / f'{name}.safetensors')['class'].rsplit('.', 1)[-1] == r.cls.__name__
        assert read_meta(WEIGHTS_DIR / f'{name}.safetensors')['meta']['command'].startswith(f'opengen train {name} ')
    assert set(NAMES) <= set(RECIPES)


def test_a_card_epochs_are_the_recipe_epochs():
    "The recipe reproduces the card: same epochs (the CVAE's 12 once lived only in a card), same constructor config."
    for name in NAMES:
        meta, r = read_meta(WEIGHTS_DIR / f'{name}.safetensors'), get_recipe(name)[0]
        epochs = meta['meta'].get('epochs', meta['meta'].get('budget', {}).get('epochs'))
        assert epochs == r.epochs, (name, epochs, r.epochs)
        built = r.build(**({'dataset': 'mnist'} if 'dataset' in constructor_parameters(r.cls) else {})).config
        after = (*getattr(r.cls, 'sample_options', ()), 'readout')   # sampling options and a VAE's readout are chosen after training
        saved = {k: v for k, v in meta['config'].items() if k not in after}
        import json
        assert {k: json.loads(json.dumps(built[k])) for k in saved} == saved, name


@pytest.mark.xdist_group('recipes')
@pytest.mark.filterwarnings('ignore::opengen.diffusion.samplers.OutOfRangeWarning')   # one tiny epoch: noise
def test_a_smoke_run_of_every_recipe_goes_through_the_one_fit(tmp_path, monkeypatch):
    "Every recipe trains two steps on 32 images through the one `fit` and saves its weights and card (its finishing"
    " steps and evaluation are the shipped weights' business: their cards are re-measured in test_cards.py)."
    calls = []
    real_fit = opengen.learner.fit
    def counting_fit(model, *a, **kw):
        learn = real_fit(model, *a, **kw)
        calls.append(type(model).__name__)
        return learn
    monkeypatch.setattr(opengen.learner, 'fit', counting_fit)
    for name in sorted(RECIPES):
        before = len(calls)
        m = train(name, epochs=1, n_train=32, n_valid=16, bs=16, out=tmp_path / f'{name}.safetensors',   # two steps, no evaluation
                  show=False, progress=False, finish=False)
        assert len(calls) == before + 1 and calls[-1] == type(m).__name__, name
        saved = load(tmp_path / f'{name}.safetensors')
        assert type(saved) is type(m) and saved.meta['epochs'] == 1 and (tmp_path / f'{name}.md').exists()


def test_an_option_a_recipe_cannot_take_is_an_error():
    with pytest.raises(ValueError, match='takes no latent_dim'): get_recipe('cgan_mnist')[0].build(latent_dim=8)
    with pytest.raises(ValueError, match='takes no option'):
        opengen.learner.fit(get_recipe('vae_mnist')[0].build(), 'mnist', 1, n_train=128, learning_rate=1.)
    with pytest.raises(ValueError, match='No recipe named'): get_recipe('vae_xl')


# --- the import graph -----------------------------------------------------------------------------------------------
def test_no_late_imports_and_no_cycles():
    "tools/check_imports.py's AST checks (CI also imports every module alone in a fresh interpreter)."
    root = inspect.getfile(opengen.learner).rsplit('/opengen/', 1)[0]
    r = subprocess.run([sys.executable, 'tools/check_imports.py', '--no-subprocess'], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
