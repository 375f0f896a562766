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
