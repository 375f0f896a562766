"""Build the course website offline: nbdev's notebook processing, then mkdocs-material + mkdocs-jupyter.

Usage: python tools/build_docs.py [--site _site] [--force]     (or `make docs`)

Why this and not `nbdev_docs`: nbdev renders with Quarto, which cannot be installed everywhere (nbs/_quarto.yml is
kept for those who have it). mkdocs-material + mkdocs-jupyter is pure Python from PyPI, renders notebooks with their
committed outputs (through nbconvert, like Jupyter itself), has client-side search and navigation sections, and builds
with the network off. MathJax 3 comes from a PyPI wheel (`django-static-mathjax`, which holds the MathJax release files)
and is copied into the site, so pages typeset math without any CDN.

Steps
1. nbdev's processors (the same as `nbdev_proc_nbs`: hidden cells, exports, `show_doc`, doc links) write `_proc/`.
   We call `nbdev.serve.proc_nbs` in-process instead of the CLI because the CLI first tries to install Quarto (and
   runs `pip install -e .` with whatever pip is on PATH). Cells that mix imports with other code are not run for the
   docs (nbdev's FAQ: such cells need the rest of the notebook; the committed outputs are what the site shows).
2. `_proc/*.ipynb` become `_build/docs/docs/<page>.ipynb`: the Quarto front matter becomes a title and summary,
   `#| echo: false` / `include: false` / `output: false` are applied, Quarto-only syntax is dropped, links to the
   published nbdev site and to `*.ipynb` are made relative, and the live-widget view is removed from outputs that also
   carry a `text/html` static preview (see `opengen.widgets.Explorer`), with the notebook's widget state.
3. `mkdocs build` with a config made from `tools/mkdocs.yml` plus a navigation made from `nbs/sidebar.yml`.
"""
from __future__ import annotations

import argparse, ast, json, os, re, shutil, subprocess, sys, time, warnings
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
NBS, PROC, BUILD = REPO / 'nbs', REPO / '_proc', REPO / '_build' / 'docs'
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
# MathJax 3 (es5 build) from the `django-static-mathjax` wheel: plain MathJax release files, no Django needed.
# The site gets the combined TeX component and its web fonts; anything else MathJax might load lazily (menu, a11y)
# is copied too, so an offline page never requests a file that is not there.
MATHJAX_PARTS = ['tex-chtml-full.js', 'output/chtml/fonts/woff-v2', 'ui', 'a11y/assistive-mml.js', 'a11y/semantic-enrich.js',
                 'a11y/complexity.js', 'a11y/explorer.js', 'input/tex/extensions', 'adaptors']


def log(*a): print('[docs]', *a, flush=True)


# ---------------------------------------------------------------- 1. nbdev processing
def proc_nbs(force: bool = False):
    "Run nbdev's doc processors over nbs/ into _proc/ (in this process, without the Quarto install)."
    os.environ.setdefault('MPLBACKEND', 'Agg')
    import nbdev.processors as P
    from nbdev.serve import proc_nbs as _proc_nbs
    orig = P._do_eval

    def _do_eval(cell):
        if cell.cell_type == 'code' and cell.source and not (cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}):
            trees = cell.parsed_()
            if trees and P._ast_contains(trees, (ast.Import, ast.ImportFrom)) and P._ast_contains(trees, (ast.Expr, ast.Assign, ast.If, ast.For, ast.With, ast.Try, ast.FunctionDef, ast.ClassDef)):
                return False
        return orig(cell)
    P._do_eval = _do_eval
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            _proc_nbs(str(NBS), n_workers=0, force=force)   # n_workers=0: serial, in this process (keeps the patch)
    finally: P._do_eval = orig


# ---------------------------------------------------------------- 2. notebooks -> mkdocs pages
_dir_re = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')
_site_url = None


def page_name(nb: Path, fm: dict | None = None) -> str:
    "The page's file name, as nbdev's doc links expect it (`30_widgets.ipynb` -> `widgets`)."
    if fm and fm.get('output-file'): return Path(fm['output-file']).stem
    return re.sub(r'^\d+[a-z]?_', '', nb.stem)


