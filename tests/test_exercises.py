"""The workbook's exercises: every check passes the library's reference, rejects each plausible wrong answer it lists with
that answer's own hint, reports a stub as not done, and survives a function that crashes; the student edition turns
every solution into a stub and nothing else."""
import ast
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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
from opengen.exercises import BEGIN, END, EXERCISES, answer_functions, check, run_check, student_notebook
from opengen.grading import WORKBOOK   # imports every chapter's module: each registers its exercises

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = {prefix: chapter for chapter, (prefix, _) in WORKBOOK.items()}   # exercise prefix -> its chapter notebook
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


@pytest.fixture(scope='module')
def student_edition(tmp_path_factory) -> Path:
    "The student edition as `make student` builds it (tools/build_student.py), once for the tests below."
    dst = tmp_path_factory.mktemp('edition') / 'student'
    r = subprocess.run([sys.executable, 'tools/build_student.py', '--dst', str(dst)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return dst


def test_the_build_writes_every_notebook_and_lists_the_exercised_ones(student_edition):
    assert {p.name for p in student_edition.glob('*.ipynb')} == {p.name for p in (REPO / 'nbs').glob('*.ipynb')}
    assert set((student_edition / 'EXERCISES').read_text().split()) == {f'{c}.ipynb' for c in CHAPTERS.values()}


def body_lines(f) -> set[str]:
    "The lines of a function's body that say something: not its signature or docstring, not a comment or a short line."
    src = textwrap.dedent(inspect.getsource(f))
    fn = ast.parse(src).body[0]
    body = fn.body[1:] if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(getattr(fn.body[0], 'value', None), ast.Constant) else fn.body
    lines = src.splitlines()[body[0].lineno - 1:fn.end_lineno] if body else []
    return {l.strip() for l in lines if len(l.strip()) >= 12 and not l.strip().startswith('#')}


def test_the_student_edition_shows_no_answer(student_edition):
    "No line of the code that answers an exercise (`answer_functions`: the reference, what an adapter calls) and no"
    " exercise definition appears in any code cell of the student edition; the teacher's edition shows them."
    code = {p.name: [''.join(c['source']) for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code']
            for p in student_edition.glob('*.ipynb')}
    lines = {nb: {l.strip() for src in cells for l in src.splitlines()} for nb, cells in code.items()}
    by_nb = {p.name: {l.strip() for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code' for l in ''.join(c['source']).splitlines()}
             for p in (REPO / 'nbs').glob('*.ipynb')}
    teacher = set().union(*by_nb.values())
    idiom = lambda l: sum(l in ls for ls in by_nb.values()) > 1       # a line in the code of several chapters is an idiom, not an answer
    searched, leaks = 0, []
    for name, ex in sorted(EXERCISES.items()):
        for f in answer_functions(ex):
            if f.__name__ == '<lambda>': continue
            body = {l for l in body_lines(f) if not idiom(l)}
            if not body: continue                                           # nothing but idioms (a one-line call of numpy, say)
            searched += len(body)
            assert body & teacher, f'{name}: {f.__qualname__} is not in the teacher\'s notebooks: the search would prove nothing'
            leaks += [f'{nb}: {name} ({f.__qualname__}): {l}' for nb, ls in lines.items() for l in sorted(body & ls)]
    assert searched > 80 and not leaks, '\n'.join(leaks[:40])
    defs = [nb for nb, cells in code.items() if nb != '06_exercises.ipynb' for src in cells if 'Exercise(' in src or 'register_exercise(' in src]
    assert not defs, f'exercise definitions shown in {sorted(set(defs))}'
    assert not [nb for nb, cells in code.items() for src in cells if 'nbdev_export(' in src]


def _ema_index_add(N, m, z, k, gamma=0.99, eps=1e-5):
    "The EMA codebook update written with index_add_ instead of a one-hot matrix."
    counts = torch.zeros_like(N).index_add_(0, k, torch.ones(len(k), dtype=N.dtype))
    N, m = gamma * N + (1 - gamma) * counts, gamma * m + (1 - gamma) * torch.zeros_like(m).index_add_(0, k, z)
    n = N.sum()
    return N, m, m / ((N + eps) * n / (n + len(N) * eps)).unsqueeze(1)


def _attention_plain(q, k, v, mask=None):
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    a = torch.softmax(s if mask is None else s.masked_fill(~mask, float('-inf')), dim=-1)
    return a @ v, a


def _frechet_eigh(mu_a, sigma_a, mu_b, sigma_b):
    "The Fréchet distance by eigendecompositions: tr (Σa Σb)^½ = Σ √λ of the symmetric Σa^½ Σb Σa^½."
    w, v = np.linalg.eigh(sigma_a); root_a = v @ np.diag(np.sqrt(w)) @ v.T
    lam = np.clip(np.linalg.eigvalsh(root_a @ sigma_b @ root_a), 0, None)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.sqrt(lam).sum())


# right answers written another way than the reference: each must pass (the wrong ones are the listed mistakes, above)
RIGHT = {
    'metrics.frechet_distance': _frechet_eigh,
    'metrics.nearest_distances': lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1).sqrt().min(1),
    'unet.add_class_embedding': lambda emb, table, labels=None: emb + torch.nn.functional.one_hot(
        torch.full((len(emb),), len(table) - 1) if labels is None else labels, len(table)).to(table.dtype) @ table,
    'latent.latent_scale': lambda z: 1 / torch.std(z.double()).item(),
    'flow_matching.cfm_loss': lambda net, x0, eps, t: (net(torch.lerp(x0, eps, t.reshape(-1, *[1] * (x0.dim() - 1))), t) - (eps - x0)).square().mean(),
    'tokens.causal_mask': lambda n, L=None, device=None: torch.ones(n, L or n, dtype=torch.bool, device=device).tril((L or n) - n),
    'guidance.guided_eps': lambda f, x, t, y, null, s: (lambda e: e[1] + s * (e[0] - e[1]))(
        f(x.repeat(2, *[1] * (x.dim() - 1)), t.repeat(2), torch.cat([y, null.repeat(len(y))])).chunk(2)),
    'attention.attention': _attention_plain,
    'vqvae.ema_codebook_update': _ema_index_add,
}


@pytest.mark.parametrize('name', sorted(RIGHT))
def test_a_right_answer_written_another_way_passes(name):
    r = run_check(EXERCISES[name], RIGHT[name])
    assert r.status == 'passed', r.message


def test_the_exercise_text_states_the_convention_the_check_wants():
    "Where two answers are defensible, the exercise says which one the check accepts (and the check's hint says it again)."
    text = lambda nb: '\n'.join(''.join(c['source']) for c in json.loads((REPO / 'nbs' / nb).read_text())['cells'] if c['cell_type'] == 'markdown')
    assert "torch's default estimator (`z.std()`, which divides by N − 1)" in text('29_latent.ipynb')
    assert 'not a large negative number such as −1e9' in text('24_attention.ipynb')
    assert 'toy points are (B, 2)' in text('28_flow_matching.ipynb')
    assert 'labels=None' in text('20_unet.ipynb') and '**one** call' in text('23_cfg.ipynb')
    hints = {n: ' '.join(EXERCISES[n].mistakes) for n in ('latent.latent_scale', 'attention.attention', 'unet.add_class_embedding', 'guidance.guided_eps', 'tokens.causal_mask')}
    assert 'N − 1' in hints['latent.latent_scale'] and '−1e9' in hints['attention.attention'] and 'last row' in hints['unet.add_class_embedding']
    assert 'once' in hints['guidance.guided_eps'] and 'boolean' in hints['tokens.causal_mask']


def teacher_solution(name: str):
    "The teacher's function of exercise `name`, from its chapter's notebook, defined over the chapter module's names."
    prefix, fn = name.split('.', 1)
    for c in json.loads((REPO / 'nbs' / f'{CHAPTERS[prefix]}.ipynb').read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'code' and BEGIN in src and src.startswith(f'def {fn}('):
            module = sys.modules[EXERCISES[name].reference.__module__] if hasattr(EXERCISES[name].reference, '__module__') else None
            ns = {**(vars(module) if module else {}), 'torch': torch, 'math': __import__('math'), 'F': torch.nn.functional,
                  'np': __import__('numpy'), 'nn': torch.nn}
            exec(src, ns)
            return ns[fn]
    raise LookupError(name)


@pytest.mark.parametrize('name', sorted(EXERCISES))
def test_the_teachers_solution_passes_the_graders_fresh_cases(name):
    "`opengen grade` adds cases of a seed drawn per run: the teacher's solution must pass them whatever the seed (no tolerance left to luck)."
    f = teacher_solution(name)
    for seed in (1, 2, 3, 2 ** 40 + 7):
        r = run_check(EXERCISES[name], f, seed)
        assert r.status == 'passed', (seed, r.message)
