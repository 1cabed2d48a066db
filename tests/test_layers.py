"""The house rules, read from the code: the layers of explorer/ import only downward, nothing imports in a
circle, the spec and `explorer --help` load no torch, and no block of code is written twice."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'explorer'
# lowest first; a module may import its own layer and the layers below it
RANK = {'core': 0, 'measure': 1, 'explain': 1, 'train': 1, 'search': 2, 'viz': 2, 'app': 3, 'cli': 3}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob('*.py'):
        name = '.'.join(p.relative_to(ROOT).with_suffix('').parts)
        out[name.removesuffix('.__init__')] = p
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """explorer modules that `name` imports, at the top or inside functions (AST)."""
    path = MODULES[name]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                pkg = name.split('.') if path.name == '__init__.py' else name.split('.')[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = '.'.join(pkg + ([base] if base else []))
            cands = [base] + [f'{base}.{a.name}' for a in node.names]
        else:
            continue
        for c in cands:
            while c and c not in MODULES:
                c = c.rpartition('.')[0]
            if c and c != name and not c.startswith(name + '.'):
                found.add(c)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(mod: str) -> str | None:
    parts = mod.split('.')
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else None


def test_every_module_is_in_a_layer():
    loose = [m for m in MODULES if _layer(m) is None and m not in ('explorer', 'explorer.__main__')]
    assert not loose, f'modules outside the layers {sorted(RANK)}: {loose}'
    assert set(RANK) <= {_layer(m) for m in MODULES}


def test_no_import_cycles():
    # depth-first search for a back edge; reports one cycle as a path
    state: dict[str, int] = {}

    def visit(v, path):
        state[v] = 1
        for w in sorted(GRAPH[v]):
            if state.get(w) == 1:
                pytest.fail('import cycle: ' + ' -> '.join(path[path.index(w) :] + [w]))
            if w not in state:
                visit(w, path + [w])
        state[v] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_imports_only_point_down():
    bad = []
    for a, targets in GRAPH.items():
        la = _layer(a)
        for b in targets:
            lb = _layer(b)
            if la is None or lb is None or la == lb:
                continue
            if RANK[lb] > RANK[la] or {la, lb} == {'app', 'cli'}:
                bad.append(f'{a} -> {b}')
    assert not bad, 'imports against the layers (core < measure, explain, train < viz < app, cli):\n' + '\n'.join(bad)


def test_nothing_but_the_entry_point_imports_app_or_cli():
    bad = [
        f'{a} -> {b}'
        for a, ts in GRAPH.items()
        for b in ts
        if _layer(b) in ('app', 'cli') and _layer(a) != _layer(b) and a != 'explorer.__main__'
    ]
    assert not bad, bad


def test_core_imports_nothing_else_of_explorer():
    bad = [f'{a} -> {b}' for a, ts in GRAPH.items() if _layer(a) == 'core' for b in ts if _layer(b) != 'core']
    assert not bad, bad


def _loaded_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, '-c', code + '\nimport sys; print("\\n".join(sys.modules))'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize(
    'code',
    [
        'import explorer.core.spec',
        'import explorer.core.catalog, explorer.core.share, explorer.measure.analytic, explorer.measure.guard',
        'import contextlib, io\nfrom explorer.__main__ import main\nwith contextlib.redirect_stdout(io.StringIO()):\n'
        '    try:\n        main(["--help"])\n    except SystemExit:\n        pass',
    ],
)
def test_spec_counting_and_help_load_no_torch(code):
    loaded = _loaded_modules(code)
    heavy = sorted(m for m in ('torch', 'timm', 'gradio', 'fvcore', 'captum', 'plotly', 'optuna') if m in loaded)
    assert not heavy, f'{code!r} imported {heavy}'


def test_app_modules_load_no_torch_and_no_timing_code():
    # The app's start-up imports the page; torch, timm and the timing code (explorer.measure.speed) load with the
    # first request that needs them (a module-level import of busy_note once added them to every start).
    loaded = _loaded_modules('import explorer.app.main, explorer.app.panels')
    heavy = sorted(m for m in ('torch', 'timm', 'fvcore', 'captum', 'explorer.measure.speed') if m in loaded)
    assert not heavy, f'the app modules imported {heavy}'


def _signature_lines(source: str) -> set[int]:
    """Line numbers of function signatures (def line to the line before the body): a wrapper that passes its
    arguments on repeats its callee's signature by design."""
    out: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.update(range(node.lineno, node.body[0].lineno))
    return out


def _normalised_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the code lines worth comparing: no blanks, comments, docstring-ish, import or
    signature lines."""
    out = []
    source = path.read_text(encoding='utf-8')
    signatures = _signature_lines(source)
    for i, line in enumerate(source.splitlines(), 1):
        s = line.strip()
        if i in signatures:
            continue
        if not s or s.startswith(('#', 'from ', 'import ', '"""', "'''", '@')) or len(s) < 12:
            continue
        if re.fullmatch(r'[\])},]*', s):
            continue
        out.append((i, s))
    return out


def test_no_block_of_code_is_written_twice():
    """Six consecutive code lines that appear, identical, in two places of explorer/ are one action written
    twice: make it one function."""
    window = 6
    seen: dict[tuple, list[str]] = defaultdict(list)
    for path in sorted(PKG.rglob('*.py')):
        lines = _normalised_lines(path)
        for k in range(len(lines) - window + 1):
            chunk = tuple(s for _, s in lines[k : k + window])
            seen[chunk].append(f'{path.relative_to(ROOT)}:{lines[k][0]}')
    repeated = {c: places for c, places in seen.items() if len(places) > 1}
    assert not repeated, 'repeated blocks:\n' + '\n'.join(
        f'{", ".join(places)}:\n    ' + '\n    '.join(chunk) for chunk, places in list(repeated.items())[:5]
    )


def test_the_app_starts_without_the_model_code():
    """The page and its counts need JSON and arithmetic: building the whole app imports no torch, timm, fvcore or
    captum (they load in the background once a page is open, or on first use)."""
    loaded = _loaded_modules('from explorer.app.main import build_demo\nbuild_demo()')
    heavy = sorted(m for m in ('torch', 'timm', 'fvcore', 'captum') if m in loaded)
    assert not heavy, f'building the app imported {heavy}'
