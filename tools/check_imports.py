"""Check the import structure of the package (CI: `.venv/bin/python tools/check_imports.py`).

Three checks, each printing one line per problem; exit status 1 if any problem was found:

1. imports alone: every module imports on its own in a fresh interpreter. A module that
   only works after some other module was imported first breaks for users who import it
   directly, and for notebooks that export it.
2. late imports: no import of the package inside a function (or method, or lambda) unless
   the place is in ALLOWED_LATE_IMPORTS. Late imports of the package hide dependency
   cycles and make early chapters depend on later ones; third-party late imports are fine.
3. import cycles: the graph of module-level imports between package modules has no cycle.

`--no-subprocess` skips check 1 for a quick local run; `--package DIR` picks the package.
"""
import argparse, ast, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# (module, qualified function name) -> reason. Each entry must say which optional extra
# (a dependency not installed by default) forces the late import; nothing else justifies one.
ALLOWED_LATE_IMPORTS: dict[tuple[str, str], str] = {}

FUNC_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def find_modules(root: Path) -> dict[str, Path]:
    mods = {}
    for path in sorted(root.rglob('*.py')):
        rel = path.relative_to(root).with_suffix('')
        if path.name == '_modidx.py' or '__pycache__' in rel.parts: continue
        parts = [root.name, *rel.parts]
        if parts[-1] == '__init__': parts.pop()
        mods['.'.join(parts)] = path
    return mods


def imported_names(node, mod: str, is_pkg_init: bool, pkg: str) -> list[str] | None:
    "Absolute names an Import/ImportFrom node imports from the package; None if it imports none."
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name == pkg or a.name.startswith(pkg + '.')]
        return names or None
    if node.level:
        base = mod.split('.') if is_pkg_init else mod.split('.')[:-1]
        base = base[:max(0, len(base) - node.level + 1)]
        src = '.'.join(base + ([node.module] if node.module else []))
    else:
        src = node.module or ''
        if not (src == pkg or src.startswith(pkg + '.')): return None
    return [f'{src}.{a.name}' for a in node.names] + [src]  # candidates, resolved by caller


def scan(mod: str, path: Path, pkg: str):
    "Return (module-level package imports as (is_from, names), late imports as (qualname, node))."
    top, late = [], []
    is_init = path.name == '__init__.py'
    def visit(node, qual, in_func):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                names = imported_names(child, mod, is_init, pkg)
                if names is None: continue
                if in_func: late.append((qual, child))
                else: top.append((isinstance(child, ast.ImportFrom), names))
            elif isinstance(child, (ast.ClassDef, *FUNC_NODES)):
                name = getattr(child, 'name', '<lambda>')
                visit(child, f'{qual}.{name}' if qual else name, in_func or isinstance(child, FUNC_NODES))
            else:
                visit(child, qual, in_func)
    visit(ast.parse(path.read_text(), str(path)), '', False)
    return top, late


def edges_of(mod: str, top: list[tuple[bool, list[str]]], mods: dict[str, Path]) -> set[str]:
    out = set()
    own_ancestors = {'.'.join(mod.split('.')[:i]) for i in range(1, mod.count('.') + 1)}
    for frm, names in top:  # from X import y: X.y if it is a module, else X
        targets = ([n for n in names[:-1] if n in mods] or [names[-1]]) if frm else names
        for t in targets:
            parts = t.split('.')  # importing a.b.c also runs a/__init__ and a/b/__init__
            for i in range(1, len(parts) + 1):
                name = '.'.join(parts[:i])
                if name in mods and name != mod and name not in own_ancestors: out.add(name)
    return out


def sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    "Tarjan's strongly connected components."
    index, low, stack, on, out = {}, {}, [], set(), []
    def strong(v):
        index[v] = low[v] = len(index); stack.append(v); on.add(v)
        for w in sorted(graph[v]):
            if w not in index: strong(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v: comp.append(stack.pop()); on.discard(comp[-1])
            out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index: strong(v)
    return out


def cycle_in(comp: list[str], graph: dict[str, set[str]]) -> list[str]:
    "Shortest cycle through comp[0] that stays inside the component (BFS)."
    start, members, prev, queue = comp[0], set(comp), {}, [comp[0]]
    for v in queue:
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start: path.append(prev[path[-1]])
                return path[::-1] + [start]
            if w not in prev: prev[w] = v; queue.append(w)
    return comp + [start]


def import_alone(mod: str, env: dict) -> str | None:
    "None if `import mod` succeeds in a fresh interpreter, else the last line of its stderr."
    cmd = [sys.executable, '-c', f'import {mod}']
    try: r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    except subprocess.TimeoutExpired: return 'timed out after 120 s'
    if r.returncode == 0: return None
    lines = r.stderr.strip().splitlines()
    return lines[-1] if lines else f'exit code {r.returncode}'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--package', default='opengen', help='package folder (default: opengen)')
    ap.add_argument('--no-subprocess', action='store_true', help='skip the fresh-interpreter import check')
    args = ap.parse_args()
    root = Path(args.package).resolve()
    pkg, mods, problems = root.name, find_modules(root), 0
    if not mods: print(f'no modules found under {args.package}'); return 1

    if not args.no_subprocess:
        env = {**os.environ, 'MPLBACKEND': 'Agg', 'PYTHONPATH': os.pathsep.join(
            p for p in (str(root.parent), os.environ.get('PYTHONPATH')) if p)}
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            errors = dict(zip(mods, pool.map(lambda m: import_alone(m, env), mods), strict=True))
        failed = {m: e for m, e in errors.items() if e}
        print(f'imports alone: {len(mods)} modules, {len(failed)} failed')
        for m, e in failed.items(): print(f'  import failed: {m}: {e}')
        problems += len(failed)

    graph, late = {}, []
    for mod, path in mods.items():
        try: top, lt = scan(mod, path, pkg)
        except SyntaxError as e: print(f'  syntax error: {mod}: {e}'); problems += 1; graph[mod] = set(); continue
        graph[mod] = edges_of(mod, top, mods)
        late += [(mod, q, node, path) for q, node in lt]
    bad = [x for x in late if (x[0], x[1]) not in ALLOWED_LATE_IMPORTS]
    print(f'late imports: {len(bad)} outside the allowlist ({len(late) - len(bad)} allowed)')
    for mod, q, node, path in bad:
        print(f'  late import: {os.path.relpath(path)}:{node.lineno} in {mod}:{q}: {ast.unparse(node)}')
    stale = set(ALLOWED_LATE_IMPORTS) - {(m, q) for m, q, _, _ in late}
    for m, q in sorted(stale): print(f'  stale allowlist entry: ({m!r}, {q!r}) matches no late import')
    problems += len(bad) + len(stale)

    cycles = [c for c in sccs(graph) if len(c) > 1]
    print(f'import cycles: {len(cycles) or "none"}')
    for c in cycles:
        extra = f'  (component of {len(c)} modules: {", ".join(c)})' if len(c) > 2 else ''
        print(f'  import cycle: {" -> ".join(cycle_in(c, graph))}{extra}')
    problems += len(cycles)

    print(f'check_imports: {problems} problem(s) found' if problems else 'check_imports: OK')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
