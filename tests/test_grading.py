"""`opengen grade` on a class of real submissions, each built from the student edition of 24_attention: honest controls
(every exercise right; the edition untouched; one right, one wrong, one whose cell was deleted: graded missing), and submissions that try to get a pass
without solving or to harm the grader, the machine or the other students (among them the holes a red-team review found
in a first version: the library's function run from a thread, from a copy of its source or recompiled code, and the
runner's guard and protocol subverted from inside its process; the answers are now withheld from the sandbox). For every attack: no pass for what it
attacked, a reason the teacher can read, the grader finishes, the controls keep their grades, no process outlives its
grading, nothing is written outside the submission's folder. Also a malformed file and the workbook table."""
import csv, json, re, subprocess, sys, textwrap, uuid
from pathlib import Path

import nbformat
import pytest

from opengen.exercises import BEGIN, END, EXERCISES, hidden_answers, student_notebook
from opengen.grading import WORKBOOK, bubblewrap, chapter_exercises
from test_exercises import teacher_solution   # the teacher's function of an exercise, from its chapter

REPO = Path(__file__).resolve().parents[1]
CHAPTER = '24_attention'            # the quickest chapter to run (about 4 s); its exercises: attention, split_heads, merge_heads
NAMES = chapter_exercises(CHAPTER)
MARK = f'opengen-daemon-{uuid.uuid4().hex[:8]}'     # the command line of a daemon a submission leaves behind
pytestmark = [pytest.mark.xdist_group("grading"),  # one worker grades the class once
              pytest.mark.budget(150)]
OPENGEN = Path(sys.executable).parent / 'opengen'


def teacher_bodies() -> dict:
    "Function name -> the teacher's solution (the lines between the markers) in the chapter."
    out = {}
    for c in json.loads((REPO / 'nbs' / f'{CHAPTER}.ipynb').read_text())['cells']:
        src = ''.join(c['source'])
        if BEGIN in src: out[re.match(r'def (\w+)\(', src).group(1)] = src.split(BEGIN + '\n')[1].split('    ' + END)[0]
    return out


def submission(bodies: dict = {}, before: list = (), deleted: tuple = ()) -> dict:
    "The student edition with the bodies of some exercise functions written (source, indented), cells added before the exercises, and the cells defining the functions `deleted` removed."
    nb, _ = student_notebook(json.loads((REPO / 'nbs' / f'{CHAPTER}.ipynb').read_text()), hidden_answers(EXERCISES.values()))
    cells = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown' and src.startswith('## Exercises'):
            cells += [nbformat.v4.new_code_cell(b) for b in before]
        m = re.match(r'def (\w+)\(', src)
        if c['cell_type'] == 'code' and m and m.group(1) in bodies:
            c = {**c, 'source': src.replace('    raise NotImplementedError()', bodies[m.group(1)].rstrip('\n'))}
        if not (c['cell_type'] == 'code' and m and m.group(1) in deleted): cells.append(c)
    return {**nb, 'cells': cells}


def body(code: str) -> str: return ''.join(f'    {l}\n' for l in code.strip('\n').splitlines())


R = teacher_bodies()
LIB = 'opengen.diffusion.attention'


SANDBOXED = ('kill_parent', 'hostile_cells')   # only inside bubblewrap: without it (and as root) they would hit the test machine itself


