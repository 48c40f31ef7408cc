"""The architecture holds: modules import each other without cycles, and
shared code never names a backend.

Both are read from the source (every import statement, also those inside
functions; every identifier and string literal outside comments and
docstrings), so they hold for code no test runs."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from backends import BACKENDS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("afterburn", "backends", "rewriter", "wedge", "corpus")
# Shared code: what every backend runs through.  A backend's own folder and
# the registry (backends/__init__.py) may name backends; nothing here may.
SHARED = ["afterburn", "rewriter", "backends/base.py", "backends/pc", "backends/run.py", "backends/wedged",
          "wedge/__init__.py", "wedge/layout.py", "wedge/src"]  # fmt: skip
# Registered names, and those the design has planned: shared code must not
# grow a special case for them either.
NAMES = sorted(set(BACKENDS) | {"l4", "hvm"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import sub" imports the submodule when there is one.
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            # "import a.b.c" names a.b.c; keep the longest prefix that is ours.
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components: any of more than one module is a cycle."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_import_graph_has_no_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 50 and graph["backends.run"] >= {"backends", "backends.pc.machine"}  # the walk sees imports
    assert _cycles(graph) == []


def test_the_cycle_check_would_see_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _python_code_words(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every identifier and non-docstring string literal."""
    text = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.add(first.lineno)
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME or (tok.type == tokenize.STRING and tok.start[0] not in docstrings):
            out.append((tok.start[0], tok.string))
    return out


def _c_code_words(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the code of a C or assembler file, comments removed."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), path.read_text(), flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return [(i + 1, line) for i, line in enumerate(text.splitlines())]


def _mentions(word: str, name: str) -> bool:
    if re.fullmatch(r"\w+", word):  # an identifier: XenBackend, is_xen, BARE...
        return any(name.replace("-", "_") == part for part in re.findall(r"[a-z0-9]+", _snake(word)))
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", word) is not None


def _snake(word: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", word).lower()


def test_shared_code_names_no_backend():
    files = []
    for entry in SHARED:
        p = ROOT / entry
        files += [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.suffix in (".py", ".c", ".S", ".h"))
    assert len(files) > 30
    found = []
    for f in files:
        words = _python_code_words(f) if f.suffix == ".py" else _c_code_words(f)
        for line, word in words:
            for name in NAMES:
                if _mentions(word, name):
                    found.append(f"{f.relative_to(ROOT)}:{line}: {name}")
    assert found == []


def test_the_name_check_would_see_a_backend():
    """The check itself: names in code are found, names in prose are not."""
    assert _mentions("XenBackend", "xen") and _mentions("'bare'", "bare") and _mentions('"xen-ring3"', "xen-ring3")
    assert not _mentions("barely", "bare") and not _mentions("'xenial'", "xen")