def _front_matter(nb: dict) -> dict:
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'raw' and src.lstrip().startswith('---'):
            return yaml.safe_load(src.strip().strip('-')) or {}
    return {}


def _slug(s: str) -> str:
    "The id nbconvert gives a heading (Quarto keeps dots: nbdev's `#learner.fit` is `#learnerfit` here)."
    return re.sub(r'\s+', '-', re.sub(r'[^\w\s-]', '', s).strip().lower())


def _plain_heading(m) -> str:
    "Headings without links or code spans, so that the page's table of contents and the heading ids agree."
    return re.sub(r'`([^`]*)`', r'\1', re.sub(r'\[(`?[^\]]*?`?)\]\([^)]*\)', r'\1', m[0]))


def _fix_md(text: str, names: dict[str, str]) -> str:
    "Make Markdown site-relative and drop Quarto-only syntax."
    if _site_url: text = text.replace(_site_url, '')
    text = re.sub(r'^#{1,6} .*$', _plain_heading, text, flags=re.M)
    text = re.sub(r'\]\(([\w-]+\.html)#([^)\s]+)\)', lambda m: f']({m[1]}#{_slug(m[2])})', text)
    text = re.sub(r'\]\((?:\./)?([\w.-]+)\.ipynb(#[^)]*)?\)', lambda m: f']({names.get(m[1], m[1])}.html{m[2] or ""})', text)
    text = re.sub(r'(\]\([^)]*\))\{[^}\n]*\}', r'\1', text)          # [source](url){target=...}
    text = re.sub(r'^:::.*$\n?', '', text, flags=re.M)                 # ::: {.callout-note} fences
    return text


def _directives(src: str) -> tuple[dict, str]:
    d, keep = {}, []
    for line in src.splitlines():
        m = _dir_re.match(line)
        if m and not keep: d[m[1]] = m[2]
        else: keep.append(line)
    return d, '\n'.join(keep).strip('\n')


