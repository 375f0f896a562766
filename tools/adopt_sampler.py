"""Give a shipped conditional diffusion or flow-matching weight new default sampler settings, the way its recipe chooses
them: the guidance scale is chosen on sampling seed 1 at the new sampler and steps (`select_guidance_scale`), then the
card is evaluated again on seed 0 (`save_evaluated`). The tensors stay as they are; the previous defaults and the card
figures measured with them are kept in the card as `previous_defaults`.

Usage: python tools/adopt_sampler.py ldm_cond_mnist --sampler euler --steps 8 --scales 1 1.25 1.5 2 3 --min-accuracy 0.98 \
           --reason "..."
"""
import argparse

from opengen.checkpoints import get_recipe, load, read_meta
from opengen.core import WEIGHTS_DIR
from opengen.diffusion.guidance import select_guidance_scale
from opengen.metrics import save_evaluated


def adopt(name: str, sampler: str, steps: int, scales: tuple, min_accuracy: float, reason: str, n_select: int = 500) -> dict:
    "Choose the scale for `sampler`/`steps` on seed 1, make them the defaults of weights `name`, re-evaluate its card; returns the new metrics."
    path = WEIGHTS_DIR / f'{name}.safetensors'
    model, meta = load(path), dict(read_meta(path)['meta'])
    sel = meta.get('guidance_selection') or {}
    previous = {**meta['sampler_defaults'], 'metrics': meta['metrics'], 'guidance_selection (seed 1)': [
        {k: round(r[k], 4) for k in ('s', 'accuracy', 'fid_clf')} for r in sel.get('rows', [])]}
    meta['guidance_selection'] = select_guidance_scale(model, n=n_select, scales=scales, min_accuracy=min_accuracy,
                                                       sampler=sampler, steps=steps)
    nfe = {'nfe': model.nfe()} if hasattr(model, 'nfe') else {}
    meta['sampler_defaults'] = {**model.defaults, **nfe}
    recipe, ds = get_recipe(name)
    meta['description'] = recipe.description.format(**{**model.config, 'dataset': ds})
    meta['previous_defaults'] = {**previous, 'why_changed': reason}
    metrics = {k: v for k, v in meta['metrics'].items() if k.startswith(('valid_', 'test_'))}   # the weights', not the sampler's
    return save_evaluated(model, path, {**meta, 'metrics': metrics}, ds, meta['eval_n'])


if __name__ == '__main__':
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('name'); a.add_argument('--sampler', required=True); a.add_argument('--steps', type=int, required=True)
    a.add_argument('--scales', type=float, nargs='+', default=[1, 1.5, 2, 3]); a.add_argument('--min-accuracy', type=float, default=0.98)
    a.add_argument('--reason', required=True)
    o = a.parse_args()
    r = adopt(o.name, o.sampler, o.steps, tuple(o.scales), o.min_accuracy, o.reason)
    print({k: round(r[k], 4) for k in ('accuracy', 'fid_clf', 'precision', 'recall', 'diversity') if k in r})
