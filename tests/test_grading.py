"""`opengen grade` on a small class: three synthetic submissions of 11_vae (all correct, half, none), a malformed file,
and one that crashes, loops, deletes a cell and renames a function; the grader scores what it can and never crashes."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from opengen.exercises import student_notebook
from opengen.grading import WORKBOOK, chapter_exercises

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.xdist_group("grading"),  # one worker grades the class once
              pytest.mark.budget(150)]          # the first test waits for the class: five kernels, one of them looping to its timeout
OPENGEN = Path(sys.executable).parent / 'opengen'


def exercise_part(chapter: str) -> list:
    "The teacher's cells of a chapter a student works in: its imports (the hidden cell) and everything from '## Exercises' on."
    nb = nbformat.read(REPO / 'nbs' / f'{chapter}.ipynb', as_version=4)
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == 'markdown' and c.source.startswith('## Exercises'))
    imports = [next(c for c in nb.cells if c.cell_type == 'code' and c.source.startswith(flag) and 'import' in c.source) for flag in ('#| export', '#| hide')]
    registers = nbformat.v4.new_code_cell(f'import {WORKBOOK[chapter][1]}  # the exercise cells of the chapter (in the whole notebook: its exported cells)')
    return imports + [registers] + [c for c in nb.cells[start:] if 'nbdev_export' not in c.source]


def write(path: Path, cells: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}}), path)
    return path


def replace_body(cells: list, name: str, body: str) -> list:
    "The cells with the solution of function `name` replaced by `body` (a student's own attempt)."
    out = []
    for c in cells:
        if c.cell_type == 'code' and c.source.startswith(f'def {name}('):
            c = nbformat.v4.new_code_cell(c.source.split('### BEGIN SOLUTION')[0].rstrip(' ') + body + '\n')
        out.append(c)
    return out


@pytest.fixture(scope='module')
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp('class')
    sub, cells = root / 'submitted', exercise_part('11_vae')
    write(sub / 'alice' / 'hw3' / '11_vae.ipynb', cells)                                                   # all correct
    half = replace_body(replace_body(cells, 'gaussian_kl', '    return (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)'),   # no ½
                        'log_mean_exp', '    raise NotImplementedError()')
    write(sub / 'bob' / '11_vae.ipynb', half)
    student, _ = student_notebook(json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=cells))))
    write(sub / 'carol' / '11_vae.ipynb', [nbformat.from_dict(c) for c in student['cells']])              # the student edition, untouched
    (sub / 'dave').mkdir(); (sub / 'dave' / '11_vae.ipynb').write_text('{"cells": [{"cell_type": "code", "source": ')   # cut short
    bad = [c for c in cells if not c.source.startswith('def gaussian_kl(')]                                # a deleted cell
    bad = [nbformat.v4.new_code_cell(c.source.replace('def reparameterize(', 'def reparam(')) if c.source.startswith('def reparameterize(') else c for c in bad]
    bad.insert(2, nbformat.v4.new_code_cell('1 / 0')); bad.insert(3, nbformat.v4.new_code_cell('import time\nwhile True: time.sleep(0.01)'))   # a loop that never ends (idle: the cell timeout is tested, not a core kept busy)
    write(sub / 'erin' / '11_vae.ipynb', bad)
    out = root / 'out' / 'grades.csv'
    r = subprocess.run([str(OPENGEN), 'grade', str(sub), '--out', str(out), '--cell-timeout', '20', '--timeout', '300'],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    rows = {row['student']: row for row in csv.DictReader(out.open())}
    return rows, out.parent / 'feedback', r.stdout


def test_the_csv_has_one_row_per_student_with_the_expected_grades(graded):
    rows, _, stdout = graded
    assert sorted(rows) == ['alice', 'bob', 'carol', 'dave', 'erin']
    ex = chapter_exercises('11_vae')
    assert [rows['alice'][n] for n in ex] == ['passed'] * 3 and rows['alice']['passed'] == '3' and rows['alice']['reason'] == ''
    assert [rows['bob'][n] for n in ex] == ['passed', 'failed', 'not done'] and rows['bob']['passed'] == '1'
    assert [rows['carol'][n] for n in ex] == ['not done'] * 3 and rows['carol']['passed'] == '0'
    assert all(rows[s]['exercises'] == '3' for s in rows)
    assert 'wrote' in stdout


def test_a_malformed_file_gets_a_reason_not_a_crash(graded):
    rows, fb, _ = graded
    assert [rows['dave'][n] for n in chapter_exercises('11_vae')] == ['not graded'] * 3
    assert 'not a readable notebook' in rows['dave']['reason']


def test_crashes_loops_deleted_and_renamed_functions_score_what_they_can(graded):
    rows, fb, _ = graded
    assert rows['erin']['vae.reparameterize'] == 'missing' and rows['erin']['vae.gaussian_kl'] == 'missing'
    assert rows['erin']['vae.log_mean_exp'] == 'passed' and rows['erin']['passed'] == '1'
    assert 'ZeroDivisionError' in rows['erin']['reason']
    text = (fb / 'erin.md').read_text()
    assert 'no function named reparameterize' in text


def test_the_feedback_files_carry_each_checks_message(graded):
    _, fb, _ = graded
    assert sorted(p.stem for p in fb.glob('*.md')) == ['alice', 'bob', 'carol', 'dave', 'erin']
    bob = (fb / 'bob.md').read_text()
    assert 'Hint: the closed form has a factor ½ in front' in bob and 'not done yet' in bob


def test_the_workbook_table_matches_the_notebooks():
    "Every chapter with checks is in WORKBOOK with the prefix its check calls use."
    for nb in sorted((REPO / 'nbs').glob('[0-9]*.ipynb')):
        src = ''.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        prefixes = {s.split("'")[1].split('.')[0] for s in src.split('check(')[1:] if s.startswith("'")}
        if nb.stem in ('06_exercises', '07_grading'): continue
        assert prefixes == ({WORKBOOK[nb.stem][0]} if nb.stem in WORKBOOK else set()), (nb.stem, prefixes)