def convert_nb(src: Path, dst_dir: Path, names: dict[str, str]) -> Path:
    nb = json.loads(src.read_text())
    fm = _front_matter(nb)
    cells = []
    if fm.get('title'):
        head = f"# {fm['title']}\n" + (f"\n> {fm['description']}\n" if fm.get('description') else '')
        cells.append({'cell_type': 'markdown', 'metadata': {}, 'source': _fix_md(head, names)})
    for c in nb['cells']:
        src_txt = ''.join(c['source'])
        if c['cell_type'] == 'raw' and src_txt.lstrip().startswith('---'): continue
        if c['cell_type'] == 'markdown':
            if src_txt.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
            c['source'] = _fix_md(src_txt, names)
        elif c['cell_type'] == 'code':
            d, body = _directives(src_txt)
            if d.get('include') == 'false': continue
            c['source'] = body
            tags = c.setdefault('metadata', {}).setdefault('tags', [])
            if d.get('echo') == 'false' or not body.strip(): tags.append('remove_input')
            if d.get('output') == 'false': c['outputs'] = []
            outs = []
            for o in c.get('outputs', []):
                data = o.get('data')
                if data is not None:
                    if WIDGET_VIEW in data:
                        data.pop(WIDGET_VIEW)                     # a page has no kernel: show the static preview
                        if set(data) <= {'text/plain'}: continue   # an explorer saved before it had one
                    for k in ('text/markdown', 'text/html'):
                        if k in data:
                            v = data[k]; v = ''.join(v) if isinstance(v, list) else v
                            data[k] = _fix_md(v, names) if k == 'text/markdown' else (v.replace(_site_url, '') if _site_url else v)
                outs.append(o)
            c['outputs'] = outs
            if not body.strip() and not outs: continue
        cells.append(c)
    nb['cells'] = cells
    nb['metadata'].pop('widgets', None)     # widget state would make nbconvert load the widget manager from a CDN
    nb['metadata'].setdefault('kernelspec', {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'})
    out = dst_dir / f'{page_name(src, fm)}.ipynb'
    out.write_text(json.dumps(nb, indent=1))
    return out


def nav_from_sidebar(names: dict[str, str]) -> list:
    "mkdocs `nav` from nbs/sidebar.yml (same sections and order as the Quarto sidebar)."
    sb = yaml.safe_load((NBS / 'sidebar.yml').read_text())['website']['sidebar']['contents']
    def conv(items):
        out = []
        for it in items:
            if isinstance(it, str):
                stem = Path(it).stem
                if stem in names: out.append(f'{names[stem]}.ipynb' if stem != 'index' else {'Home': 'index.ipynb'})
            elif isinstance(it, dict) and 'section' in it:
                sub = conv(it.get('contents', []))
                if sub: out.append({it['section']: sub})
        return out
    nav = conv(sb)
    listed = json.dumps(nav)
    extra = [f'{n}.ipynb' for s, n in names.items() if f'{n}.ipynb' not in listed]
    if extra: nav.append({'More': extra})
    return nav


def copy_mathjax(dst: Path):
    import mathjax          # the `django-static-mathjax` wheel
    src = Path(mathjax.__file__).parent / 'static' / 'mathjax' / 'es5'
    assert (src / 'tex-chtml-full.js').exists(), f'MathJax not found in {src}: pip install django-static-mathjax'
    for part in MATHJAX_PARTS:
        s = src / part
        if not s.exists(): continue
        d = dst / part; d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(s, d) if s.is_dir() else shutil.copy2(s, d)


def stage_pages():
    global _site_url
    nbcfg = yaml.safe_load((NBS / 'nbdev.yml').read_text()) if (NBS / 'nbdev.yml').exists() else {}
    url = (nbcfg.get('website') or {}).get('site-url')
    _site_url = url.rstrip('/') + '/' if url else None
    docs = BUILD / 'docs'
    if docs.exists(): shutil.rmtree(docs)
    docs.mkdir(parents=True)
    nbs = sorted(p for p in PROC.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    names = {p.stem: page_name(p, _front_matter(json.loads(p.read_text()))) for p in nbs}
    for p in nbs: convert_nb(p, docs, names)
    for p in PROC.rglob('*'):     # images and other files the notebooks link to
        rel = p.relative_to(PROC)
        if p.is_file() and p.suffix not in ('.ipynb', '.yml', '.yaml') and p.name != 'styles.css' and not rel.parts[0].startswith(('.', '_')):
            (docs / rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(p, docs / rel)
    assets = REPO / 'tools' / 'docs_assets'
    if assets.exists(): shutil.copytree(assets, docs / 'assets', dirs_exist_ok=True)
    copy_mathjax(docs / 'assets' / 'mathjax')
    cfg = yaml.safe_load((REPO / 'tools' / 'mkdocs.yml').read_text())
    cfg['nav'] = nav_from_sidebar(names)
    cfg['docs_dir'] = 'docs'
    cfg['theme']['custom_dir'] = str(REPO / 'tools' / 'docs_theme')
    (BUILD / 'mkdocs.yml').write_text(yaml.safe_dump(cfg, sort_keys=False))
    return names


# ---------------------------------------------------------------- 3. mkdocs
def build(site: Path, force: bool = False) -> Path:
    t0 = time.time()
    proc_nbs(force); log(f'nbdev processing: {time.time() - t0:.0f}s')
    t1 = time.time()
    names = stage_pages(); log(f'{len(names)} pages staged: {time.time() - t1:.0f}s')
    t2 = time.time()
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'NO_MKDOCS_2_WARNING': '1'}
    subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--quiet', '--clean', '-f', str(BUILD / 'mkdocs.yml'),
                    '-d', str(site.resolve())], check=True, env=env, cwd=BUILD)
    size = sum(f.stat().st_size for f in site.rglob('*') if f.is_file())
    log(f'mkdocs: {time.time() - t2:.0f}s; site {site} {size / 2**20:.1f} MiB; total {time.time() - t0:.0f}s')
    return site


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--site', default=str(REPO / '_site'), help='output folder')
    ap.add_argument('--force', action='store_true', help="reprocess every notebook (ignore nbdev's _proc cache)")
    a = ap.parse_args()
    build(Path(a.site), a.force)
