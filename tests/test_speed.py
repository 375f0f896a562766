"""32_speed: the step probe, the settings table's runs (`measure_recipe`), the fast recipes, and the committed study."""
import importlib.util
import json
from pathlib import Path

import pytest

from opengen.checkpoints import get_recipe, load
from opengen.learner import bf16_supported
from opengen.speed import measure_recipe, net_step_ms, step_probe, time_to

STUDY = Path(__file__).resolve().parents[1] / 'nbs' / 'speed_study.json'


def test_time_to_is_the_first_snapshot_that_reaches_the_accuracy():
    rows = [{'wall_time_s': 10., 'accuracy': 0.9}, {'wall_time_s': 20., 'accuracy': 0.99}, {'wall_time_s': 30., 'accuracy': 0.96}]
    assert time_to(rows, 0.95) == 20. and time_to(rows, 0.99) == 20. and time_to(rows, 0.995) is None
    assert time_to(rows, 0.5) == 10.


def test_the_step_probe_times_a_step_and_sets_the_threads_of_its_own_process():
    r = net_step_ms('tiny', bs=8, reps=2)
    assert r['ms/step'] > 0 and r['images/s'] == pytest.approx(8 / r['ms/step'] * 1000, rel=0.01)
    p = step_probe(threads=1, interop=1, preset='tiny', bs=8, reps=1, precision='bf16', channels_last=True)
    assert (p['threads'], p['interop'], p['preset'], p['precision']) == (1, 1, 'tiny', 'bf16')
    with pytest.raises(RuntimeError, match='the step probe failed'): step_probe(preset='huge')


def test_measure_recipe_trains_snapshots_and_measures_each_one(tmp_path):
    r = measure_recipe('fm_cond_fast', tmp_path, epochs=2, n=20, n_train=256, seed=3, show=False)
    assert [s['epoch'] for s in r['snapshots']] == [1, 2] and r['steps_per_epoch'] == 2
    assert r['fit'] == {'n_train': 256, 'seed': 3} and r['precision'] == ('bf16' if bf16_supported() else 'fp32')
    assert r['snapshots'][0]['wall_time_s'] < r['snapshots'][1]['wall_time_s'] <= r['wall_time_s'] + 0.5
    assert r['t99_s'] == time_to(r['snapshots'], 0.99) and r['accuracy'] == r['snapshots'][-1]['accuracy']
    assert r['snapshots'][-1]['sample_steps'] == 8 and r['snapshots'][-1]['n'] == 20
    m = load(tmp_path / 'snapshots' / 'epoch002.safetensors')
    assert m.meta['epoch'] == 2 and m.meta['steps'] == 4


@pytest.mark.parametrize('name,family', [('fm_cond_fast', 'FlowMatching'), ('ddpm_cond_fast', 'Diffusion')])
def test_the_fast_recipes_train_in_bf16_and_sample_with_at_most_20_steps(name, family):
    r, ds = get_recipe(name)
    assert r.cls.__name__ == family and ds == 'mnist' and r.fit['precision'] == 'bf16'
    m = r.build()
    assert m.conditional and m.defaults['steps'] <= 20


def test_the_committed_study_has_every_setting_the_chapter_tables():
    spec = importlib.util.spec_from_file_location('speed_study', STUDY.parents[1] / 'tools' / 'speed_study.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    ARMS, PROBES = mod.ARMS, mod.PROBES
    study = json.loads(STUDY.read_text())
    assert set(study['probes']) == set(PROBES) and set(study['arms']) == set(ARMS)
    for name, a in study['arms'].items():
        assert len(a['snapshots']) == study['epochs'] and all(s['n'] == 1000 for s in a['snapshots']), name
        assert a['fit'].get('seed') == study['seed'], name                      # the study's seed, not the reports'
    for v in study['verify']:                                                    # the fast recipe, from a fresh process
        assert v['recipe'] == 'fm_cond_fast' and v['fit'].get('seed', 0) == 0 and v['t99_s'] is not None and v['t99_s'] <= 900
