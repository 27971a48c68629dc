"""Declared dependencies: a headless core without GUI packages, and every import declared.

The core (``dippas_core``: a Dask worker, a server) must install without napari, Qt or any GUI
toolkit; those belong to the ``plugin`` extra, and ``all`` is the viewer install.  The imports are
read from the source (``ast``), so a new ``import`` of an undeclared package fails here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
#: Distributions that make a GUI: never a requirement of the core.
GUI = {
    "napari", "magicgui", "npe2", "qtpy", "psygnal", "superqt", "app-model", "pyqt5", "pyqt6",
    "pyside2", "pyside6", "pyqt5-qt5", "pyqt6-qt6", "vispy", "napari-plugin-engine",
}
#: Imported only after a check that it is installed (``baselines.denoising.bm3d_available``).
OPTIONAL_IMPORTS = {"bm3d"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def project() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _requirements(specs: list[str]) -> list[Requirement]:
    return [Requirement(s) for s in specs]


def _declared(requirements: list[Requirement]) -> set[str]:
    """Distribution names a set of requirements installs directly, extras (``dask[x]``) included."""
    names = set()
    for req in requirements:
        names.add(_canonical(req.name))
        if req.extras and _canonical(req.name) != "napari-dippas":
            for sub in importlib.metadata.requires(req.name) or []:
                sub_req = Requirement(sub)
                # only what the extra adds: the marker holds with it and not without it
                if sub_req.marker and not sub_req.marker.evaluate({"extra": ""}) and any(
                    sub_req.marker.evaluate({"extra": extra}) for extra in req.extras
                ):
                    names.add(_canonical(sub_req.name))
    return names


def _third_party_imports(package: str) -> dict[str, str]:
    """Top-level module imported anywhere in ``package`` (functions included) -> one file."""
    found: dict[str, str] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in ("dippas_core", package):
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _undeclared(package: str, declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, where in _third_party_imports(package).items():
        if module in OPTIONAL_IMPORTS:
            continue
        dists = {_canonical(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            missing.append(f"{module} (imported in {where}; distribution {sorted(dists)})")
    return missing


def test_core_requirements_have_no_gui(project):
    core = _declared(_requirements(project["dependencies"]))
    assert not core & GUI, f"the core requires GUI packages: {sorted(core & GUI)}"
    # and none arrives through the core's extras either (dask[distributed] -> distributed)
    assert "distributed" in core


def test_plugin_extra_brings_the_viewer_and_all_includes_it(project):
    extras = project["optional-dependencies"]
    plugin = _declared(_requirements(extras["plugin"]))
    assert {"napari", "qtpy", "psygnal"} <= plugin
    bindings = {"pyqt5", "pyqt6", "pyside2", "pyside6"}
    assert not plugin & bindings, "the plugin extra picks no Qt binding"
    all_reqs = _requirements(extras["all"])
    assert any(_canonical(r.name) == "napari-dippas" and "plugin" in r.extras for r in all_reqs)
    assert any(r.name == "napari" and "pyqt6" in r.extras for r in all_reqs)


def test_every_core_import_is_a_core_requirement(project):
    declared = _declared(_requirements(project["dependencies"]))
    missing = _undeclared("dippas_core", declared)
    assert not missing, f"dippas_core imports undeclared packages: {missing}"


def test_every_plugin_import_is_declared(project):
    extras = project["optional-dependencies"]
    declared = _declared(_requirements(project["dependencies"] + extras["plugin"]))
    missing = _undeclared("napari_dippas", declared)
    assert not missing, f"napari_dippas imports packages outside core + plugin: {missing}"
