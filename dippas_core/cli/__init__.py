"""The ``dippas`` command line.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds a parser whose ``func`` default takes the parsed arguments and returns an exit code.
Modules are discovered, so adding a subcommand never edits this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from ..errors import DippasError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="dippas",
        description="Remove a camera's sensor fingerprint (PRNU) from photographs (DIPPAS).",
    )
    parser.add_argument("--version", action="version", version=f"dippas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def _show_warning(command: str):
    """Our own warnings (an image note, ...) as one plain line; others as Python prints them."""
    from ..errors import NoteWarning

    plain = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, NoteWarning):
            print(f"dippas {command}: warning: {message}", file=sys.stderr)
        else:
            plain(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dippas`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit here (status 2, message printed)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(args.command)
            return int(args.func(args) or 0)
    except DippasError as exc:
        print(f"dippas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable input, unwritable output folder, full disk
        print(f"dippas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dippas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
