"""Shared test setup: read the data from ../shared/data (beside the clone) unless OPENGEN_DATA says otherwise; every test
starts from the same seeded global RNG; one torch thread per pytest-xdist worker (as many workers as cores)."""
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_shared = REPO.parent / 'shared' / 'data'
if not os.environ.get('OPENGEN_DATA') and (_shared / 'MNIST' / 'raw').is_dir():
    os.environ['OPENGEN_DATA'] = str(_shared)
os.environ.setdefault('OPENGEN_DEVICE', 'cpu')
if os.environ.get('PYTEST_XDIST_WORKER'):      # workers share the cores: one thread each, or they slow each other down
    torch.set_num_threads(1)
    os.environ['OMP_NUM_THREADS'] = '1'         # and so do the processes they start (the console script, JupyterLab's kernel)

# Real-browser fixtures (chromium, the built docs site and its server), shared by test_site.py and test_jupyterlab.py:
# defined once here so that one Playwright session serves every test.
from browser_helpers import artifacts, browser, site, site_url  # noqa: E402,F401
import budget  # noqa: E402  (the time budget of every test: tests/budget.py)


def pytest_configure(config):
    config.pluginmanager.register(budget, 'opengen-budget')


@pytest.fixture(autouse=True)
def _seeded():
    "Every test starts from the same global RNG state, so no result depends on which tests ran before it."
    random.seed(0); np.random.seed(0); torch.manual_seed(0)
    yield


@pytest.fixture(scope='session', autouse=True)
def _cache(tmp_path_factory):
    """Recomputable files (real-data statistics): in the folder `make test` made fresh for its run and shares between the
    notebooks and every worker ($OPENGEN_TEST_CACHE: computed once, written atomically), else in one folder per worker."""
    old = os.environ.get('OPENGEN_CACHE')
    os.environ['OPENGEN_CACHE'] = os.environ.get('OPENGEN_TEST_CACHE') or str(tmp_path_factory.getbasetemp() / 'opengen-cache')
    yield
    if old is None: os.environ.pop('OPENGEN_CACHE', None)
    else: os.environ['OPENGEN_CACHE'] = old


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    "Under `--dist loadgroup`, a group must really go to one worker (its tests share one sampling run); refuse otherwise."
    if not os.environ.get('PYTEST_XDIST_WORKER') or config.getoption('dist', 'no') != 'loadgroup': return
    grouped = [it for it in items if it.get_closest_marker('xdist_group')]
    if grouped and not all('@' in it.nodeid for it in grouped):
        raise pytest.UsageError('pytest-xdist did not apply the xdist_group marks (this pytest renamed what it rewrites): '
                                'install the versions of settings.ini (pip install -e ".[dev]")')
