"""The package's floor plan as a contract: layers in the order the data flows, no cycles.

The imports of every module of nngp_ppl are read with ``ast`` (nothing is imported, no new
dependency) and checked against the declared layers below, bottom first: a module may
import its own layer and the layers under it. An import that runs back up costs one of
the budget's ``BACK_EDGES`` (each named, with the reason it is allowed); the import graph,
function-level imports included, has no cycle; library imports sit at module level apart
from the optional dependencies named in ``LAZY``; no module imports another module's
private (underscore) names.

Mutation check (run by hand when this test was written): appending to
nngp_ppl/sampling/stats.py a function that does ``from ..study import spec`` fails
``test_imports_run_down_the_layers`` (sampling -> study runs up), ``test_no_import_cycles``
(study -> ... -> sampling.stats -> study) and ``test_library_imports_sit_at_module_level``;
the same import at module level does not even import (a real cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nngp_ppl"
ROOT = "nngp_ppl"

#: Bottom first. A module belongs to the last entry that is a prefix of its dotted name.
LAYERS: list[tuple[str, ...]] = [
    # base: private utilities and index bookkeeping every layer uses
    ("nngp_ppl._version", "nngp_ppl._startup", "nngp_ppl._checks", "nngp_ppl._memo", "nngp_ppl._io",
     "nngp_ppl._lock", "nngp_ppl._progress", "nngp_ppl.tuples", "nngp_ppl.vocabulary"),
    ("nngp_ppl.ensembles",),  # networks and their activations' Gaussian expectations
    ("nngp_ppl.sampling",),  # network outputs -> correlator sums and their files
    ("nngp_ppl.theory",),  # GP, exact finite-width, diagrams, lattice, NTK
    ("nngp_ppl.training",),  # trained ensembles (sampler + NTK oracle)
    ("nngp_ppl.inference",),  # coupling problems, fits, posteriors, flows
    ("nngp_ppl.study.presets", "nngp_ppl.study.spec", "nngp_ppl.study.manifest",
     "nngp_ppl.study.train_spec"),
    ("nngp_ppl.study.report",),
    ("nngp_ppl.study.stages", "nngp_ppl.study"),
    ("nngp_ppl.cli",),
    ("nngp_ppl",),  # the package root re-exports the public API and sits on top
]

#: Imports allowed to run back up a layer: (importer, imported) -> why.
BACK_EDGES: dict[tuple[str, str], str] = {}

#: Optional or slow-to-import dependencies that stay inside the functions that need them:
#: Dask and optax are optional extras; matplotlib only draws figures and costs startup time.
LAZY = {"dask", "distributed", "optax", "matplotlib"}

#: Modules whose imports stay inside functions: _startup installs the Ctrl-C guard before
#: jax is imported, so it may import nothing heavy at module level.
LAZY_MODULES = {"nngp_ppl._startup"}

#: Private names still read across modules: (importer, home, name) -> why.
PRIVATE_READS: dict[tuple[str, str, str], str] = {}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


MODULES = _modules()


def _imports(mod: str):
    """(node, imported module, imported name or None, inside a function) of ``mod``."""
    path, is_pkg = MODULES[mod]
    tree = ast.parse(path.read_text())
    nested = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            nested.update(id(n) for n in ast.walk(fn) if n is not fn)
    for node in ast.walk(tree):
        inside = id(node) in nested
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node, a.name, None, inside
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                yield node, (sub if sub in MODULES else target), a.name, inside


def _internal_edges():
    for mod in MODULES:
        for node, target, name, inside in _imports(mod):
            if target == ROOT or target.startswith(ROOT + "."):
                yield mod, target, name, inside, node.lineno


def layer(mod: str) -> int:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, f"{mod} is on no declared layer: add it to LAYERS"
    return best


def test_every_module_is_on_a_layer():
    for mod in MODULES:
        layer(mod)


def test_imports_run_down_the_layers():
    back = set()
    for mod, target, _, _, line in _internal_edges():
        if layer(target) > layer(mod):
            back.add((mod, target))
            assert (mod, target) in BACK_EDGES, (
                f"{mod}:{line} imports {target}, a higher layer "
                f"({LAYERS[layer(target)][0]} above {LAYERS[layer(mod)][0]})")
    assert len(BACK_EDGES) <= 2, "the budget of imports that run back up is 2"
    assert back == set(BACK_EDGES), f"stale entries in BACK_EDGES: {set(BACK_EDGES) - back}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-loops."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    """Function-level imports count: they hide a cycle, they do not remove it."""
    edges: dict[str, set[str]] = {}
    for mod, target, _, _, _ in _internal_edges():
        if target != mod:
            edges.setdefault(mod, set()).add(target)
    assert _cycles(edges) == []


def test_library_imports_sit_at_module_level():
    inner = []
    for mod in set(MODULES) - LAZY_MODULES:
        for node, target, _, inside, in _imports(mod):
            if inside and target.split(".")[0] not in LAZY:
                inner.append(f"{mod}:{node.lineno} {target}")
    assert inner == []


def test_no_module_imports_another_modules_private_names():
    bad = []
    for mod, target, name, _, line in _internal_edges():
        if name and name.startswith("_") and not name.startswith("__"):
            if f"{target}.{name}" in MODULES or target.endswith(f".{name}"):
                continue  # a private module of the package, not a private name
            if target != mod and (mod, target, name) not in PRIVATE_READS:
                bad.append(f"{mod}:{line} imports {target}.{name}")
    assert bad == []


def test_every_public_module_declares_all():
    missing = []
    for mod, (path, _) in MODULES.items():
        if any(part.startswith("_") for part in mod.split(".")):
            continue
        tree = ast.parse(path.read_text())
        if all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
               for n in tree.body):
            continue  # a package whose __init__ is its docstring (the floor plan) alone
        names = {t.id for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name)}
        if "__all__" not in names:
            missing.append(mod)
    assert missing == []
