"""A teacher who grades with nbgrader needs nothing of ours: nbgrader's own `generate_assignment` accepts a chapter
(our solution markers and cell metadata), its release has nbgrader's stubs and no solution, and its `autograde`, run on
the chapter's nbgrader edition (answers hidden, test cells `check(..., require='passed')`) at smoke size, scores four
submissions as expected: every solution (full marks), the release as handed out (zero), one wrong function (all but
one point, the check's hint in the feedback), and the release with a cell that pops OPENGEN_EXERCISES (zero: the test
cells no longer read it). Needs the `teach` extra (pip install -e ".[teach]"); skipped without nbgrader."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

pytest.importorskip('nbgrader')
REPO = Path(__file__).resolve().parents[1]
CHAPTER = '24_attention.ipynb'     # the quickest chapter with exercises (a few seconds at smoke size)
WRONG = ('    return x.reshape(B, N, heads, D // heads).transpose(1, 2)', '    return x.reshape(B, heads, N, D // heads)')   # split_heads without the transpose


def nbgrader(course: Path, *args, env=None):
    "Run nbgrader's command line in `course`; its output on failure. The venv's bin/ leads PATH: nbgrader runs `alembic` from it."
    env = dict(os.environ if env is None else env)
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
    r = subprocess.run([sys.executable, '-m', 'nbgrader', *args, f'--CourseDirectory.root={course}'], cwd=course,
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f'nbgrader {" ".join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    return r


def cell_sources(path: Path) -> list[str]:
    return [''.join(c['source']) for c in json.loads(path.read_text())['cells']]


def solution_lines(src: str) -> list[str]:
    "The lines of a teacher's cell between the solution markers."
    lines = [l.strip() for l in src.splitlines()]
    return lines[lines.index('### BEGIN SOLUTION') + 1:lines.index('### END SOLUTION')]


def with_wrong_split_heads(nb_text: str) -> str:
    "The notebook with its split_heads exercise (not the library's) answered wrongly."
    nb = json.loads(nb_text)
    cell = next(c for c in nb['cells'] if ''.join(c['source']).startswith('def split_heads(x, heads):'))
    src = ''.join(cell['source']); assert WRONG[0] in src
    cell['source'] = src.replace(WRONG[0], WRONG[1])
    return json.dumps(nb)


@pytest.fixture(scope='module')
def course(tmp_path_factory):
    "An nbgrader course whose ps1 is the chapter's nbgrader edition (`make nbgrader`: answers hidden, test cells that require a pass)."
    from opengen.exercises import EXERCISES, hidden_answers, nbgrader_source
    import opengen.grading  # noqa: F401  (registers every exercise)
    course = tmp_path_factory.mktemp('course')
    (course / 'source' / 'ps1').mkdir(parents=True)
    nb, _ = nbgrader_source(json.loads((REPO / 'nbs' / CHAPTER).read_text()), hidden_answers(EXERCISES.values()))
    (course / 'source' / 'ps1' / CHAPTER).write_text(json.dumps(nb))
    nbgrader(course, 'generate_assignment', 'ps1')
    return course


def test_generate_assignment_accepts_a_chapter(course):
    teacher = cell_sources(course / 'source' / 'ps1' / CHAPTER)
    release = cell_sources(course / 'release' / 'ps1' / CHAPTER)
    assert len(release) == len(teacher)
    stubs = [s for s in release if '# YOUR CODE HERE\n    raise NotImplementedError()' in s]
    assert len(stubs) == 3, f'expected nbgrader stubs in the 3 exercise cells, found {len(stubs)}'
    for t, r in zip(teacher, release):
        if '### BEGIN SOLUTION' in t:
            assert not [l for l in solution_lines(t) if l and l in r], f'the release still holds a solution:\n{r}'
    meta = [c['metadata'].get('nbgrader', {}) for c in json.loads((course / 'release' / 'ps1' / CHAPTER).read_text())['cells']]
    assert sum(bool(m.get('points')) for m in meta) == 3 and all('checksum' in m for m in meta if m.get('grade'))


@pytest.mark.budget(150)   # nbgrader's autograde runs the chapter in four kernels
def test_autograde_scores_the_checks(course):
    subs = {'alice': (course / 'source' / 'ps1' / CHAPTER).read_text(),         # every solution
            'bob': (course / 'release' / 'ps1' / CHAPTER).read_text()}          # the release, untouched
    subs['carol'] = with_wrong_split_heads(subs['alice'])                         # one wrong function
    dave = json.loads(subs['bob'])                                                # the release, and a cell that switches off
    dave['cells'].insert(1, {'cell_type': 'code', 'metadata': {}, 'outputs': [], 'execution_count': None,   # what the old
                             'source': "import os\nos.environ.pop('OPENGEN_EXERCISES', None)"})          # test cells read
    subs['dave'] = json.dumps(dave)
    for student, text in subs.items():
        d = course / 'submitted' / student / 'ps1'; d.mkdir(parents=True)
        (d / CHAPTER).write_text(text)
    (course / 'students.csv').write_text('id\n' + '\n'.join(subs) + '\n')
    nbgrader(course, 'db', 'student', 'import', 'students.csv')                  # the class list, in one command
    env = {**os.environ, 'IN_TEST': '1', 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}   # no OPENGEN_EXERCISES: the test cells require the pass
    nbgrader(course, 'autograde', 'ps1', '--ExecutePreprocessor.timeout=600', env=env)
    from nbgrader.api import Gradebook
    with Gradebook(f'sqlite:///{course / "gradebook.db"}') as gb:
        scores = {s: gb.find_submission('ps1', s).score for s in subs}
        assert gb.find_assignment('ps1').max_score == 3
    assert scores == {'alice': 3, 'bob': 0, 'carol': 2, 'dave': 0}, scores
    graded = '\n'.join(json.dumps(c.get('outputs', [])) for c in
                       json.loads((course / 'autograded' / 'carol' / 'ps1' / CHAPTER).read_text())['cells'])
    assert 'attention.split_heads: failed' in graded and 'Hint:' in graded, 'the feedback lacks the check\'s message'
