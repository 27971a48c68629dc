"""The one pixel limit every reader applies.

:data:`MAX_PIXELS` is read here at call time by every reader (images, fingerprints, run folders),
so ``dippas_core.io.limits.MAX_PIXELS = n`` changes it everywhere at once.
"""

from __future__ import annotations

__all__ = ["MAX_PIXELS"]

#: Largest height×width any reader decodes (Pillow's default limit), checked from the header.
MAX_PIXELS = 89_478_485
