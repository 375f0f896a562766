"""Shared test setup: read the data from ../shared/data (beside the clone) unless OPENGEN_DATA says otherwise."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_shared = REPO.parent / 'shared' / 'data'
if not os.environ.get('OPENGEN_DATA') and (_shared / 'MNIST' / 'raw').is_dir():
    os.environ['OPENGEN_DATA'] = str(_shared)
os.environ.setdefault('OPENGEN_DEVICE', 'cpu')

# Real-browser fixtures (chromium, the built docs site and its server), shared by test_site.py and test_jupyterlab.py:
# defined once here so that one Playwright session serves every test.
from browser_helpers import artifacts, browser, site, site_url  # noqa: E402,F401
