"""Package-level invariants: quick import, no GUI or torch in the core."""

from __future__ import annotations

import subprocess
import sys

import dippas_core


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(out.split())


def test_core_imports_no_gui_and_no_torch():
    modules = _imported_after("import dippas_core")
    for banned in ("torch", "napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6"):
        assert banned not in modules, f"import dippas_core imported {banned}"


def test_core_modules_import_no_gui():
    # every core module, not just the package: none may reach napari or Qt
    import pkgutil

    names = [m.name for m in pkgutil.walk_packages(dippas_core.__path__, "dippas_core.")]
    stmt = "; ".join(f"import {n}" for n in names if not n.endswith("__main__"))
    modules = _imported_after(stmt)
    for banned in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui"):
        assert banned not in modules, f"a dippas_core module imported {banned}"


def test_public_api_resolves():
    missing = []
    for name in dippas_core.__all__:
        try:
            getattr(dippas_core, name)
        except (AttributeError, ImportError):
            missing.append(name)
    assert not missing, f"names in dippas_core.__all__ that do not resolve: {missing}"


def test_cli_help_lists_commands():
    from dippas_core.cli import build_parser

    help_text = build_parser().format_help()
    assert "dippas" in help_text
