"""Reading image files: pixel data exactly as stored, the declared size checked first.

See :mod:`dippas_core.io` for the formats, the orientation rule and the size limit.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..errors import ImageReadError, InputError
from . import limits
from ._formats import IMAGE_SUFFIXES, PNG_SIGNATURE, TIFF_SUFFIXES, ImageNoteWarning
from .conversions import drop_alpha

__all__ = ["find_images", "image_size", "read_image", "warn_if_turned"]

_PILLOW_LOCK = threading.Lock()
_ORIENTATIONS = {
    2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "mirrored and rotated 90° left",
    6: "rotated 90° right", 7: "mirrored and rotated 90° right", 8: "rotated 90° left",
}


def find_images(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Image files directly inside ``folder`` whose names match ``pattern``, sorted by name.

    Hidden files (``._IMG_0001.JPG`` from macOS, editors' backups) and folders are skipped;
    suffixes in :data:`IMAGE_SUFFIXES` match case-insensitively.

    Raises
    ------
    InputError
        ``folder`` is not a folder.
    """
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"folder {str(path)!r} does not exist or is not a folder")
    return sorted(
        p
        for p in path.glob(pattern or "*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _orient(arr: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply EXIF orientation 1..8 to an H×W(×C) array, like ``PIL.ImageOps.exif_transpose``."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1, :]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _exif_orientation(path: Path) -> int | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            value = im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - no readable EXIF means no orientation
        return None
    return int(value) if value in range(1, 9) else None


def _finish(arr: np.ndarray, path: Path) -> np.ndarray:
    """Normalise a decoded array to uint8/uint16 H×W or H×W×3, or raise ImageReadError."""
    arr = drop_alpha(arr)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ImageReadError(f"{path}: unsupported image layout {arr.shape} (need gray or RGB)")
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(
            f"{path}: unsupported sample type {arr.dtype} (need 8- or 16-bit integers)"
        )
    if arr.size == 0:
        raise ImageReadError(f"{path}: the image is empty ({arr.shape})")
    return np.ascontiguousarray(arr)


def _too_large(path: Path, h: int, w: int, max_pixels: int) -> ImageReadError:
    return ImageReadError(
        f"{path}: the image declares {w}×{h} = {h * w / 1e6:.1f} megapixels, over the limit of "
        f"{max_pixels / 1e6:.1f} MP; refusing to decode it (raise "
        "dippas_core.io.limits.MAX_PIXELS or pass max_pixels= if the file is trusted)"
    )


def _limit(max_pixels: int | None) -> int:
    # read at call time: dippas_core.io.limits.MAX_PIXELS is the one setting
    limit = limits.MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise InputError(f"max_pixels must be a positive integer, got {limit!r}")
    return int(limit)


def _png_header(path: Path) -> tuple[int, int, int, int] | None:
    """(height, width, bit depth, colour type) from a PNG's IHDR, or None if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 29 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return h, w, head[24], head[25]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) an image file declares, read from its header alone (nothing decoded).

    Raises
    ------
    ImageReadError
        The header cannot be read.
    """
    path = Path(path)
    try:
        png = _png_header(path)
        if png is not None:
            return png[0], png[1]
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if not tif.pages:
                    raise ImageReadError(f"{path}: TIFF file has no image")
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        from PIL import Image

        with _pillow_unlimited(), Image.open(path) as im:  # lazy: reads the header only
            return int(im.size[1]), int(im.size[0])
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder error: name the file
        raise ImageReadError(f"{path}: cannot read the image header ({exc})") from exc


@contextlib.contextmanager
def _pillow_unlimited():
    """Pillow's own bomb check off while a header is read: :data:`limits.MAX_PIXELS` is the one
    limit, and it is checked right after, before any pixel is decoded."""
    from PIL import Image

    with _PILLOW_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _read_tiff(path: Path, max_pixels: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise ImageReadError(f"{path}: TIFF file has no image")
        page = tif.pages[0]
        if len(tif.pages) > 1:  # a silent choice would hide what was dropped
            warnings.warn(
                f"{path}: a TIFF of {len(tif.pages)} pages; only the first page is read, the "
                "others are ignored",
                ImageNoteWarning,
                stacklevel=3,
            )
        h, w = int(page.imagelength), int(page.imagewidth)
        if h * w > max_pixels:  # tifffile has no limit of its own: check before asarray
            raise _too_large(path, h, w, max_pixels)
        if int(page.photometric) not in (1, 2):  # MINISBLACK, RGB
            # tifffile hands back raw samples: CMYK, palette indices, inverted or YCbCr values
            # would pass for gray/RGB, so let Pillow convert those to RGB
            raise ValueError(f"photometric {page.photometric!r} needs a colour conversion")
        arr = page.asarray()
        planar_separate = getattr(page, "planarconfig", 1) == 2
    if arr.ndim == 3 and planar_separate and arr.shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _read_png16(path: Path) -> np.ndarray:
    """Decode a 16-bit PNG with libpng (imagecodecs): Pillow would keep only the top 8 bits of
    colour samples.  The caller has checked the declared size; libpng inflates no more than the
    rows that size needs, however large the compressed stream claims to be."""
    import imagecodecs

    return imagecodecs.png_decode(path.read_bytes())


def _read_pillow(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image

    with _pillow_unlimited():
        im = Image.open(path)  # the header only
    with im:
        w, h = im.size
        if h * w > max_pixels:
            raise _too_large(path, h, w, max_pixels)
        frames = int(getattr(im, "n_frames", 1) or 1)
        if frames > 1 and im.format != "MPO":  # MPO: a camera JPEG whose extra frames are previews
            raise ImageReadError(
                f"{path}: an animated or multi-frame {im.format} image ({frames} frames); only "
                "one still photo can be anonymized and the other frames would be lost: save the "
                "frame you want as its own file first"
            )
        im.load()  # decode now, inside the caller's try: truncated files fail here
        mode = im.mode
        if mode in ("L", "RGB", "I;16", "I;16L", "I;16B", "I;16N"):
            arr = np.asarray(im)
        elif mode in ("1", "LA", "La"):
            arr = np.asarray(im.convert("L"))
        elif mode == "I":
            arr = np.asarray(im)
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise ImageReadError(f"{path}: 32-bit integer samples outside 0..65535")
            arr = arr.astype(np.uint16)
        elif mode in ("P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
            arr = np.asarray(im.convert("RGB"))
        else:
            raise ImageReadError(f"{path}: unsupported image mode {mode!r}")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def read_image(
    path: str | os.PathLike, *, apply_orientation: bool = False, max_pixels: int | None = None
) -> np.ndarray:
    """Read an image file as stored: uint8 or uint16, H×W (gray) or H×W×3 (colour).

    Parameters
    ----------
    path : str or path-like
        JPEG, PNG, TIFF (or another format Pillow reads).
    apply_orientation : bool
        Rotate/flip by the EXIF orientation tag, as a viewer would.  Off by default: forensic
        work needs pixels in sensor order (:func:`warn_if_turned` says so where it matters).
    max_pixels : int, optional
        Largest height×width decoded (default :data:`limits.MAX_PIXELS`), checked against the
        size the file declares before any pixel is decoded.

    Returns
    -------
    numpy.ndarray
        uint8 or uint16 array; RGBA/palette/CMYK are converted to RGB (alpha dropped).

    Raises
    ------
    ImageReadError
        The file is missing, empty, truncated, not an image, larger than ``max_pixels``,
        animated (frames would be lost), or in an unsupported layout; the message names the file.
    """
    from PIL import Image, ImageFile

    limit = _limit(max_pixels)
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty")
    # truncated files must fail, never come back half grey
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        png = _png_header(path)
        if png is not None and png[0] * png[1] > limit:
            raise _too_large(path, png[0], png[1], limit)
        if path.suffix.lower() in TIFF_SUFFIXES and png is None:
            try:
                arr = _read_tiff(path, limit)
            except ImageReadError:
                raise
            except Exception:  # noqa: BLE001 - e.g. a codec tifffile lacks: let Pillow try
                arr = _read_pillow(path, limit)
        elif png is not None and png[2] == 16 and png[3] in (2, 4, 6):
            arr = _read_png16(path)
        else:
            arr = _read_pillow(path, limit)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: image is too large to read safely ({exc})") from exc
    except (OSError, ValueError, SyntaxError, KeyError, IndexError, zlib.error) as exc:
        raise ImageReadError(f"{path}: cannot read as an image ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; name the file
        kind = type(exc).__name__
        raise ImageReadError(f"{path}: cannot read as an image ({kind}: {exc})") from exc
    arr = _finish(arr, path)
    if apply_orientation:
        arr = np.ascontiguousarray(_orient(arr, _exif_orientation(path)))
    return arr


def warn_if_turned(path: str | os.PathLike) -> None:
    """Warn (:class:`ImageNoteWarning`) when ``path``'s EXIF orientation turns the picture.

    Called where an image read as stored becomes an output: the output carries no EXIF, so it
    displays turned against the original.  The pixels are still used as stored, since the
    camera fingerprint lives in sensor order.
    """
    orientation = _exif_orientation(Path(path))
    if orientation not in (None, 1):
        warnings.warn(
            f"{path}: its EXIF orientation tag ({orientation}: {_ORIENTATIONS[orientation]}) is "
            "not applied: the pixels are used as the sensor stored them (as the camera "
            "fingerprint is), and the output carries no EXIF, so it will display turned "
            "against the original; rotate the output afterwards if needed",
            ImageNoteWarning,
            stacklevel=2,
        )
