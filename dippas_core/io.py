"""Images in and out: pixel data exactly as stored, written back with no metadata at all.

Reading
    JPEG, PNG and TIFF (and anything else Pillow reads), 8- or 16-bit, gray or RGB.  Pixel data is
    returned as stored: EXIF orientation is ignored by default, as forensic tools do (the sensor
    fingerprint lives in sensor coordinates); ``apply_orientation=True`` rotates/flips as a viewer
    would.  RGBA, LA, palette, CMYK and 1-bit images are converted to RGB (or gray for LA/1-bit);
    the alpha channel is dropped.  TIFF is read with tifffile (16-bit colour TIFF stays 16-bit);
    Pillow reduces 16-bit colour PNG to 8 bits, so such files are decoded here instead.
    Anything unreadable, truncated, empty or unsupported raises
    :class:`~dippas_core.errors.ImageReadError` naming the file.

Writing
    :func:`write_image` writes PNG or TIFF (by suffix), atomically, with no EXIF/ICC/XMP/text
    chunks; float input (0..255 scale) is rounded, never truncated.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .errors import ImageReadError, InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "center_crop",
    "crop_at",
    "find_images",
    "read_image",
    "to_float255",
    "write_image",
]

#: File name endings taken for images when a folder is listed (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


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
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:  # RGBA: drop alpha
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[2] == 2:  # gray + alpha
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ImageReadError(f"{path}: unsupported image layout {arr.shape} (need gray or RGB)")
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(
            f"{path}: unsupported sample type {arr.dtype} (need 8- or 16-bit integers)"
        )
    if arr.size == 0:
        raise ImageReadError(f"{path}: the image is empty ({arr.shape})")
    return np.ascontiguousarray(arr)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise ImageReadError(f"{path}: TIFF file has no image")
        page = tif.pages[0]
        if int(page.photometric) not in (1, 2):  # MINISBLACK, RGB
            # tifffile hands back raw samples: CMYK, palette indices, inverted or YCbCr values
            # would pass for gray/RGB, so let Pillow convert those to RGB
            raise ValueError(f"photometric {page.photometric!r} needs a colour conversion")
        arr = page.asarray()
        planar_separate = getattr(page, "planarconfig", 1) == 2
    if arr.ndim == 3 and planar_separate and arr.shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, or None if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 29 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _read_png16_colour(path: Path) -> np.ndarray:
    """Decode a 16-bit RGB/RGBA PNG (Pillow would keep only the top 8 bits of each sample)."""
    raw = Path(path).read_bytes()
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(raw):
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        ctype = raw[pos + 4 : pos + 8]
        body = raw[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise ValueError("truncated PNG chunk")
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    else:
        raise ValueError("truncated PNG (no IEND chunk)")
    if ihdr is None:
        raise ValueError("PNG without IHDR")
    w, h, depth, ctype_, _, _, interlace = ihdr
    if interlace:
        raise ValueError("interlaced 16-bit colour PNG is not supported")
    channels = {2: 3, 6: 4}[ctype_]
    bpp = channels * depth // 8
    data = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    if data.size != h * (w * bpp + 1):
        raise ValueError("PNG image data has the wrong length")
    from ._kernels import png_unfilter  # Numba: the row filters are sequential per byte

    pixels = png_unfilter(data, h, w * bpp, bpp)
    return pixels.view(">u2").reshape(h, w, channels).astype(np.uint16)


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
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


def read_image(path: str | os.PathLike, *, apply_orientation: bool = False) -> np.ndarray:
    """Read an image file as stored: uint8 or uint16, H×W (gray) or H×W×3 (colour).

    Parameters
    ----------
    path : str or path-like
        JPEG, PNG, TIFF (or another format Pillow reads).
    apply_orientation : bool
        Rotate/flip by the EXIF orientation tag, as a viewer would.  Off by default: forensic
        work needs pixels in sensor order.

    Returns
    -------
    numpy.ndarray
        uint8 or uint16 array; RGBA/palette/CMYK are converted to RGB (alpha dropped).

    Raises
    ------
    ImageReadError
        The file is missing, empty, truncated, not an image, or in an unsupported layout; the
        message names the file.
    """
    from PIL import Image, ImageFile

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty")
    # truncated files must fail, never come back half grey
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        png = _png_header(path)
        if path.suffix.lower() in _TIFF_SUFFIXES:
            try:
                arr = _read_tiff(path)
            except ImageReadError:
                raise
            except Exception:  # noqa: BLE001 - e.g. a codec tifffile lacks: let Pillow try
                arr = _read_pillow(path)
        elif png is not None and png[0] == 16 and png[1] in (2, 6):
            arr = _read_png16_colour(path)
        else:
            arr = _read_pillow(path)
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


def to_float255(image) -> np.ndarray:
    """float32 copy of ``image`` in the 0..255 scale: uint16 is divided by 257, float is kept."""
    arr = np.asarray(image)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(255.0 / 65535.0)
    if not (np.issubdtype(arr.dtype, np.number)) or arr.dtype == bool:
        raise InputError(f"image must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError) as exc:
            raise InputError(f"crop size must be an int or (height, width), got {size!r}") from exc
    if h <= 0 or w <= 0:
        raise InputError(f"crop size must be positive, got {h}×{w}")
    return h, w


def center_crop(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Centre crop (a view) of ``size`` (int for a square, or (h, w)); first two axes only.

    The top-left corner is ``((H - h) // 2, (W - w) // 2)``, as in prnu-python's ``cut_ctr``.
    """
    arr = np.asarray(image)
    if arr.ndim < 2:
        raise InputError(f"image must be at least 2-D, got shape {arr.shape}")
    h, w = _size2(size)
    H, W = arr.shape[:2]
    if h > H or w > W:
        raise InputError(f"cannot crop {h}×{w} from an image of {H}×{W}")
    top, left = (H - h) // 2, (W - w) // 2
    return arr[top : top + h, left : left + w]


