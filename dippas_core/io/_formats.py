"""File-format constants and the warning class shared by the readers and the writer."""

from __future__ import annotations

from ..errors import NoteWarning

__all__ = ["IMAGE_SUFFIXES", "PNG_SIGNATURE", "TIFF_SUFFIXES", "ImageNoteWarning"]

#: File name endings taken for images when a folder is listed (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageNoteWarning(NoteWarning):
    """Something in an image file is deliberately not applied (e.g. its EXIF orientation)."""
