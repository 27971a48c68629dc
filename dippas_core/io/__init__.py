"""Images in and out: pixel data exactly as stored, written back with no metadata at all.

Reading
    JPEG, PNG and TIFF (and anything else Pillow reads), 8- or 16-bit, gray or RGB.  Pixel data is
    returned as stored: EXIF orientation is ignored by default, as forensic tools do (the sensor
    fingerprint lives in sensor coordinates); ``apply_orientation=True`` rotates/flips as a viewer
    would.  RGBA, LA, palette, CMYK and 1-bit images are converted to RGB (or gray for LA/1-bit);
    the alpha channel is dropped.  TIFF is read with tifffile (16-bit colour TIFF stays 16-bit);
    Pillow reduces 16-bit colour PNG to 8 bits, so 16-bit PNG is decoded with libpng
    (``imagecodecs``).  Anything unreadable, truncated, empty, animated or unsupported raises
    :class:`~dippas_core.errors.ImageReadError` naming the file.

Size limit
    Every reader compares the size a file *declares* (PNG IHDR, TIFF tags, Pillow's header)
    with one limit, :data:`limits.MAX_PIXELS` (Pillow's default) or ``max_pixels=``, before
    decoding a pixel: a small file claiming a huge image (a decompression bomb) is refused at once.
    :func:`npz_header` and :func:`load_npy` do the same for NumPy files: shape and dtype come from
    the header, objects (pickles) are never loaded.

Writing
    :func:`write_image` writes PNG or TIFF (by suffix), atomically, with no EXIF/ICC/XMP/text
    chunks; float input (0..255 scale) is rounded, never truncated.

Modules: :mod:`.reading` (image files in), :mod:`.writing` (image files out),
:mod:`.numpy_files` (``.npy``/``.npz`` headers), :mod:`.conversions` (sample types and
planes) and :mod:`.crops`.
"""

from __future__ import annotations

from . import limits
from ._formats import IMAGE_SUFFIXES, ImageNoteWarning
from .conversions import as_rgb, drop_alpha, to_float255, to_uint8
from .crops import center_crop, crop_at
from .numpy_files import load_npy, npy_header, npz_header, npz_headers
from .reading import find_images, image_size, read_image, warn_if_turned
from .writing import write_image

__all__ = [
    "IMAGE_SUFFIXES",
    "limits",
    "ImageNoteWarning",
    "as_rgb",
    "center_crop",
    "crop_at",
    "drop_alpha",
    "find_images",
    "image_size",
    "load_npy",
    "npy_header",
    "npz_header",
    "npz_headers",
    "read_image",
    "to_float255",
    "to_uint8",
    "warn_if_turned",
    "write_image",
]