def attacks(root: Path) -> dict:
    "Student -> (notebook, the statuses it may get per exercise: a set each); the attacks of SANDBOXED only where bubblewrap works."
    victim, out = root / 'submitted' / 'ctrl_right' / f'{CHAPTER}.ipynb', root / 'out' / 'grades.csv'
    no_pass = {'failed', 'not done', 'not graded', 'timed out', 'missing'}
    return {
        # honest controls
        'ctrl_right': (submission(R), [{'passed'}] * 3),
        'ctrl_stubs': (submission(), [{'not done'}] * 3),
        'ctrl_half': (submission({'attention': R['attention'], 'split_heads': body('return x.reshape(x.shape[0], heads, x.shape[1], -1)')},
                                 deleted=('merge_heads',)), [{'passed'}, {'failed'}, {'missing'}]),   # the cell of the third deleted
        # the library's own function, three ways: an import, EXERCISES, an alias taken earlier through importlib and getattr
        'lib_calls': (submission({'attention': body(f'from {LIB} import attention as lib\nreturn lib(q, k, v, mask)'),
                                  'split_heads': body("from opengen.exercises import EXERCISES\nreturn EXERCISES['attention.split_heads'].reference(x, heads)"),
                                  'merge_heads': body('return _MERGE(x)')},
                                 [f"import importlib\n_MERGE = getattr(importlib.import_module('{LIB}'), 'merge_heads')"]), [{'failed'}] * 3),
        # the profiler removed first; the library's code in a new function; a process that could compute it elsewhere
        'disguised': (submission({'attention': body(f'import sys\nsys.setprofile(None)\nfrom {LIB} import attention as lib\nreturn lib(q, k, v, mask)'),
                                  'split_heads': body(f'import types, {LIB} as m\nreturn types.FunctionType(m.split_heads.__code__, m.__dict__)(x, heads)'),
                                  'merge_heads': body("import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'pass'])\n" + textwrap.dedent(R['merge_heads']))}),
                      [{'failed'}] * 3),
        # the library's function where the runner's guard cannot see it: a thread started in a cell, its source copied, its code recompiled
        'copies': (submission({'attention': body('return _ASK(q, k, v, mask)'),
                               'split_heads': body(f"import inspect, {LIB} as m\nns = dict(vars(m))\nexec(compile(chr(10) + open(m.__file__).read(), '<copy>', 'exec'), ns)\nreturn ns['split_heads'](x, heads)"),
                               'merge_heads': body(f"import types, {LIB} as m\nc = m.merge_heads.__code__\nreturn types.FunctionType(c.replace(co_firstlineno=c.co_firstlineno + 1), vars(m))(x)")},
                              [f"""import threading, queue, {LIB} as _m
_jobs = queue.Queue()
def _serve():
    while True:
        a, out = _jobs.get()
        try: out.put(('ok', _m.attention(*a)))
        except BaseException as e: out.put(('err', e))
threading.Thread(target=_serve, daemon=True).start()
def _ASK(*a):
    out = queue.Queue(); _jobs.put((a, out)); s, r = out.get()
    if s == 'err': raise r
    return r"""]), [{'failed'}] * 3),
        # the runner's own internals: its guard emptied through the frames, then its protocol spoken with the references' answers;
        # and a message the grader cannot read
        'runner_internals': (submission(before=["""import sys, io, json, os, torch, opengen.grading as _G
_f = sys._getframe()
while _f is not None and 'wire_out' not in _f.f_locals: _f = _f.f_back
_f.f_locals['guard'].codes = {k: {} for k in _f.f_locals['guard'].codes}
_in, _out = _f.f_locals['wire_in'], _f.f_locals['wire_out']
_G._send(_out, b'J' + json.dumps({'ran': ''}).encode())
while True:
    try: req = json.loads(_G._recv(_in))
    except Exception: os._exit(0)
    ex = _G.EXERCISES[req['name']]
    try: ans = [('value', _G._plain(ex.reference(*c.args, **c.kwargs))) for c in _G.check_cases(ex, req['seeds'])]
    except Exception as e: ans = [('raised', type(e).__name__, str(e))]
    buf = io.BytesIO(); torch.save({'status': 'answered', 'answers': ans}, buf)
    _G._send(_out, b'T' + buf.getvalue())"""]), [no_pass] * 3),
        'bad_message': (submission(before=["""import sys, opengen.grading as _G
_f = sys._getframe()
while _f is not None and 'wire_out' not in _f.f_locals: _f = _f.f_back
_G._send(_f.f_locals['wire_out'], b'J{not json')"""]), [{'not graded'}] * 3),
        # the checking machinery replaced in the kernel (the runner's copies, the comparison, the cases, the references), and
        # answers that claim to equal anything: a tensor subclass, an object, and torch's comparisons patched
        'liars': (submission({'attention': body('class Yes:\n    __eq__ = lambda s, o: True\n    __float__ = lambda s: 0.0\nreturn Yes(), Yes()'),
                              'split_heads': body("import torch\nclass Same(torch.Tensor):\n    __eq__ = lambda s, o: torch.ones_like(o, dtype=torch.bool)\n    @classmethod\n    def __torch_function__(cls, f, t, a=(), k=None): return True\nreturn torch.zeros(1).as_subclass(Same)"),
                              'merge_heads': body('return torch.zeros(1)')},
                             ["""import opengen.exercises as E, opengen.grading as G
ok = lambda *a, **k: E.CheckResult('x', 'passed', 'passed')
E.run_check = E.judge = G.judge = ok
E.compare = lambda *a, **k: (True, 0.0, '')
E.check_cases = G.check_cases = lambda ex, seeds=(0,): []
for ex in E.EXERCISES.values(): ex.cases, ex.reference, ex.probe = (lambda g: []), (lambda *a, **k: None), None""", "import torch\ntorch.allclose = torch.equal = lambda *a, **k: True\ntorch.Tensor.__eq__ = lambda s, o: torch.ones((), dtype=torch.bool)\ntorch.isclose = lambda a, b, **k: torch.ones_like(b, dtype=torch.bool)"]),
                  [no_pass] * 3),
        # the old grader's results file, forged messages on every descriptor, then the process ends itself
        'forged_exit': (submission(before=["""import os, json
line = ''.join(json.dumps({'name': n, 'status': 'passed', 'message': '✓'}) + '\\n' for n in ('attention.attention', 'attention.split_heads', 'attention.merge_heads'))
for p in ('../results.jsonl', '../../results.jsonl', 'results.jsonl'):
    try: open(p, 'a').write(line)
    except OSError: pass
for fd in range(1, 64):
    try: os.write(fd, b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x0cJ{"ran": ""}')
    except OSError: pass
os._exit(0)"""]), [{'not graded', 'failed'}] * 3),
        'kill_parent': (submission(before=['import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)']), [{'not graded', 'not done'}] * 3),
        # an endless cell, and an endless function: only themselves are lost
        'loops': (submission({'attention': R['attention'], 'split_heads': body('import time\nwhile True: time.sleep(0.05)')},
                             ['import time\nwhile True: time.sleep(0.05)']),   # idle loops: the timeouts are tested, not a core kept busy
                  [{'passed'}, {'timed out'}, {'not done'}]),
        # cells that harm: another student's notebook read and overwritten, the class's CSV and the host's /tmp written; a daemon
        # left behind; a memory bomb and a fork bomb; sys.exit
        'hostile_cells': (submission(before=[f"""import json
try:
    for c in json.load(open({str(victim)!r}))['cells']:
        if c['cell_type'] == 'code' and c['source'] and ''.join(c['source']).startswith('def '): exec(''.join(c['source']))
except OSError: pass
for p in ({str(victim)!r}, {str(out)!r}, '/tmp/{MARK}-escaped'):
    try: open(p, 'w').write('overwritten')
    except OSError: pass""", f"""import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0: os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)', '{MARK}'])
    os._exit(0)
os.wait()""", 'blocks = [bytearray(1 << 28) for _ in range(10 ** 6)]',
                                     'import os\nwhile True: os.fork()', 'import sys\nsys.exit(0)']),
                          [{'not done'}] * 3),
    }


