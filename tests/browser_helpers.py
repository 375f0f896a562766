"""Shared pieces of the real-browser tests (test_site.py, test_jupyterlab.py): Debian's chromium driven by Playwright,
the docs site built on demand, and servers on 127.0.0.1 that are always stopped.

Chromium is Debian's (`apt-get install chromium`; `.ci/run` installs it): Playwright's own browser download cannot be
used here. The tests skip, saying why, only when chromium is missing and cannot be installed; under CI they fail.
"""
from __future__ import annotations

import functools, http.server, os, shutil, socket, subprocess, sys, threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get('OPENGEN_SITE', REPO / '_site'))
ARTIFACTS = Path(os.environ.get('OPENGEN_ARTIFACTS', REPO / 'test-artifacts'))
CHROMIUM = os.environ.get('OPENGEN_CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--no-first-run']


def free_port() -> int:
    "A free TCP port on 127.0.0.1."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _ensure_chromium() -> str | None:
    "Path of chromium, installing Debian's package when missing and we may; None if there is none."
    if Path(CHROMIUM).exists(): return CHROMIUM
    if shutil.which('chromium'): return shutil.which('chromium')
    if shutil.which('apt-get') and hasattr(os, 'geteuid') and os.geteuid() == 0:
        env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
        subprocess.run(['apt-get', 'update', '-qq'], env=env, capture_output=True, timeout=600)
        subprocess.run(['apt-get', 'install', '-y', '-qq', 'chromium'], env=env, capture_output=True, timeout=900)
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which('chromium')


def _no_browser(reason: str):
    if os.environ.get('CI'): pytest.fail(f'{reason} (CI must run the browser tests: .ci/run installs chromium)')
    pytest.skip(reason)


@pytest.fixture(scope='session')
def browser():
    "A headless Debian chromium, closed at the end of the session."
    try: from playwright.sync_api import sync_playwright
    except ImportError: _no_browser('the playwright package is not installed (pip install -e ".[dev]")')
    exe = _ensure_chromium()
    if not exe: _no_browser(f'chromium not found at {CHROMIUM} and it could not be installed (apt-get install chromium)')
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try: yield b
        finally: b.close()


@pytest.fixture(scope='session')
def artifacts() -> Path:
    "Where screenshots go (CI keeps this folder)."
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _site_stale(site: Path) -> bool:
    idx = site / 'index.html'
    if not idx.exists(): return True
    built = idx.stat().st_mtime
    srcs = [*(REPO / 'nbs').glob('*.ipynb'), *(REPO / 'nbs').glob('*.yml'), *(REPO / 'tools').rglob('*')]
    return any(p.is_file() and p.stat().st_mtime > built for p in srcs)


@pytest.fixture(scope='session')
def site() -> Path:
    "The built docs site: the same build as `make docs`, run when `_site` is missing or older than its sources."
    if _site_stale(SITE):
        r = subprocess.run([sys.executable, str(REPO / 'tools' / 'build_docs.py'), '--site', str(SITE)], cwd=REPO,
                           capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, f'docs build failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
    assert (SITE / 'index.html').exists()
    return SITE


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture(scope='session')
def site_url(site):
    "`site` served over HTTP on 127.0.0.1 (a free port), stopped at the end of the session."
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(site)))
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    try: yield f'http://127.0.0.1:{srv.server_address[1]}/'
    finally:
        srv.shutdown(); srv.server_close(); t.join(10)


class PageWatch:
    "Records what goes wrong on a page: console errors, page errors, failed and off-machine requests, HTTP errors."
    def __init__(self, page, allowed_prefix: str):
        self.errors: list[str] = []
        self.allowed = allowed_prefix
        page.on('console', lambda m: m.type == 'error' and self.errors.append(f'console: {m.text}'))
        page.on('pageerror', lambda e: self.errors.append(f'page error: {e}'))
        page.on('requestfailed', lambda r: self.errors.append(f'request failed: {r.url[:120]} ({r.failure})'))
        page.on('response', lambda r: r.status >= 400 and self.errors.append(f'HTTP {r.status}: {r.url[:120]}'))
        # the network is off: anything not served from this machine is refused, and counts as a failure
        page.route('**/*', self._route)

    def _route(self, route):
        url = route.request.url
        if url.startswith((self.allowed, 'data:', 'blob:', 'about:')): return route.continue_()
        self.errors.append(f'off-machine request: {url[:120]}')
        route.abort('internetdisconnected')
