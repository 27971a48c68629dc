"""Package-level invariants: quick import, no GUI or torch in the core."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys

import pytest

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
    names = [m.name for m in pkgutil.walk_packages(dippas_core.__path__, "dippas_core.")]
    stmt = "; ".join(f"import {n}" for n in names if not n.endswith("__main__"))
    modules = _imported_after(stmt)
    banned_modules = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui",
                      "npe2", "psygnal", "superqt")
    for banned in banned_modules:
        assert banned not in modules, f"a dippas_core module imported {banned}"


def test_public_api_resolves():
    missing = []
    for name in dippas_core.__all__:
        try:
            getattr(dippas_core, name)
        except (AttributeError, ImportError):
            missing.append(name)
    assert not missing, f"names in dippas_core.__all__ that do not resolve: {missing}"


def test_cli_help_lists_every_subcommand(capsys):
    import dippas_core.cli as cli

    # the subcommands are the public modules of dippas_core/cli, each registering one parser
    # (a module train_attacker registers `train-attacker`)
    modules = {
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(cli.__path__)
        if not m.name.startswith("_")
    }
    assert {"anonymize", "assemble", "demo", "fingerprint", "invert", "score"} <= modules
    help_text = cli.build_parser().format_help()
    listed = set(re.findall(r"^    ([\w-]+)\s", help_text, flags=re.MULTILINE))
    assert listed == modules, f"'dippas --help' lists {sorted(listed)}, not {sorted(modules)}"
    for name in modules:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: dippas {name}")
    # no command: the help, exit status 2
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
