"""The import layering of the suite, read from the code: every import of every module (module
level, inside functions, under TYPE_CHECKING) is parsed with ``ast`` and checked against the
layers below. A module may import modules of LOWER layers and of its own group; nothing else.
So the plugins (backbones, identifiers, baselines) never import the harness above them (the
methods, the run context, the matrix, the runner, the report, the CLI) nor each other, the
core never imports a plugin, and there is no import circle. Adding a module to a package below
needs no change here; a new module at benchmarks/ top level must be placed in a layer.

README "Where things live" describes the same layers in words.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "identifiers", "backbones", "baselines")

#: (layer, group, module prefixes): a module belongs to the group of its longest prefix
LAYERS = [
    (0, "foundation", ("benchmarks", "benchmarks.errors", "benchmarks.utils", "benchmarks.distributed",
                       "benchmarks.cache", "benchmarks.config", "benchmarks.registry", "benchmarks.prompts",
                       "benchmarks.figures", "benchmarks.precision")),
    (1, "data", ("benchmarks.data",)),
    (2, "harness core", ("benchmarks.protocol", "benchmarks.features", "benchmarks.training", "benchmarks.memory", "benchmarks.compute",
                         "benchmarks.evaluation")),
    (3, "backbones", ("backbones",)),
    (3, "identifiers", ("identifiers",)),
    (3, "baselines", ("baselines",)),
    (4, "analysis", ("benchmarks.analysis",)),
    (4, "run directory", ("benchmarks.rundir",)),
    (5, "methods", ("benchmarks.methods",)),
    (6, "run context", ("benchmarks.context",)),
    (6, "matrix", ("benchmarks.matrix",)),
    (6, "tracking", ("benchmarks.tracking",)),
    (7, "runner", ("benchmarks.runner",)),
    (7, "report", ("benchmarks.report", "benchmarks.report_html")),
    (7, "tokenize", ("benchmarks.tokenize",)),
    (7, "gather", ("benchmarks.gather",)),
    (7, "reference check", ("benchmarks.reference_check",)),
    (8, "entry points", ("benchmarks.cli", "benchmarks.bench_generation", "benchmarks.bench_setrec",
                         "benchmarks.bench_rpg", "benchmarks.bench_scale", "benchmarks.parity", "benchmarks.repro_check")),
]


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The suite module that an imported dotted name lives in (None: not the suite's)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@functools.lru_cache(maxsize=None)
def imports_of(module: str) -> dict[str, int]:
    """Suite modules ``module`` imports anywhere in its file -> the line of the first import."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: from the module's package, up level - 1
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        for name in names:
            target = _resolve(name)
            if target and target != module:
                found.setdefault(target, node.lineno)
    return found


def layer_of(module: str) -> tuple[int, str]:
    """(layer, group) of a module: the group whose prefix is its longest; the foundation's
    entries are single modules (the package ``benchmarks`` itself, not what lies under it)."""
    best = None
    for layer, group, prefixes in LAYERS:
        for p in prefixes:
            inside = module == p or (group != "foundation" and module.startswith(p + "."))
            if inside and (best is None or len(p) > best[0]):
                best = (len(p), layer, group)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layering.py: place it in LAYERS "
                             f"(and in README 'Where things live')")
    return best[1], best[2]


def test_every_module_has_a_layer():
    unplaced = []
    for m in MODULES:
        try:
            layer_of(m)
        except AssertionError as exc:
            unplaced.append(str(exc))
    assert not unplaced, "\n".join(unplaced)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    layer, group = layer_of(module)
    wrong = []
    for target, line in sorted(imports_of(module).items()):
        t_layer, t_group = layer_of(target)
        if t_group != group and t_layer >= layer:
            where = MODULES[module].relative_to(ROOT) if MODULES[module].is_relative_to(ROOT) else MODULES[module]
            wrong.append(f"{where}:{line}: {module} ({group}, layer {layer}) imports "
                         f"{target} ({t_group}, layer {t_layer})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_circle():
    graph = {m: set(imports_of(m)) for m in MODULES}
    state: dict[str, int] = {}      # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_layering_test_sees_a_wrong_import(tmp_path, monkeypatch):
    """The checker itself: an identifier scheme importing the runner, or the report, fails."""
    bad = tmp_path / "identifiers" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("from benchmarks.runner import run_matrix\n\ndef f():\n    import benchmarks.report\n")
    monkeypatch.setitem(MODULES, "identifiers.bad", bad)
    with pytest.raises(AssertionError, match=r"bad\.py:4: identifiers\.bad \(identifiers, layer 3\) imports "
                                             r"benchmarks\.report \(report, layer 7\)\n.*bad\.py:1: .* imports benchmarks\.runner"):
        test_imports_go_down_the_layers("identifiers.bad")
