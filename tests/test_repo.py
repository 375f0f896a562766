"""The repository keeps its promises: every module has its notebook, settings are as documented."""
import configparser
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def exported_modules():
    mods = {}
    for nb in (REPO / 'nbs').glob('*.ipynb'):
        m = re.search(r'#\|\s*default_exp\s+([\w.]+)', nb.read_text())
        if m: mods[m.group(1)] = nb.name
    return mods


def test_every_module_has_its_notebook():
    mods = exported_modules()
    for py in (REPO / 'opengen').rglob('*.py'):
        rel = py.relative_to(REPO / 'opengen').with_suffix('')
        if rel.name in ('__init__', '_modidx'): continue
        name = '.'.join(rel.parts)
        assert name in mods, f'opengen/{rel}.py has no notebook with `#| default_exp {name}` (delete it or restore the notebook)'


def test_settings():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(REPO / 'settings.ini')
    d = cfg['DEFAULT']
    assert d['lib_name'] == 'opengen' and d['nbs_path'] == 'nbs' and d['tst_flags'].split() == ['notest', 'slow', 'gpu']
    assert d['custom_sidebar'] == 'True'


def test_readme_gives_the_two_front_door_commands():
    readme = (REPO / 'README.md').read_text()
    assert 'make lab' in readme and 'make test' in readme and 'OPENGEN_DATA' in readme


def test_sidebar_lists_every_notebook():
    sidebar = (REPO / 'nbs' / 'sidebar.yml').read_text()
    for nb in (REPO / 'nbs').glob('[0-9]*.ipynb'):
        assert nb.name in sidebar, f'{nb.name} is missing from nbs/sidebar.yml'


def test_every_exercise_carries_nbgrader_metadata():
    "Each exercise cell is an nbgrader solution cell and its check an autograded test cell, and nbdev_clean keeps them."
    import json
    from opengen.exercises import nbgrader_marks
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(REPO / 'settings.ini')
    assert 'nbgrader' in cfg['DEFAULT']['allowed_cell_metadata_keys'].split(), 'nbdev_clean would strip the nbgrader metadata'
    unmarked = [p.name for p in sorted((REPO / 'nbs').glob('*.ipynb'))
                if nbgrader_marks(nb := json.loads(p.read_text()))[0] != nb]
    assert not unmarked, f'{unmarked} lack nbgrader metadata on their exercises: run python tools/nbgrader_marks.py'


_DRAWS = re.compile(r'^(?!\s*#)(?!\s*def ).*\b(show_images|show_class_grid|plt\.subplots|plt\.figure|plot_\w+|\w+_grid)\(', re.M)


def drawing_cells_without_figures(nb: dict) -> list[int]:
    "Indices of the code cells that draw (outside exported and hidden cells) but kept no image: the notebook ran with a backend that saves none."
    missing = []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        if re.search(r'^#\|\s*(export|exporti|hide|eval:\s*false)\b', src, re.M) or not _DRAWS.search(src): continue
        if not any('image/png' in o.get('data', {}) for o in c.get('outputs', [])): missing.append(i)
    return missing


def test_drawing_cells_keep_their_figures():
    "Committed notebooks carry the figures they draw (a run under MPLBACKEND=Agg saves none: `make execute` keeps the inline backend)."
    import json
    bad = {p.name: m for p in sorted((REPO / 'nbs').glob('[0-9]*.ipynb')) if (m := drawing_cells_without_figures(json.loads(p.read_text())))}
    assert not bad, f'cells that draw but kept no figure (notebook: cell indices): {bad}; re-run them with `make execute NBS=...`'


def test_the_figure_check_sees_a_lost_figure():
    "The check above fails on a drawing cell whose figure is gone, and passes on one that kept it."
    cell = lambda outputs: {'cell_type': 'code', 'source': ['fig, ax = plt.subplots()\n', "ax.plot([1, 2]);"], 'outputs': outputs}
    png = [{'output_type': 'display_data', 'data': {'image/png': 'iVBOR', 'text/plain': '<Figure>'}}]
    exported = {'cell_type': 'code', 'source': ['#| export\n', 'def plot_it(): show_images(x)'], 'outputs': []}
    assert drawing_cells_without_figures({'cells': [cell([]), exported, cell(png)]}) == [0]


_MATH = re.compile(r'\$\$(.+?)\$\$|\$([^$\n]+?)\$', re.S)
_CONTROL = re.compile(r'[\x00-\x09\x0b-\x1f\x7f]')   # everything below a space but the newline (a tab too: "\tilde" gone wrong)


def control_characters_in_math(nb: dict) -> list:
    "(cell index, the damaged formula) for every math span of a markdown cell (or a Markdown output) holding a control character."
    bad = []
    for i, c in enumerate(nb['cells']):
        texts = [''.join(c['source'])] if c['cell_type'] == 'markdown' else \
                [''.join(o['data']['text/markdown']) for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
        for text in texts:
            bad += [(i, m.group(0)[:80]) for m in _MATH.finditer(text) if _CONTROL.search(m.group(0))]
    return bad


def test_no_control_character_in_markdown_math():
    "A formula written in Python without a raw string loses its backslashes: '\\frac' becomes a form feed and 'rac'."
    import json
    bad = {p.name: m for p in sorted((REPO / 'nbs').glob('*.ipynb')) if (m := control_characters_in_math(json.loads(p.read_text())))}
    assert not bad, f'math with a control character (an escape sequence where a backslash was meant): {bad}'


def test_the_math_check_sees_an_escaped_backslash():
    "The check above fails on '\\frac' and '\\tilde' typed as escapes, in a markdown cell and in a Markdown output, and passes on them written right."
    md = lambda s: {'cell_type': 'markdown', 'source': [s]}
    shown = lambda s: {'cell_type': 'code', 'source': ['Markdown(s)'], 'outputs': [{'output_type': 'display_data', 'data': {'text/markdown': [s]}}]}
    right = r'$$e_k = \frac{m_k}{\tilde N_k}$$ and $\tilde N_k$'
    wrong = right.replace('\\f', '\f').replace('\\t', '\t')
    assert control_characters_in_math({'cells': [md(right), shown(right), md('a\ttab outside math $x$')]}) == []
    assert [i for i, _ in control_characters_in_math({'cells': [md(wrong), shown(wrong)]})] == [0, 0, 1, 1]


def test_the_front_page_names_every_chapter_with_exercises():
    "index.ipynb (README) lists the chapters with checked exercises: every chapter of the grader's WORKBOOK is named there."
    import json
    from opengen.grading import WORKBOOK
    text = ''.join(''.join(c['source']) for c in json.loads((REPO / 'nbs' / 'index.ipynb').read_text())['cells'])
    assert not [ch for ch in WORKBOOK if f'`{ch}`' not in text], 'chapters with exercises missing from index.ipynb'
