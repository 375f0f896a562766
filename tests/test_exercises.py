"""The workbook's exercises: every check passes the library's reference, rejects each plausible wrong answer it lists with
that answer's own hint, reports a stub as not done, and survives a function that crashes; the student edition turns
every solution into a stub and nothing else."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import opengen.diffusion.attention  # noqa: F401  (each chapter registers its exercises)
import opengen.diffusion.ddpm  # noqa: F401
import opengen.diffusion.flow_matching  # noqa: F401
import opengen.diffusion.latent  # noqa: F401
import opengen.diffusion.guidance  # noqa: F401
import opengen.diffusion.unet  # noqa: F401
import opengen.diffusion.samplers  # noqa: F401
import opengen.models.ae  # noqa: F401
import opengen.models.cvae  # noqa: F401
import opengen.models.flows  # noqa: F401
import opengen.models.gan  # noqa: F401
import opengen.models.vae  # noqa: F401
import opengen.models.vqvae  # noqa: F401
import opengen.speed  # noqa: F401
import opengen.compare  # noqa: F401
import opengen.tokens.prior  # noqa: F401
from opengen.exercises import BEGIN, END, EXERCISES, check, run_check, student_notebook

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = {'ae': '10_ae', 'vae': '11_vae', 'cvae': '12_cvae', 'samplers': '22_samplers', 'gan': '13_gan', 'flows': '14_flows', 'unet': '20_unet', 'ddpm': '21_ddpm', 'guidance': '23_cfg', 'attention': '24_attention', 'vqvae': '15_vqvae', 'tokens': '27_tokens', 'flow_matching': '28_flow_matching', 'latent': '29_latent', 'speed': '32_speed', 'compare': '40_compare'}
MISTAKES = [(name, hint) for name, ex in sorted(EXERCISES.items()) for hint in ex.mistakes]


def test_every_exercised_chapter_has_at_least_three():
    for prefix in CHAPTERS:
        assert sum(n.startswith(prefix + '.') for n in EXERCISES) >= 3, prefix
    assert all(len(ex.mistakes) >= 2 for ex in EXERCISES.values())


@pytest.mark.parametrize('name', sorted(EXERCISES))
def test_the_reference_passes_and_a_stub_is_not_done(name):
    ex = EXERCISES[name]
    assert run_check(ex, ex.reference).status == 'passed'
    def stub(*a, **k): raise NotImplementedError()
    r = run_check(ex, stub)
    assert r.status == 'not done' and 'not done yet' in r.message
    def crashes(*a, **k): raise IndexError('index 250 is out of bounds')
    r = run_check(ex, crashes)
    assert r.status == 'failed' and 'IndexError' in r.message


@pytest.mark.parametrize('name,hint', MISTAKES)
def test_each_listed_mistake_is_rejected_with_its_hint(name, hint):
    ex = EXERCISES[name]
    r = run_check(ex, ex.mistakes[hint])
    assert r.status == 'failed', (name, hint)
    assert r.message.endswith(f'Hint: {hint}'), r.message
    assert 'case ' in r.message and ('expected' in r.message or 'shape' in r.message), r.message


def test_the_cases_include_the_edges():
    "The first and last timestep, a fully masked attention row, log-weights where exp underflows."
    whats = {n: ' | '.join(c.what for c in ex.cases(torch.Generator().manual_seed(0))) for n, ex in EXERCISES.items()}
    assert 't = 0' in whats['ddpm.q_sample'] and 't = 249' in whats['ddpm.posterior']
    assert 'every key masked' in whats['attention.attention'] and 'underflows' in whats['vae.log_mean_exp']
    assert 'the last step' in whats['samplers.ddim_update'] and 'exactly 0 or 1' in whats['ae.bernoulli_nll']
    assert 'unbalanced' in whats['cvae.label_variance_fraction'] and 'all 250 steps' in whats['samplers.timestep_set']


def test_check_prints_one_line_and_the_editions_assert(capsys, monkeypatch):
    ex = EXERCISES['vae.gaussian_kl']
    assert check('vae.gaussian_kl', ex.reference).status == 'passed'
    assert capsys.readouterr().out.count('\n') == 1
    monkeypatch.setenv('OPENGEN_EXERCISES', 'teacher')
    with pytest.raises(AssertionError, match='OPENGEN_EXERCISES=teacher requires passed'): check('vae.gaussian_kl', lambda mu, lv: mu.sum(-1))
    monkeypatch.setenv('OPENGEN_EXERCISES', 'student')
    with pytest.raises(AssertionError, match='OPENGEN_EXERCISES=student requires not done'): check('vae.gaussian_kl', ex.reference)
    monkeypatch.setenv('OPENGEN_EXERCISES', 'autograde')        # nbgrader's autograder: a check that does not pass raises
    with pytest.raises(AssertionError, match='requires passed: … vae.gaussian_kl: not done yet'):
        check('vae.gaussian_kl', lambda mu, lv: (_ for _ in ()).throw(NotImplementedError()))
    assert check('vae.gaussian_kl', ex.reference).status == 'passed'
    with pytest.raises(ValueError, match='no exercise named'): check('vae.nope', ex.reference)


@pytest.mark.parametrize('chapter', sorted(CHAPTERS.values()))
def test_the_student_edition_stubs_every_solution_and_keeps_the_rest(chapter):
    teacher = json.loads((REPO / 'nbs' / f'{chapter}.ipynb').read_text())
    student, n = student_notebook(teacher)
    assert n >= 3 and len(student['cells']) == len(teacher['cells'])
    for t, s in zip(teacher['cells'], student['cells']):
        ts, ss = ''.join(t['source']), ''.join(s['source'])
        if any(line.strip() == BEGIN for line in ts.splitlines()):
            assert 'raise NotImplementedError()' in ss and BEGIN not in ss and END not in ss
            assert ts.split(BEGIN)[0].rstrip(' ') == ss.split('raise NotImplementedError()')[0].rstrip(' ')   # signature, docstring kept
        else: assert ts == ss


def test_the_build_writes_every_notebook_and_lists_the_exercised_ones(tmp_path):
    r = subprocess.run([sys.executable, 'tools/build_student.py', '--dst', str(tmp_path / 'student')], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (tmp_path / 'student').glob('*.ipynb')} == {p.name for p in (REPO / 'nbs').glob('*.ipynb')}
    assert set((tmp_path / 'student' / 'EXERCISES').read_text().split()) == {f'{c}.ipynb' for c in CHAPTERS.values()}
