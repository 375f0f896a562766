"""A student's path through JupyterLab in a real browser, on the student edition (`tools/build_student.py`) of the VAE
chapter: open `11_vae.ipynb`, run it top to bottom (smoke size), type a correct solution into the
`reparameterize` exercise and see its check pass, type a plausible wrong one and see the check's hint, then move a
slider of the chapter's latent explorer (the shipped `vae2d_mnist`) with the keyboard and see the decoded image change.
JupyterLab runs on 127.0.0.1 (a free port, no token) in a temporary folder with its own settings, and is always
stopped. Screenshots: test-artifacts/jupyterlab_exercise_passed.png, jupyterlab_exercise_hint.png,
jupyterlab_slider.png."""
import os, signal, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

from browser_helpers import PageWatch, free_port

pytestmark = [pytest.mark.xdist_group('browser'),  # one worker, one chromium for every browser test
              pytest.mark.budget(120)]          # the first test waits for JupyterLab to start and the chapter to run
REPO = Path(__file__).resolve().parents[1]
CHAPTER = '11_vae.ipynb'
RIGHT = 'return mu + (0.5 * logvar).exp() * eps'
WRONG = 'return mu + logvar.exp() * eps'            # σ taken as exp(logvar): the check must name the mistake
WRONG_HINT = 'σ = exp(logvar / 2): logvar is log σ², so halve it before exponentiating'


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "JupyterLab on 127.0.0.1 serving the student edition (built fresh) at smoke size; yields its base URL; always stopped."
    root = tmp_path_factory.mktemp('lab')
    r = subprocess.run([sys.executable, str(REPO / 'tools' / 'build_student.py'), '--dst', str(root / 'student')],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f'the student edition did not build:\n{r.stderr[-3000:]}'
    port = free_port()
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(root / '.cfg'), 'JUPYTER_RUNTIME_DIR': str(root / '.rt'),
           'JUPYTERLAB_SETTINGS_DIR': str(root / '.settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(root / '.ws'),
           'IPYTHONDIR': str(root / '.ipython'), 'OMP_NUM_THREADS': '1', 'IN_TEST': '1', 'HF_HUB_OFFLINE': '1',
           'PATH': os.pathsep.join([os.path.dirname(sys.executable), os.environ.get('PATH', '')])}
    env.pop('OPENGEN_EXERCISES', None)              # a student's kernel: checks report, they do not assert
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
# the notebook's cells, read from JupyterLab's own models (what the student sees, whether or not it is scrolled into view)
CELLS = "() => window.jupyterapp.shell.currentWidget.content.widgets"
CELL_INDEX = """prefix => window.jupyterapp.shell.currentWidget.content.widgets
  .findIndex(c => c.model.sharedModel.getSource().startsWith(prefix))"""
CELL_SOURCE = "i => window.jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel.getSource()"
CELL_TEXT = """i => window.jupyterapp.shell.currentWidget.content.widgets[i].model.outputs.toJSON()
  .map(o => [].concat(o.text || (o.data && o.data['text/plain']) || o.evalue || '').join('')).join('\\n')"""
RUN_DONE = """() => { const nb = window.jupyterapp.shell.currentWidget; const k = nb.sessionContext.session.kernel;
  const code = nb.content.widgets.filter(c => c.model.type === 'code');
  return k.status === 'idle' && code.length > 0 && code.every(c => c.model.executionCount !== null); }"""


def _cell(page, i):
    "Scroll cell `i` into view and return its DOM node."
    page.evaluate("async i => { const nb = window.jupyterapp.shell.currentWidget.content; nb.activeCellIndex = i;"
                  " await nb.scrollToItem(i, 'center'); }", i)
    page.wait_for_timeout(300)
    return page.evaluate_handle("i => window.jupyterapp.shell.currentWidget.content.widgets[i].node", i).as_element()


@pytest.fixture(scope='module')
def notebook(browser, lab, artifacts):
    "The student's notebook, opened in JupyterLab and run top to bottom; yields (page, PageWatch)."
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    page.set_default_timeout(60_000)
    w = PageWatch(page, lab)
    try:
        page.goto(lab + f'lab/tree/student/{CHAPTER}')
        page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=120_000)
        # the committed notebooks name no kernel (nbdev_clean): JupyterLab asks, and the student takes the one offered
        page.locator('.jp-Dialog .jp-mod-accept').click(timeout=60_000)
        page.wait_for_function(KERNEL_IDLE, timeout=120_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(RUN_DONE, timeout=600_000, polling=1000)
    except Exception:
        page.screenshot(path=str(artifacts / 'jupyterlab_failure.png')); page.close(); raise
    try: yield page, w
    finally: page.close()


def _answer(page, i, line):
    "Type `line` as the last line of exercise cell `i` (replacing the line there, as a student would), run it and its check."
    node = _cell(page, i)
    node.query_selector('.cm-content').click()
    page.keyboard.press('Control+End'); page.keyboard.press('Shift+Home')      # select the last line (not its indent)
    page.keyboard.type(line)
    src = page.evaluate(CELL_SOURCE, i)
    assert src.rstrip().endswith('    ' + line), f'the editor holds something else than what was typed:\n{src}'
    before = page.evaluate("i => window.jupyterapp.shell.currentWidget.content.widgets[i].model.executionCount", i + 1)
    page.keyboard.press('Shift+Enter'); page.keyboard.press('Shift+Enter')       # run the exercise, then its check
    page.wait_for_function("([i, n]) => { const c = window.jupyterapp.shell.currentWidget.content.widgets[i];"
                           " return c.model.executionCount !== null && c.model.executionCount !== n && c.model.outputs.length > 0; }",
                           arg=[i + 1, before], timeout=60_000)
    page.wait_for_function(KERNEL_IDLE, timeout=60_000)
    _cell(page, i + 1)
    return page.evaluate(CELL_TEXT, i + 1)


def test_exercise_check_in_the_browser(notebook, artifacts):
    page, w = notebook
    i = page.evaluate(CELL_INDEX, 'def reparameterize(')
    assert i >= 0, 'the student edition has no reparameterize exercise'
    assert page.evaluate(CELL_SOURCE, i).rstrip().endswith('raise NotImplementedError()'), 'the exercise is not a stub'
    assert 'vae.reparameterize: not done yet' in page.evaluate(CELL_TEXT, i + 1)     # as handed out
    out = _answer(page, i, RIGHT)
    assert '✓ vae.reparameterize: passed' in out, out
    page.screenshot(path=str(artifacts / 'jupyterlab_exercise_passed.png'))
    out = _answer(page, i, WRONG)
    assert '✗ vae.reparameterize' in out and f'Hint: {WRONG_HINT}' in out, out
    page.screenshot(path=str(artifacts / 'jupyterlab_exercise_hint.png'))
    bad = [e for e in w.errors if 'favicon' not in e]
    assert not bad, bad


def test_explorer_slider_moves_the_image(notebook, artifacts):
    page, w = notebook
    i = page.evaluate(CELL_INDEX, 'from opengen.widgets import latent_explorer')
    assert i >= 0, 'the chapter has no explorer cell'
    node = _cell(page, i)
    img = node.wait_for_selector('.jp-OutputArea-output img.widget-image', state='visible', timeout=120_000)
    page.wait_for_function('i => i.complete && i.naturalWidth > 0', arg=img)
    before_src, before_png = img.get_attribute('src'), img.screenshot()
    readout = node.query_selector('.jp-OutputArea-output .widget-readout')
    before_txt = readout.inner_text()
    node.query_selector('.jp-OutputArea-output .widget-slider .noUi-handle').focus()
    for _ in range(20): page.keyboard.press('ArrowRight')     # 20 steps of the slider: z1 moves by 1
    page.wait_for_function('([i, s]) => i.src !== s && i.complete && i.naturalWidth > 0', arg=[img, before_src], timeout=30_000)
    page.wait_for_timeout(300)
    assert readout.inner_text() != before_txt, 'the slider did not move'
    assert img.screenshot() != before_png, 'the image did not change'
    page.screenshot(path=str(artifacts / 'jupyterlab_slider.png'))
    bad = [e for e in w.errors if 'favicon' not in e]
    assert not bad, bad
