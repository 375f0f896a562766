"""Data-parallel training (02_learner, `DistributedCB`): two CPU processes under torchrun (gloo) against one process with the
doubled batch, and a run that loses a rank resuming from its checkpoint. Each run is tests/ddp_worker.py on 1,024 MNIST images."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch

from opengen.checkpoints import load_state

pytestmark = pytest.mark.xdist_group('ddp')   # one worker: the two first tests share one run of two ranks
WORKER = Path(__file__).with_name('ddp_worker.py')
# the tolerance of "the same run": 2 ranks sum the gradients in another order than 1 process; float32, 8-16 AdamW steps
TOL = 1e-5


# Once in many runs on a loaded 2-core machine, a rank of torch's gloo backend has aborted inside torch, before any Python
# error ("terminate called without an active exception", SIGABRT). Not a failure of our code: such a run is started once
# more (from scratch), and said so; a second abort fails the test.
TORCH_ABORT = 'terminate called without an active exception'


def run(out: Path, bs: int, nproc: int = 1, *args) -> subprocess.CompletedProcess:
    "The worker in one process, or in `nproc` processes under torchrun on this machine."
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    env.pop('WORLD_SIZE', None); env.pop('RANK', None)
    cmd = [sys.executable, str(WORKER)] if nproc == 1 else \
          [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', str(WORKER)]
    cmd += ['--out', str(out), '--bs', str(bs), *map(str, args)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and TORCH_ABORT in r.stderr and '--die-at' not in cmd and '--resume' not in cmd:
        print(f'a rank aborted inside torch ({TORCH_ABORT!r}): the run is started again')
        shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return r


def result(out: Path) -> tuple[dict, dict]:
    return torch.load(out / 'final.pt'), json.loads((out / 'result.json').read_text())


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope='module')
def two_epochs_on_two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp2')
    r = run(out, 64, 2, '--epochs', 2)
    assert r.returncode == 0, r.stderr[:6000]
    return out


def test_two_ranks_train_as_one_process_with_the_doubled_batch(tmp_path, two_epochs_on_two_ranks):
    r = run(tmp_path, 128, 1, '--epochs', 2)
    assert r.returncode == 0, r.stderr[-3000:]
    w1, one = result(tmp_path)
    w2, two = result(two_epochs_on_two_ranks)
    assert (one['world_size'], two['world_size']) == (1, 2) and one['steps'] == two['steps'] == 16   # 1,024 images / 128 per step, 2 epochs
    assert max_diff(w1, w2) < TOL, max_diff(w1, w2)                                               # the same (EMA) weights
    assert max(abs(a - b) for a, b in zip(one['losses'], two['losses'])) < TOL                     # each step's loss: the ranks' mean
    for e1, e2 in zip(one['history'], two['history']):                                            # validation: each image once, summed
        assert abs(e1['valid_loss'] - e2['valid_loss']) < TOL and abs(e1['train_loss'] - e2['train_loss']) < TOL
    assert one['losses'][-1] < 0.75 * one['losses'][0]                                             # and it trained
    print(f"2 ranks against 1 process: weights max |Δ| {max_diff(w1, w2):.2e}, step losses max |Δ| "
          f"{max(abs(a - b) for a, b in zip(one['losses'], two['losses'])):.2e}")
    files = sorted(p.name for p in two_epochs_on_two_ranks.iterdir())
    assert files == ['epochs.csv', 'final.pt', 'history.csv', 'loss_curve.png', 'result.json', 'train_state.safetensors'], files


def test_a_run_that_lost_a_rank_resumes_from_its_checkpoint(tmp_path, two_epochs_on_two_ranks):
    r = run(tmp_path, 64, 2, '--epochs', 2, '--die-at', 12)               # rank 1 dies in the second epoch
    assert r.returncode != 0 and not (tmp_path / 'final.pt').exists()
    state = load_state(tmp_path / 'train_state.safetensors')              # written by rank 0 after the first epoch
    assert (state['epochs_done'], state['train_iter'], len(state['rng_ranks'])) == (1, 8, 2)
    r = run(tmp_path, 64, 2, '--epochs', 2, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'resumed from' in r.stdout and r.stdout.count('resumed from') == 1                   # said once, by rank 0
    w, res = result(tmp_path)
    w_ref, ref = result(two_epochs_on_two_ranks)
    assert res['steps'] == 16 and max_diff(w, w_ref) < 1e-6, max_diff(w, w_ref)                # the uninterrupted run's weights
    print(f'resumed against uninterrupted: weights max |Δ| {max_diff(w, w_ref):.2e}')
    assert len(res['history']) == 2 and all(abs(a[k] - b[k]) < 1e-6 for a, b in zip(res['history'], ref['history'])
                                            for k in ('train_loss', 'valid_loss'))           # the log of both epochs, kept across the crash
    assert max(abs(a - b) for a, b in zip(res['losses'], ref['losses'])) < 1e-6


@pytest.mark.budget(120)   # torchrun and two ranks, each importing every family of the CLI
def test_the_cli_launches_the_processes_and_rank_0_writes_the_card(tmp_path):
    "`opengen train NAME --nproc 2`: torchrun starts 2 ranks of `python -m opengen.cli train NAME`; one weights file, one card, saying so."
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-m', 'opengen.cli', 'train', 'ae_mnist', '--nproc', '2', '--n-train', '512', '--epochs', '1',
                        '--eval-n', '10', '--out', str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('saved ') == 1
    card = (tmp_path / 'ae_mnist.md').read_text()
    assert '2 data-parallel processes (torch.distributed, gloo)' in card and '- **steps**: 2' in card   # 512 images / (2 × 128) per step


def test_nproc_below_one_is_a_one_line_error(tmp_path, capsys):
    from opengen.cli import main
    assert main(['train', 'ae_mnist', '--nproc', '0', '--out', str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ['opengen train: error: --nproc must be >= 1, got 0']
