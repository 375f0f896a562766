"""Run the notebooks as `make test` does: every chapter once, on every core, each edition's promise checked.

- A notebook without exercises runs as the teacher wrote it (`nbdev_test`'s runner, smoke size).
- A notebook with exercises runs once as its *test edition*: the student edition (`opengen.exercises.student_notebook`,
  every solution a stub, the answers imported from the package instead of shown) with the teacher's solution run just
  before each stub. Around every exercise the cells are
    OPENGEN_EXERCISES=teacher; the solution cell; its check (must pass)
    OPENGEN_EXERCISES=student; the stub cell;     its check (must say "not done")
  so the rest of the notebook runs on the stubs, as a student's does: the run proves both what the teacher's edition
  and what the student's edition promise, without running the chapter twice. Names that only a solution binds (a helper
  written inside the solution region) are deleted after its check, so a later cell cannot lean on them unseen.

The workers first fill the shared cache of real-data statistics (one dataset each), then take the notebooks, longest first (`tools/notebook_times.json`, refreshed by `--save-times`), one torch
thread per worker, as many workers as cores. Prints each notebook's time; exit status 1 if any failed.
"""
from __future__ import annotations

import argparse, ast, json, os, shutil, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
TIMES = Path(__file__).with_name('notebook_times.json')


def _src(cell: dict) -> str: return ''.join(cell['source'])


def _code(src: str) -> dict:
    return {'cell_type': 'code', 'metadata': {}, 'outputs': [], 'execution_count': None, 'source': src}


def _bound_names(src: str) -> set[str]:
    "The names a cell binds at top level (functions, classes, assignments, imports); empty if it does not parse."
    try: tree = ast.parse(src)
    except SyntaxError: return set()
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)): out |= {(a.asname or a.name).split('.')[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                out |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def test_edition(nb: dict) -> tuple[dict, int]:
    "The test edition of a notebook (see the module's docstring) and how many exercise cells it has."
    from opengen.exercises import BEGIN, student_source
    cells, n = [], 0
    for i, c in enumerate(nb['cells']):
        src = _src(c)
        if c['cell_type'] != 'code' or BEGIN not in [l.strip() for l in src.splitlines()]:
            cells.append(c); continue
        n += 1
        check = nb['cells'][i + 1] if i + 1 < len(nb['cells']) else None
        if check is None or check['cell_type'] != 'code' or 'check(' not in _src(check):
            raise ValueError(f'exercise cell {i} has no check cell after it')
        stub = student_source(src)
        only_solution = sorted(_bound_names(src) - _bound_names(stub))
        cells += [_code("import os; os.environ['OPENGEN_EXERCISES'] = 'teacher'   # the teacher's solution must pass"),
                  {**c, 'outputs': []}, {**check, 'outputs': []},
                  _code("os.environ['OPENGEN_EXERCISES'] = 'student'   # the student's stub must say 'not done'"
                        + ''.join(f'\ndel {name}' for name in only_solution)),
                  {**c, 'source': stub, 'outputs': []}]
    return {**nb, 'cells': cells}, n


def plan(names: list[str] | None, dst: Path) -> list[tuple[Path, str]]:
    "(notebook to run, its edition) for every notebook of nbs/ (or those named), test editions written into `dst`."
    from opengen.exercises import EXERCISES, hidden_answers, hide_answers
    from opengen.grading import WORKBOOK  # noqa: F401  (imports every chapter's module: registers every exercise)
    answers = hidden_answers(EXERCISES.values())
    if dst.exists(): shutil.rmtree(dst)
    shutil.copytree(NBS, dst, ignore=shutil.ignore_patterns('*.ipynb', '.ipynb_checkpoints', '_proc'))
    out = []
    for p in sorted(NBS.glob('*.ipynb')):
        if p.name.startswith(('_', '.')) or (names and p.stem not in names and p.name not in names): continue
        nb, n = test_edition(hide_answers(json.loads(p.read_text()), answers)[0])   # as the student's: the answers imported, not shown
        if not n: out.append((p, 'teacher')); continue
        (dst / p.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False))
        out.append((dst / p.name, 'teacher+student'))
    return out


def _run(path: str, edition: str) -> tuple[str, bool, float]:
    "One notebook in this worker, as `nbdev_test` runs it (cells with the skip flags of settings.ini are not run)."
    from nbdev.config import get_config
    from nbdev.test import test_nb
    os.environ['OPENGEN_EXERCISES'] = 'teacher' if edition == 'teacher' else 'student'
    cfg = get_config()
    ok, dt = test_nb(Path(path), skip_flags=cfg.tst_flags.split(), basepath=cfg.config_path)
    return path, ok, dt


def _warm(dataset: str) -> tuple[str, bool, float]:
    "Fill the shared cache (`OPENGEN_CACHE`) with the real-data statistics and reference row of `dataset` that most chapters"
    " and the card tests read: made once, before any notebook, instead of by every process that first needs them at once."
    t0 = time.time()
    from opengen.metrics import real_stats, reference_row
    real_stats(dataset); reference_row(dataset, 1000)
    return f'real-data statistics of {dataset} (the shared cache)', True, time.time() - t0


def _init_worker():
    import torch
    torch.set_num_threads(1)


def main(argv=None) -> int:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('names', nargs='*', help='notebooks to run (default: all of nbs/)')
    a.add_argument('--workers', type=int, default=os.cpu_count() or 2)
    a.add_argument('--dst', type=Path, default=ROOT / '_build' / 'test-nbs', help='where the test editions are written')
    a.add_argument('--save-times', action='store_true', help=f'write the measured times to {TIMES.name} (the order of later runs)')
    args = a.parse_args(argv)
    os.environ.update(OMP_NUM_THREADS='1', IN_TEST='1')
    jobs = plan(args.names, args.dst)
    known = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    jobs.sort(key=lambda j: -known.get(j[0].name, 30.))              # longest first: no core idles at the end
    t0, times, failed = time.time(), {}, []
    with ProcessPoolExecutor(args.workers, initializer=_init_worker) as ex:
        futs = [ex.submit(_warm, ds) for ds in ('mnist', 'fashion')]          # first, one per worker
        futs += [ex.submit(_run, str(p), e) for p, e in jobs]
        for f in as_completed(futs):
            path, ok, dt = f.result()
            name = Path(path).name
            if name.endswith('.ipynb'): times[name] = round(dt, 1)
            if not ok: failed.append(name)
            print(f"{'ok  ' if ok else 'FAIL'} {name:28s} {dt:6.1f} s", flush=True)
    editions = {p.name: e for p, e in jobs}
    print(f'{len(jobs)} notebooks ({sum(e != "teacher" for e in editions.values())} as teacher + student editions) '
          f'in {time.time() - t0:.0f} s on {args.workers} workers; {sum(times.values()):.0f} s of notebook time')
    if args.save_times and not failed: TIMES.write_text(json.dumps(dict(sorted(times.items(), key=lambda kv: -kv[1])), indent=1) + '\n')
    if failed: print('failed: ' + ' '.join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    # the workers are handed functions of an importable module, not of __main__: a notebook's kernel replaces __main__
    sys.path.insert(0, str(Path(__file__).parent))
    import test_notebooks
    sys.exit(test_notebooks.main())