def write(path: Path, nb: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


def processes_with(mark: str) -> list:
    out = []
    for p in Path('/proc').glob('[0-9]*/cmdline'):
        try:
            if mark.encode() in p.read_bytes(): out.append(p.parent.name)
        except OSError: pass
    return out


@pytest.fixture(scope='module')
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp('class')
    sub, out = root / 'submitted', root / 'out' / 'grades.csv'
    expected = {}
    for student, (nb, want) in attacks(root).items():
        if student in SANDBOXED and not bubblewrap(): continue
        write(sub / student / f'{CHAPTER}.ipynb', nb); expected[student] = want
    (sub / 'malformed').mkdir(); (sub / 'malformed' / f'{CHAPTER}.ipynb').write_text('{"cells": [{"cell_type": "code", "source": ')
    victim = (sub / 'ctrl_right' / f'{CHAPTER}.ipynb').read_text()
    r = subprocess.run([str(OPENGEN), 'grade', str(sub), '--out', str(out), '--cell-timeout', '3', '--timeout', '120', '--memory-gb', '4.5'],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    rows = {row['student']: row for row in csv.DictReader(out.open())}
    return rows, expected, out.parent / 'feedback', victim, sub, r


def test_every_student_is_graded_as_expected(graded):
    rows, expected, *_ = graded
    wrong = {s: [rows[s][n] for n in NAMES] for s, want in expected.items() if not all(rows[s][n] in w for n, w in zip(NAMES, want))}
    assert not wrong, f'graded otherwise than expected: {wrong}\n' + '\n'.join(f"{s}: {rows[s]['reason']}" for s in wrong)
    assert [rows[s]['passed'] for s in ('ctrl_right', 'ctrl_stubs', 'ctrl_half')] == ['3', '0', '1']
    passed = {s: rows[s]['passed'] for s in expected if not s.startswith('ctrl') and s != 'loops' and rows[s]['passed'] != '0'}
    assert not passed, f'an attack got a pass: {passed}'


def test_each_attack_gets_a_reason_the_teacher_can_read(graded):
    rows, expected, fb, *_ = graded
    text = lambda s: (fb / f'{s}.md').read_text()
    for s in ('lib_calls', 'disguised'):
        assert text(s).count("library's own") + text(s).count('profiler') + text(s).count('starts a process') >= 3, text(s)
    assert 'write it yourself' in text('lib_calls') and 'starts a process' in text('disguised')
    assert text('copies').count('withheld while a notebook is graded') + text('copies').count("library's own") >= 3, text('copies')
    assert "not the grader's protocol" in rows['bad_message']['reason'], rows['bad_message']['reason']
    assert "process ended" in rows['forged_exit']['reason'], rows['forged_exit']['reason']
    if 'kill_parent' in expected: assert re.search('PermissionError|process ended', rows['kill_parent']['reason']), rows['kill_parent']['reason']
    assert 'interrupted' in rows['loops']['reason'] and 'ran past the time limit' in text('loops')
    if 'hostile_cells' in expected: assert 'MemoryError' in rows['hostile_cells']['reason'], rows['hostile_cells']['reason']
    assert 'expected a tensor or a number, got Yes' in text('liars'), text('liars')
    assert 'not a readable notebook' in rows['malformed']['reason']


def test_no_process_outlives_its_grading_and_nothing_is_written_outside(graded):
    rows, _, _, victim, sub, r = graded
    assert not processes_with(MARK), 'a daemon of a submission is still running'
    assert (sub / 'ctrl_right' / f'{CHAPTER}.ipynb').read_text() == victim, "another student's notebook was changed"
    assert not Path(f'/tmp/{MARK}-escaped').exists()


def test_the_feedback_files_carry_each_checks_message(graded):
    _, _, fb, *_ = graded
    half = (fb / 'ctrl_half.md').read_text()
    assert '1 of 3 passed' in half and '✓ attention.attention: passed' in half and '✗ attention.split_heads' in half
    assert "still the library's own (the cell that defines yours was deleted" in half, half


def test_the_cases_nobody_has_seen_are_fresh_each_run():
    "The grader asks the public cases (seed 0) and cases of a seed drawn per run: a function right only on the public cases fails."
    import torch
    from opengen.grading import _verdict
    from opengen.exercises import check_cases, _clone
    ex = EXERCISES['attention.split_heads']
    public = check_cases(ex, [0])
    memo = {tuple(c.args[0].shape): ex.reference(*_clone(c.args)) for c in public}    # a lookup table of the public answers
    seeds = [0, 12345]
    answers = [('value', memo.get(tuple(c.args[0].shape), torch.zeros(1))) for c in check_cases(ex, seeds)]
    status, msg = _verdict('attention.split_heads', {'status': 'answered', 'answers': answers}, seeds)
    assert status == 'failed' and int(re.search(r'case (\d+) of', msg).group(1)) > len(public), msg


def test_the_workbook_table_matches_the_notebooks():
    "Every chapter with checks is in WORKBOOK with the prefix its check calls use."
    for nb in sorted((REPO / 'nbs').glob('[0-9]*.ipynb')):
        src = ''.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        prefixes = {s.split("'")[1].split('.')[0] for s in src.split('check(')[1:] if s.startswith("'")}
        if nb.stem in ('06_exercises', '07_grading'): continue
        assert prefixes == ({WORKBOOK[nb.stem][0]} if nb.stem in WORKBOOK else set()), (nb.stem, prefixes)


def _withheld(*a, **k):
    "What an answer function does in the sandbox (its code is swapped in below: no free variables)."
    raise __import__('opengen.exercises', fromlist=['AnswerWithheld']).AnswerWithheld('withheld')


@pytest.mark.parametrize('chapter', sorted(WORKBOOK))
def test_a_chapter_can_be_graded_with_its_answers_withheld(chapter):
    "What the runner does, in this process: with the chapter's answer functions raising (their code swapped, aliases included), each exercise's cases reach the runner (pickled, or drawn there) and the teacher's solution gives the reference's answers."
    import io, torch
    from opengen.exercises import _clone, check_cases, compare
    from opengen.grading import _request
    funcs = [f for n in chapter_exercises(chapter) for f in __import__('opengen.exercises', fromlist=['x']).answer_functions(EXERCISES[n])]
    seeds = [0, 99]
    sent = {n: torch.load(io.BytesIO(_request(n, seeds, check_cases(EXERCISES[n], seeds))), weights_only=False)['cases'] for n in chapter_exercises(chapter)}
    expected = {n: [EXERCISES[n].compared(EXERCISES[n].reference)(*_clone(c.args), **_clone(c.kwargs)) for c in check_cases(EXERCISES[n], seeds)]
                for n in chapter_exercises(chapter)}
    saved = {f: f.__code__ for f in funcs}
    try:
        for f in funcs:
            if not f.__code__.co_freevars: f.__code__ = _withheld.__code__.replace(co_name=f.__name__)
        for n in chapter_exercises(chapter):
            ex, fn = EXERCISES[n], teacher_solution(n)
            cases = torch.load(io.BytesIO(sent[n]), weights_only=False) if sent[n] else check_cases(ex, seeds)
            got = [ex.compared(fn)(*_clone(c.args), **_clone(c.kwargs)) for c in cases]
            assert len(got) == len(expected[n]), n
            for g, e in zip(got, expected[n]):
                assert compare(g, e, ex.atol, ex.rtol)[0], n
    finally:
        for f, code in saved.items(): f.__code__ = code
