"""The suite's time budget (tests/budget.py) holds: a test over its limit fails with its time, one marked
`budget(seconds)` may take up to those seconds, `slow` tests have none. Run in a separate pytest on a small suite
whose limit is scaled down (OPENGEN_TEST_BUDGET_S), so that it takes a second, not a minute."""
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SUITE = '''
import time, pytest
@pytest.fixture(scope='module')
def slow_setup():
    time.sleep(0.5); return 1
def test_quick(): pass
def test_too_long(): time.sleep(0.5)
def test_too_long_in_its_setup(slow_setup): pass
@pytest.mark.budget(120)
def test_allowed_longer(): time.sleep(0.5)
@pytest.mark.slow
def test_slow_has_no_budget(): time.sleep(0.5)
def test_failing_is_reported_as_itself(): time.sleep(0.5); assert False, 'its own failure'
'''


def run_suite(tmp_path, limit: str, workers: int | None = None):
    "The small suite in a pytest of its own, as if it were one of `workers` pytest-xdist workers (None: not under xdist)."
    (tmp_path / 'test_small.py').write_text(SUITE)
    (tmp_path / 'conftest.py').write_text('import budget\ndef pytest_configure(config): config.pluginmanager.register(budget)\n')
    env = {k: v for k, v in os.environ.items() if k != 'PYTEST_XDIST_WORKER_COUNT'} | {'OPENGEN_TEST_BUDGET_S': limit, 'PYTHONPATH': str(HERE)}
    if workers: env['PYTEST_XDIST_WORKER_COUNT'] = str(workers)
    r = subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-rA', '-q', '-o', 'addopts=', str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return {line.split()[1].split('::')[-1]: line.split()[0] for line in r.stdout.splitlines()
            if line.startswith(('PASSED', 'FAILED'))}, r.stdout


def test_a_test_over_its_budget_fails_and_a_marked_one_passes(tmp_path):
    outcome, out = run_suite(tmp_path, '0.2')          # a limit of 0.2 s (60 s scaled by 1/300): a marked 120 s becomes 0.4 s...
    assert outcome['test_quick'] == 'PASSED', out
    assert outcome['test_too_long'] == 'FAILED' and 'over its budget' in out and 'test_too_long took 0.5' in out, out
    assert outcome['test_too_long_in_its_setup'] == 'FAILED', out      # a fixture's time counts for the test that waits for it
    assert outcome['test_slow_has_no_budget'] == 'PASSED', out
    assert outcome['test_failing_is_reported_as_itself'] == 'FAILED' and 'its own failure' in out, out
    assert outcome['test_allowed_longer'] == 'FAILED', out             # ...which 0.5 s exceeds


def test_a_mark_raises_the_limit_and_zero_turns_the_budget_off(tmp_path):
    outcome, out = run_suite(tmp_path, '1')            # 1 s: the marked test may take 2 s
    assert outcome['test_allowed_longer'] == 'PASSED' and outcome['test_too_long'] == 'PASSED', out
    outcome, out = run_suite(tmp_path, '0')
    assert all(v == 'PASSED' for k, v in outcome.items() if k != 'test_failing_is_reported_as_itself'), out


def test_more_workers_than_cores_share_a_core_and_the_limits_grow_with_the_share(tmp_path):
    from budget import core_share
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    outcome, out = run_suite(tmp_path, '0.2', workers=3 * cores)          # 3 workers per core: 0.2 s becomes 0.6 s
    assert outcome['test_too_long'] == 'PASSED' and outcome['test_allowed_longer'] == 'PASSED', out
    outcome, out = run_suite(tmp_path, '0.1', workers=3 * cores)          # 0.3 s: the message says why the limit is what it is
    assert outcome['test_too_long'] == 'FAILED' and '(3 workers per core)' in out, out
    assert core_share() >= 1                                              # this process's own share: never below one core
