"""The console script: one-line errors, PNG output, train + resume."""
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / 'opengen'


def run(*args, **kw):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=600, **kw)


def test_sample_a_digit(tmp_path):
    r = run('sample', 'cvae', '--digit', '7', '-n', '8', '--out', str(tmp_path / 'sevens.png'))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'sevens.png').read_bytes()[:4] == b'\x89PNG'


@pytest.mark.parametrize('args', [
    ['sample', 'cvae', '--digit', '10', '--out', 'x.png'],
    ['sample', 'cvae', '--digit', '-1', '--out', 'x.png'],
    ['sample', 'cvae', '--out', 'x.png'],
    ['sample', 'cvae', '--digit', 'seven', '--out', 'x.png'],
    ['sample', 'nope', '--out', 'x.png'],
    ['sample', 'cvae', '--digit', '3', '--weights', 'missing.safetensors', '--out', 'x.png'],
    ['train', 'cvae', '--epochs', '0', '--out', 'somewhere'],
    ['train', 'cvae', '--epochs', '1', '--out', 'fresh_dir', '--resume'],
])
def test_bad_arguments_give_one_line(args, tmp_path):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'error' in lines[0] and 'Traceback' not in r.stderr, r.stderr


def test_train_then_resume(tmp_path):
    out = tmp_path / 'run'
    r = run('train', 'cvae', '--epochs', '1', '--n-train', '256', '--out', str(out))
    assert r.returncode == 0, r.stderr
    w = out / 'cvae_mnist.safetensors'
    assert w.exists() and w.with_suffix('.md').exists() and (out / 'loss_curve.png').exists()
    r = run('train', 'cvae', '--epochs', '2', '--n-train', '256', '--out', str(out), '--resume')
    assert r.returncode == 0, r.stderr
    assert 'resumed from' in r.stdout
    r = run('sample', 'cvae', '--digit', '2', '-n', '4', '--weights', str(w), '--out', str(tmp_path / 'g.png'))
    assert r.returncode == 0, r.stderr