def crop_at(image: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    """Crop (a view) of h×w at (top, left); raises InputError if it does not fit."""
    arr = np.asarray(image)
    H, W = arr.shape[:2]
    try:
        top, left, h, w = (int(v) for v in (top, left, h, w))
    except (TypeError, ValueError) as exc:
        raise InputError(f"crop position and size must be integers, got {top!r}, {left!r}, "
                         f"{h!r}, {w!r}") from exc
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > H or left + w > W:
        raise InputError(f"crop {h}×{w} at ({top}, {left}) does not fit in an image of {H}×{W}")
    return arr[top : top + h, left : left + w]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _to_integer(array, bit_depth: int) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise InputError(f"image to write must be H×W or H×W×3, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError("image to write is empty")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"image to write must be real numbers, got dtype {arr.dtype}")
    if bit_depth == 8:
        if arr.dtype == np.uint8:
            return arr
        if arr.dtype == np.uint16:
            arr = arr.astype(np.float64) / 257.0
        scaled = arr.astype(np.float64)
        top = 255.0
    else:
        if arr.dtype == np.uint16:
            return arr
        scaled = arr.astype(np.float64) * (65535.0 / 255.0)  # float/uint8 are 0..255 scale
        top = 65535.0
    if not np.isfinite(scaled).all():
        raise InputError("image to write contains NaN or infinite values")
    out = np.clip(np.rint(scaled), 0, top)
    return out.astype(np.uint8 if bit_depth == 8 else np.uint16)


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def _png16_bytes(arr: np.ndarray) -> bytes:
    """A minimal 16-bit PNG (IHDR, IDAT, IEND only): Pillow cannot write 16-bit colour PNG."""
    h, w = arr.shape[:2]
    colour_type = 2 if arr.ndim == 3 else 0
    rows = arr.astype(">u2").reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def write_image(path: str | os.PathLike, array, *, bit_depth: int = 8) -> Path:
    """Write ``array`` as PNG or TIFF (by suffix), atomically and with no metadata.

    Parameters
    ----------
    path : str or path-like
        ``.png``, ``.tif`` or ``.tiff``.  An existing file is replaced only once the new one is
        complete.
    array : array_like
        H×W or H×W×3: uint8, uint16 or float in the 0..255 scale.  Float values are rounded to the
        nearest integer (``np.rint``) and clipped, never truncated.
    bit_depth : {8, 16}
        Sample depth of the file; 16-bit scales 0..255 to 0..65535.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", *_TIFF_SUFFIXES):
        raise InputError(f"{path}: can only write .png, .tif or .tiff, not {path.suffix!r}")
    if bit_depth not in (8, 16):
        raise InputError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    arr = np.ascontiguousarray(_to_integer(array, bit_depth))
    with atomic_path(path) as tmp:
        if suffix in _TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(
                tmp,
                arr,
                photometric="rgb" if arr.ndim == 3 else "minisblack",
                metadata=None,
                software=False,
            )
        elif bit_depth == 16:
            tmp.write_bytes(_png16_bytes(arr))
        else:
            from PIL import Image

            Image.fromarray(arr).save(tmp, format="PNG")  # Pillow adds no ancillary chunks
    return path
