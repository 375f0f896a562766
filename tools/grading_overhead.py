"""Seconds per notebook of `run_submission` with bubblewrap and without (limits only), interleaved, three times each, on the teacher's 24_attention and 21_ddpm (README quotes the medians). Run from the repository root."""
import shutil, statistics, tempfile, time
from pathlib import Path
from opengen.grading import run_submission
root = Path(tempfile.mkdtemp())
for ch in ('24_attention', '21_ddpm'):
    p = root / f'{ch}.ipynb'; shutil.copy(f'nbs/{ch}.ipynb', p)
    t = {'bwrap': [], 'none': []}
    for _ in range(3):
        for how in ('bwrap', 'none'):
            t0 = time.time(); g = run_submission(p, sandbox=how); t[how].append(time.time() - t0)
            assert g.passed == 3, g
    print(ch, {k: f'{statistics.median(v):.2f} s (median of {len(v)}: {", ".join(f"{x:.2f}" for x in v)})' for k, v in t.items()}, flush=True)
