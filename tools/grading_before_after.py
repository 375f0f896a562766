"""The closing note of issue 38: the adversarial class of tests/test_grading.py, graded by a chosen grader.
`python tools/grading_before_after.py build DIR [SKIP...]` writes the class into DIR/submitted (skipping the named students);
`python tools/grading_before_after.py new DIR` grades it with the installed grader (PYTHONPATH=CHECKOUT for an older one)
and writes DIR/new.json: each student's three statuses and the reason."""
import sys, json
from pathlib import Path
which, root = sys.argv[1], Path(sys.argv[2])
sub = root / 'submitted'
NAMES = ['attention.attention', 'attention.split_heads', 'attention.merge_heads']
if which == 'build':
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))
    import test_grading as T
    for s, (nb, want) in T.attacks(root).items():
        if s in sys.argv[3:]: continue
        T.write(sub / s / f'{T.CHAPTER}.ipynb', nb)
else:
    from opengen.grading import grade_class
    import opengen.grading as G; print(G.__file__, flush=True)
    rows = grade_class(sub, root / 'out' / 'grades.csv', cell_timeout=4, nb_timeout=120)
    json.dump({r['student']: [r[n] for n in NAMES] + [r['reason'][:200]] for r in rows}, open(root / f'{which}.json', 'w'), indent=1)
    print(open(root / f'{which}.json').read())
