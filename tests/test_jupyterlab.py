"""A student's path through JupyterLab in a real browser: open a widget notebook, run it, move a slider with the
keyboard, and see the explorer's image change. JupyterLab runs on 127.0.0.1 (a free port, no token) in a temporary
folder with its own settings, and is always stopped. Screenshot: test-artifacts/jupyterlab_slider.png."""
import os, signal, subprocess, sys, time, urllib.request

import nbformat
import pytest

from browser_helpers import PageWatch, free_port

pytestmark = pytest.mark.xdist_group('browser')   # one worker, one chromium for every browser test

DEMO = '''import torch
from opengen.widgets import latent_explorer

class Blob(torch.nn.Module):
    "Decodes z to a Gaussian blob at the position (z2, z1): a stand-in for a trained decoder."
    def decode(self, z):
        t = torch.linspace(-3, 3, 28)
        return torch.exp(-((t[None, :, None] - z[:, 1, None, None]) ** 2 + (t[None, None, :] - z[:, 0, None, None]) ** 2))[:, None]

ex = latent_explorer(Blob(), lim=3, title='Blob explorer')
ex'''


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "JupyterLab on 127.0.0.1 serving a folder with one widget notebook; yields its base URL; always stopped."
    root = tmp_path_factory.mktemp('lab')
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# Widget check'), nbformat.v4.new_code_cell(DEMO)],
                                  metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nbformat.write(nb, root / 'widget_demo.ipynb')
    port = free_port()
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(root / '.cfg'), 'JUPYTER_RUNTIME_DIR': str(root / '.rt'),
           'JUPYTERLAB_SETTINGS_DIR': str(root / '.settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(root / '.ws'),
           'IPYTHONDIR': str(root / '.ipython'), 'OMP_NUM_THREADS': '1',
           'PATH': os.pathsep.join([os.path.dirname(sys.executable), os.environ.get('PATH', '')])}
    # `-m jupyterlab`, not `jupyter lab`: the latter runs whichever `jupyter-lab` is first on PATH, maybe another env's
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
           '--ServerApp.port_retries=0', "--ServerApp.token=", "--ServerApp.password=", f'--ServerApp.root_dir={root}',
           '--LabApp.expose_app_in_browser=True', '--LabApp.news_url=None', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')       # CI containers run as root
    logf = tmp_path_factory.mktemp('lablog') / 'lab.log'
    log = open(logf, 'wb')
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url + 'api/status', timeout=5) as r:
                    if r.status == 200: break
            except OSError: pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f'JupyterLab did not start:\n{logf.read_text()[-3000:]}')
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)            # the server and the kernels it started
            try: proc.wait(20)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)
        log.close()


KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""


def test_slider_moves_image(browser, lab, artifacts):
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    w = PageWatch(page, lab)
    page.set_default_timeout(60_000)
    try:
        page.goto(lab + 'lab/tree/widget_demo.ipynb')
        page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=120_000)
        page.wait_for_function(KERNEL_IDLE, timeout=120_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        img = page.locator('.jp-OutputArea-output img.widget-image').first
        img.wait_for(state='visible', timeout=120_000)
        page.wait_for_function('i => i.complete && i.naturalWidth > 0', arg=img.element_handle())
        before_src, before_png = img.get_attribute('src'), img.screenshot()
        readout = page.locator('.jp-OutputArea-output .widget-readout').first
        before_txt = readout.inner_text()
        handle = page.locator('.jp-OutputArea-output .widget-slider .noUi-handle').first
        handle.focus()
        for _ in range(20): page.keyboard.press('ArrowRight')     # 20 steps of 0.05: z1 from 0 to 1
        page.wait_for_function('([i, s]) => i.src !== s && i.complete && i.naturalWidth > 0',
                               arg=[img.element_handle(), before_src], timeout=30_000)
        page.wait_for_timeout(300)
        assert readout.inner_text() != before_txt, 'the slider did not move'
        assert img.screenshot() != before_png, 'the image did not change'
        page.screenshot(path=str(artifacts / 'jupyterlab_slider.png'))
        bad = [e for e in w.errors if 'favicon' not in e]
        assert not bad, bad
    finally: page.close()
