"""The docs site in a real browser (Debian chromium via Playwright), served from 127.0.0.1 with the network off:
every page loads cleanly, links resolve, images decode, math is typeset, and a static explorer responds.
Screenshots go to test-artifacts/ (site_math.png, site_explorer.png)."""
import json, re
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

from browser_helpers import REPO, PageWatch

pytestmark = [pytest.mark.xdist_group('browser'),  # one worker, one chromium for every browser test
              pytest.mark.budget(150)]          # the first tests wait for chromium, the docs build (from a fresh clone) and the crawl of every page

CRAWL_BATCH = 6          # pages loading at once in the crawl

# Resolves once MathJax 3 has typeset the page; false when the page has no MathJax.
MATHJAX_DONE = """() => (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)
                        ? window.MathJax.startup.promise.then(() => true) : false"""
PAGE_FACTS = """() => ({
  images: Array.from(document.images).map(i => ({src: i.src.slice(0, 80), ok: i.complete && i.naturalWidth > 0})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  math: document.querySelectorAll('mjx-container').length,
  mathErrors: document.querySelectorAll('mjx-merror').length,
  explorers: document.querySelectorAll('.opengen-static-explorer').length,
})"""


def pages(site):
    return sorted(p.name for p in site.glob('*.html') if p.name != '404.html')


def has_math(site, page: str) -> bool:
    "Whether the page's notebook has LaTeX in its Markdown cells."
    nb = REPO / '_build' / 'docs' / 'docs' / (Path(page).stem + '.ipynb')
    if not nb.exists(): return False
    for c in json.loads(nb.read_text())['cells']:
        if c['cell_type'] != 'markdown': continue
        md = re.sub(r'```.*?```|`[^`\n]*`', '', ''.join(c['source']), flags=re.S)     # code is not math
        if re.search(r'\$\$.+?\$\$|\$[^$\s][^$\n]*?(?<=[^\s$])\$', md, flags=re.S): return True
    return False


@pytest.fixture(scope='module')
def crawl(browser, site, site_url):
    "Visit every page once; collect what each shows and what went wrong. The pages of a batch load side by side (each"
    " tab's wait for its last request overlaps the others' rendering), each in a tab of its own."
    ctx = browser.new_context(viewport={'width': 1280, 'height': 900})
    out, names = {}, pages(site)
    try:
        for i in range(0, len(names), CRAWL_BATCH):
            tabs = []
            for name in names[i:i + CRAWL_BATCH]:
                page = ctx.new_page()
                tabs.append((name, page, PageWatch(page, site_url)))
                page.goto(site_url + name, wait_until='commit')             # starts loading; the next tab starts at once
            for name, page, w in tabs:
                page.wait_for_load_state('load')
                typeset = page.evaluate(MATHJAX_DONE)
                page.wait_for_load_state('networkidle')
                out[name] = {**page.evaluate(PAGE_FACTS), 'typeset': typeset, 'errors': w.errors}
                page.close()
    finally: ctx.close()
    return out


def _sidebar():
    "(section, notebook) pairs of nbs/sidebar.yml, in order (section None for pages outside a section)."
    import yaml
    out = []
    def walk(items, section=None):
        for it in items:
            if isinstance(it, str): out.append((section, it))
            else: walk(it['contents'], it['section'])
    walk(yaml.safe_load((REPO / 'nbs' / 'sidebar.yml').read_text())['website']['sidebar']['contents'])
    return out


def test_site_has_every_chapter_of_the_sidebar(site):
    "One page per sidebar entry and no other; the navigation shows every section; client-side search is there."
    sidebar = _sidebar()
    expected = {re.sub(r'^\d+[a-z]?_', '', Path(nb).stem) + '.html' for _, nb in sidebar}
    assert set(pages(site)) == expected, (sorted(set(pages(site)) - expected), sorted(expected - set(pages(site))))
    html = (site / 'index.html').read_text()
    for section in {s for s, _ in sidebar if s}:                    # navigation grouped by chapter, as nbs/sidebar.yml
        assert section in html, section
    assert (site / 'search' / 'search_index.json').exists()


