"""The shape of the code: no import cycles between files, no private names borrowed across
packages, no function longer than a screen (:data:`MAX_FUNCTION_LINES`).

Every import counts, those inside functions and under ``TYPE_CHECKING`` too: a cycle hidden in
a function is still a cycle.  ``python tests/test_structure.py`` prints the figures.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The longest function (or method) allowed in ``dippas_core``, in lines (docstring included).
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Import:
    importer: str  # module name of the file that imports
    target: str  # module name of the file imported
    names: tuple[str, ...]  # the names taken (empty for ``import x``)
    line: int


def _modules(package: str) -> dict[str, Path]:
    """``{module name: file}`` of every module of ``package`` (a folder under the repo root)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _lazy_names(tree: ast.Module) -> dict[str, str]:
    """A lazily loading ``__init__``'s ``_API = {name: submodule}`` (lazy_loader.attach)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_API" for t in node.targets
        ) and isinstance(node.value, ast.Dict):
            return {
                k.value: v.value
                for k, v in zip(node.value.keys, node.value.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
            }
    return {}


def imports(packages: tuple[str, ...] = ("dippas_core",)) -> list[Import]:
    """Every import between the modules of ``packages``, resolved to the file it reaches.

    ``from pkg import name`` reaches ``pkg.name`` when that is a module, the submodule a lazy
    ``__init__`` loads ``name`` from, else ``pkg/__init__.py``.
    """
    modules: dict[str, Path] = {}
    for package in packages:
        modules.update(_modules(package))
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in modules.items()}
    lazy = {name: _lazy_names(tree) for name, tree in trees.items()}
    found = []
    for name, tree in trees.items():
        is_package = modules[name].name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        found.append(Import(name, alias.name, (), node.lineno))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source not in modules:
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in modules:
                        target = sub
                    elif alias.name in lazy[source]:
                        target = f"{source}.{lazy[source][alias.name]}"
                    else:
                        target = source
                    if target != name:
                        found.append(Import(name, target, (alias.name,), node.lineno))
    return found


def cycles(found: list[Import]) -> list[list[str]]:
    """The import circles: strongly connected groups of two files or more (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        graph.setdefault(imp.importer, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def private_imports(found: list[Import]) -> list[Import]:
    """Imports of a ``_private`` name from another package, or of a ``_private`` module from
    outside the package that holds it.

    A package's private names are its own modules' to share; a subpackage is another package.
    ``dippas_core._kernels`` belongs to ``dippas_core`` (its subpackages included), not to the
    plugin.
    """
    packages = {m for m, p in {**_modules("dippas_core"), **_modules("napari_dippas")}.items()
                if p.name == "__init__.py"}

    def package(module: str) -> str:
        return module if module in packages else module.rpartition(".")[0]

    out = []
    for imp in found:
        parts = imp.target.split(".")
        first = next((i for i, part in enumerate(parts) if _private(part)), None)
        owner = ".".join(parts[:first]) if first is not None else None
        outside = owner is not None and not (
            imp.importer == owner or imp.importer.startswith(owner + ".")
        )
        borrowed = any(_private(n) for n in imp.names) and package(imp.importer) != package(
            imp.target
        )
        if outside or borrowed:
            out.append(imp)
    return out


@dataclass(frozen=True)
class Function:
    module: str
    name: str
    line: int
    lines: int


def functions(package: str = "dippas_core") -> list[Function]:
    """Every function and method of ``package``, longest first (decorators not counted)."""
    out = []
    for module, path in _modules(package).items():
        tree = ast.parse(path.read_text(), str(path))
        parents: dict[ast.AST, str] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    parents[child] = f"{parents.get(node, '')}{node.name}."
                elif node in parents:
                    parents[child] = parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                out.append(Function(module, parents.get(node, "") + node.name, node.lineno,
                                    node.end_lineno - node.lineno + 1))
    return sorted(out, key=lambda f: -f.lines)


# -- the tests ---------------------------------------------------------------------------------


def test_no_import_cycles_between_files():
    found = cycles(imports(("dippas_core",)))
    assert not found, "import cycles between files (the arrows must point down):\n" + "\n".join(
        " <-> ".join(group) for group in found
    )


def test_no_import_cycles_in_the_plugin():
    found = cycles(imports(("dippas_core", "napari_dippas")))
    assert not found, "\n".join(" <-> ".join(group) for group in found)


def test_no_private_names_borrowed_across_packages():
    found = private_imports(imports(("dippas_core", "napari_dippas")))
    assert not found, "private names imported from another package:\n" + "\n".join(
        f"{i.importer}:{i.line} takes {', '.join(i.names) or i.target} from {i.target}"
        for i in found
    )


def test_no_function_longer_than_a_screen():
    longest = functions("dippas_core")[0]
    assert longest.lines <= MAX_FUNCTION_LINES, (
        f"{longest.module}.{longest.name} (line {longest.line}) is {longest.lines} lines; "
        f"the bar is {MAX_FUNCTION_LINES}"
    )


def test_the_checker_sees_imports_inside_functions_and_cycles():
    found = imports(("dippas_core",))
    # pipeline imports the tiled package only inside its functions: still an arrow
    assert any(i.importer == "dippas_core.pipeline" and i.target == "dippas_core.tiled"
               for i in found)
    # a lazy package face resolves to the module that defines the name
    assert any(i.importer == "dippas_core.cli.anonymize" and i.target == "dippas_core.job"
               for i in found)
    loop = [Import("p.a", "p.b", ("f",), 1), Import("p.b", "p.c", (), 2),
            Import("p.c", "p.a", ("g",), 9)]
    assert cycles(loop) == [["p.a", "p.b", "p.c"]]
    assert cycles(loop[:2]) == []
    borrowed = Import("dippas_core.tiled._photo", "dippas_core.pipeline", ("_reference",), 3)
    assert private_imports([borrowed]) == [borrowed]


if __name__ == "__main__":
    sys.setrecursionlimit(10_000)
    every = imports(("dippas_core", "napari_dippas"))
    core = [i for i in every if i.importer.startswith("dippas_core")]
    groups = cycles(core)
    print(f"import cycles between files of dippas_core: {len(groups)}")
    for group in groups:
        print("  " + " <-> ".join(group))
    private = private_imports(every)
    print(f"private names imported across packages: {len(private)}")
    for imp in private:
        print(f"  {imp.importer}:{imp.line} {', '.join(imp.names) or '(module)'} "
              f"from {imp.target}")
    top = functions("dippas_core")[:5]
    print("longest functions of dippas_core:")
    for fn in top:
        print(f"  {fn.lines:4d} lines  {fn.module}.{fn.name} (line {fn.line})")
