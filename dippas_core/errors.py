"""Errors that name the problem, so a user never sees a traceback from deep inside numpy."""

from __future__ import annotations

__all__ = [
    "DeviceError",
    "DippasError",
    "ImageReadError",
    "InputError",
    "NoteWarning",
    "ShapeMismatchError",
]


class DippasError(Exception):
    """Base class of every error raised on purpose by dippas_core."""


class InputError(DippasError, ValueError):
    """An argument is malformed: wrong shape, dtype, NaN, out of range, ..."""


class ShapeMismatchError(InputError):
    """Two arrays that must share a size do not (e.g. an image and a fingerprint)."""


class ImageReadError(InputError, OSError):
    """A file could not be read as an image; the message names the file."""


class DeviceError(DippasError, RuntimeError):
    """A compute device was asked for that does not exist or ran out of memory."""


class NoteWarning(UserWarning):
    """Something the user should know about a result, said in one line (the command line prints
    it as ``dippas COMMAND: warning: ...``): a damaged record redone, an image tag not applied."""
