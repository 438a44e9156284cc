"""The package's layout rules, checked on its source: module size, private names, import cycles, layers."""
import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "bluebook"
MAX_LINES = 400

# Which subpackages a subpackage may import (lower layers only). "runs" is plumbing shared by all.
LAYERS = {
    "runs": set(),
    "model": {"runs"},
    "data": {"model", "runs"},
    "core": {"model", "data", "runs"},
    "fast": {"model", "core", "runs"},
    "editor": {"core", "fast", "model", "data", "runs"},   # editor.targets picks the v* engine
    "metrics": {"core", "model", "data", "runs"},
    "locate": {"model", "data", "core", "runs"},
    "analysis": {"editor", "core", "model", "data", "metrics", "runs"},
    "experiments": {"editor", "core", "model", "data", "metrics", "analysis", "locate", "runs"},
    "plots": {"core"},                              # core.names only (tests/unit/test_plots.py)
    "exercises": {"analysis", "core", "locate", "metrics", "runs"},   # checkers compare with the pure maths
}


def modules(pkg: Path = PKG):
    for p in sorted(pkg.rglob("*.py")):
        rel = p.relative_to(pkg.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), p


def imports(path: Path):
    """(module imported, names imported, is_top_level) for every bluebook import in ``path``, at
    module level or inside a function (the whole syntax tree is walked)."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bluebook"):
            out.append((node.module, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("bluebook"):
                    out.append((a.name, [], id(node) in top))
    return out


def test_no_module_is_too_long():
    long = {m: n for m, p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_private_name_is_imported_across_modules():
    bad = [(m, mod, n) for m, p in modules() for mod, names, _ in imports(p) for n in names
           if n.startswith("_") and n != "__version__"]
    assert not bad, bad


def import_cycles(pkg: Path = PKG) -> list[list[str]]:
    """Every import cycle among the modules of ``pkg``, function-local imports included."""
    mods = dict(modules(pkg))
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        for mod, names, _ in imports(p):       # function-local imports count: they close cycles too
            for target in [f"{mod}.{n}" for n in names] + [mod]:
                if target in mods and target != m:
                    graph[m].add(target)
                    break
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in graph[m]:
            visit(n)
        stack.pop()
    for m in graph:
        visit(m)
    return cycles


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, cycles


def test_a_function_local_import_cycle_is_found(tmp_path):
    """The checker itself: a cycle closed by an import inside a function is reported."""
    pkg = tmp_path / "bluebook"
    pkg.mkdir()
    (pkg / "a.py").write_text("from bluebook.b import g\n\ndef f():\n    return g()\n")
    (pkg / "b.py").write_text("def g():\n    from bluebook.a import f\n    return f\n")
    assert import_cycles(pkg) in (
        [["bluebook.a", "bluebook.b", "bluebook.a"]], [["bluebook.b", "bluebook.a", "bluebook.b"]])


def local_imports(path: Path):
    """(line, module) of every import inside a function or class of ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    return [(n.lineno, (n.module or "") if isinstance(n, ast.ImportFrom) else n.names[0].name)
            for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in top]


def test_function_local_imports_are_heavy_dependencies_with_a_reason():
    """An import inside a function defers a heavy or optional third-party package, and says why in
    a comment on its line or just above its group; the package's own modules and the standard
    library are imported at the top."""
    bad = []
    for m, p in modules():
        lines = p.read_text().splitlines()
        for ln, mod in local_imports(p):
            root = mod.split(".")[0]
            if root == "bluebook" or root in sys.stdlib_module_names:
                bad.append((m, ln, mod, "import at the top"))
                continue
            i = ln - 1                       # the group of imports this one belongs to, and the line above it
            while i > 0 and lines[i - 1].strip().startswith(("import ", "from ", "#")):
                i -= 1
            if not any("#" in lines[j] for j in range(max(i - 1, 0), ln)):
                bad.append((m, ln, mod, "say why it is deferred"))
    assert not bad, bad


@pytest.mark.parametrize("sub", sorted(LAYERS))
def test_subpackages_import_only_lower_layers(sub):
    bad = []
    for m, p in modules():
        parts = m.split(".")
        if len(parts) < 2 or parts[1] != sub:
            continue
        for mod, _, _ in imports(p):
            other = mod.split(".")
            if len(other) == 1:
                bad.append((m, mod))                  # `from bluebook import ...`: the package root is the top
            elif other[1] != sub and other[1] not in LAYERS[sub]:
                bad.append((m, mod))
    assert not bad, bad


def test_the_layer_rules_detect_an_upward_import(tmp_path):
    """The checker itself: an import of the package root from a low layer is reported."""
    p = tmp_path / "x.py"
    p.write_text("from bluebook import edit\n\ndef f():\n    from bluebook.editor import edit\n")
    got = imports(p)
    assert ("bluebook", ["edit"], True) in got and ("bluebook.editor", ["edit"], False) in got
