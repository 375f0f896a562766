"""Build the student edition: every notebook of nbs/ into student/, each solution region (### BEGIN SOLUTION ... ### END
SOLUTION) replaced by `raise NotImplementedError()` and the outputs of those cells and their check cells cleared, and
the code that answers an exercise (the library's implementation, the exercise's definition) imported from the package
instead of shown (`opengen.exercises.student_notebook`, `hide_answers`). `make student` runs it; student/ is not committed.
With --nbgrader (`make nbgrader`), the nbgrader edition instead (`nbgrader_source`): the solutions stay (nbgrader's
generate_assignment removes them), the answers are hidden, and each test cell is check(..., require='passed')."""
import argparse, json, shutil
from pathlib import Path

from opengen.exercises import EXERCISES, hidden_answers, nbgrader_source, student_notebook
from opengen.grading import WORKBOOK  # noqa: F401  (imports every chapter's module: registers every exercise)

ROOT = Path(__file__).resolve().parents[1]


def build(src: Path = ROOT / 'nbs', dst: Path = ROOT / 'student', nbgrader: bool = False) -> dict:
    "Write the student edition of `src` into `dst` (replaced), or with `nbgrader` the nbgrader edition; returns {notebook: number of solution regions}."
    if dst.exists(): shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns('*.ipynb', '.ipynb_checkpoints', '_proc'))
    counts, answers = {}, hidden_answers(EXERCISES.values())
    for p in sorted(src.glob('*.ipynb')):
        nb, n = (nbgrader_source if nbgrader else student_notebook)(json.loads(p.read_text()), answers)
        (dst / p.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
        counts[p.name] = n
    return counts


if __name__ == '__main__':
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--src', type=Path, default=ROOT / 'nbs'); a.add_argument('--dst', type=Path, default=None)
    a.add_argument('--nbgrader', action='store_true', help="the nbgrader edition (solutions kept, answers hidden, each test cell requires a pass) into nbgrader-source/")
    args = a.parse_args()
    args.dst = args.dst or ROOT / ('nbgrader-source' if args.nbgrader else 'student')
    counts = build(args.src, args.dst, args.nbgrader)
    (args.dst / 'EXERCISES').write_text(''.join(f'{nb}\n' for nb, n in counts.items() if n))
    print(f'{"nbgrader" if args.nbgrader else "student"} edition: {sum(counts.values())} exercises in {sum(1 for n in counts.values() if n)} notebooks -> {args.dst}')
