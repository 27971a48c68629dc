"""PNG chunk names, read straight from the bytes (no decoder that could hide a chunk)."""

from __future__ import annotations

import struct


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file's bytes, in order (``b"IHDR"``, ``b"IDAT"``, …)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return chunks
