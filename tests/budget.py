"""The suite's time budget, as a pytest plugin (tests/conftest.py loads it): a test whose setup and call together take
longer than `LIMIT_S` seconds fails, saying how long it took, unless it is marked `@pytest.mark.budget(seconds)` as
one of the few that may take longer (up to those seconds). `make test` stays under ten minutes only if no test quietly
grows: a new test that needs more must be made faster or say so in a mark, where the next reader sees it.

A limit is for a test with a core of its own. `make test` runs more pytest workers than cores (a worker that waits for a
browser, a server or a subprocess leaves its core to the others), so each test gets a share of a core: the limits are
scaled by workers / cores when the workers outnumber the cores.

`OPENGEN_TEST_BUDGET_S` changes the limit (0 turns the budget off, e.g. on a machine much slower than 2 cores of a
laptop); tests marked `slow` (`make test-slow`) have no budget."""
from __future__ import annotations

import os

import pytest

LIMIT_S = 60.0
_SETUP = pytest.StashKey[float]()


def core_share() -> float:
    "How many pytest workers share each core (at least 1): pytest-xdist's worker count over this machine's cores."
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    return max(1.0, workers / cores)


def limit_of(item) -> float | None:
    "The seconds `item` may take (setup + call), or None when it has no budget."
    scale = float(os.environ.get('OPENGEN_TEST_BUDGET_S', LIMIT_S)) / LIMIT_S * core_share()
    if scale <= 0 or item.get_closest_marker('slow'): return None
    mark = item.get_closest_marker('budget')
    return scale * (float(mark.args[0]) if mark else LIMIT_S)


def pytest_configure(config):
    config.addinivalue_line('markers', f'budget(seconds): this test may take up to `seconds` (setup + call) instead of {LIMIT_S:g}')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == 'setup': item.stash[_SETUP] = rep.duration
    if rep.when != 'call' or not rep.passed: return
    limit = limit_of(item)
    spent = item.stash.get(_SETUP, 0.0) + rep.duration
    if limit is not None and spent > limit:
        rep.outcome = 'failed'
        share = f' ({core_share():.2g} workers per core)' if core_share() > 1 else ''
        rep.longrepr = (f'{item.nodeid} took {spent:.1f} s (setup {item.stash.get(_SETUP, 0.0):.1f} s), over its budget of '
                        f'{limit:.0f} s{share}: make it faster, or mark it @pytest.mark.budget(seconds) if it must take longer '
                        f'(tests/budget.py)')