def test_pages_load_cleanly(crawl):
    bad = {p: f['errors'] for p, f in crawl.items() if f['errors']}
    assert not bad, json.dumps(bad, indent=1)


def test_no_cdn_references(site):
    "Nothing in the site points at another host for code, styles or fonts (the network may be off)."
    offenders = []
    for f in site.rglob('*.html'):
        for m in re.finditer(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)="(https?:)?//[^"]+"', f.read_text()):
            offenders.append(f'{f.name}: {m[0][:120]}')
    assert not offenders, offenders[:10]


def test_internal_links(crawl, site, site_url):
    broken = []
    for name, f in crawl.items():
        for href in f['links']:
            if not href.startswith(site_url): continue
            url, frag = urldefrag(href)
            path = urlparse(url).path.lstrip('/') or 'index.html'
            target = site / path
            if path.endswith('/'): target = target / 'index.html'
            if not target.exists(): broken.append(f'{name} -> {href}'); continue
            if frag and target.suffix == '.html' and (tname := target.name) in crawl:
                ids = {i.lower() for i in crawl[tname]['ids']}
                if frag.lower() not in ids: broken.append(f'{name} -> {href} (no #{frag})')
    assert not broken, '\n'.join(broken[:30])


def test_images_decode(crawl):
    bad = {p: [i['src'] for i in f['images'] if not i['ok']] for p, f in crawl.items()}
    bad = {p: v for p, v in bad.items() if v}
    assert not bad, bad
    assert sum(len(f['images']) for f in crawl.values()) > 0


def test_math_typeset(crawl, site):
    with_math = [p for p in crawl if has_math(site, p)]
    assert with_math, 'no page has LaTeX: the math check would prove nothing'
    for p in with_math:
        assert crawl[p]['typeset'], f'{p}: MathJax did not load'
        assert crawl[p]['math'] > 0, f'{p}: has LaTeX but nothing was typeset'
        assert crawl[p]['mathErrors'] == 0, f'{p}: MathJax errors'


def test_screenshot_math(browser, site, site_url, artifacts):
    name = next((p for p in ('vae.html', 'ae.html', 'widgets.html') if has_math(site, p)), None) or \
           next(p for p in pages(site) if has_math(site, p))
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    try:
        page.goto(site_url + name); assert page.evaluate(MATHJAX_DONE)
        shown = page.locator('mjx-container[display="true"]')
        el = shown.first if shown.count() else page.locator('mjx-container').first
        el.scroll_into_view_if_needed(); page.mouse.wheel(0, -200); page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts / 'site_math.png'))
    finally: page.close()


def _explorer_pages(crawl):
    return [p for p, f in crawl.items() if f['explorers']]


def test_static_explorer_responds(browser, crawl, site_url, artifacts):
    found = _explorer_pages(crawl)
    assert found, 'no page shows a static explorer (re-execute the notebooks that display one)'
    name = 'widgets.html' if 'widgets.html' in found else found[0]
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    w = PageWatch(page, site_url)
    try:
        page.goto(site_url + name)
        ex = page.locator('.opengen-static-explorer').first
        ex.scroll_into_view_if_needed()
        img = ex.locator('img.ogx-img')
        before = img.get_attribute('src')
        slider = ex.locator('input[type=range]').first
        slider.focus()
        for _ in range(3): page.keyboard.press('ArrowRight')
        page.wait_for_function('([el, s]) => el.src !== s', arg=[img.element_handle(), before], timeout=5000)
        after = img.get_attribute('src')
        assert after != before
        assert img.evaluate('i => i.complete && i.naturalWidth > 0')
        out = ex.locator('output').first.text_content()
        assert out and out.strip(), 'the slider readout is empty'
        page.screenshot(path=str(artifacts / 'site_explorer.png'))
        sel = ex.locator('select')
        if sel.count():                                   # a dropdown swaps the frames too
            opts = sel.first.locator('option').all_text_contents()
            cur = img.get_attribute('src')
            sel.first.select_option(index=(opts.index(sel.first.evaluate('s => s.options[s.selectedIndex].text')) + 1) % len(opts))
            assert img.get_attribute('src') != cur or len(set(opts)) == 1
        assert not w.errors, w.errors
    finally: page.close()
