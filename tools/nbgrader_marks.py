"""Write nbgrader's cell metadata into every notebook of nbs/ (`opengen.exercises.nbgrader_marks`): each exercise cell
becomes an nbgrader solution cell and its check cell an autograded test cell worth one point. Run it after adding an
exercise; tests/test_repo.py fails while a notebook is unmarked."""
import argparse, json
from pathlib import Path

from opengen.exercises import nbgrader_marks

ROOT = Path(__file__).resolve().parents[1]


def mark(src: Path = ROOT / 'nbs') -> dict:
    "Mark every notebook of `src` in place (only those that change are written); returns {notebook: exercises}."
    counts = {}
    for p in sorted(src.glob('*.ipynb')):
        nb = json.loads(p.read_text())
        marked, n = nbgrader_marks(nb)
        if marked != nb: p.write_text(json.dumps(marked, indent=1, ensure_ascii=False) + '\n')
        counts[p.name] = n
    return counts


if __name__ == '__main__':
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--src', type=Path, default=ROOT / 'nbs')
    counts = mark(a.parse_args().src)
    print(f'nbgrader metadata: {sum(counts.values())} exercises in {sum(1 for n in counts.values() if n)} notebooks')
