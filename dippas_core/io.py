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
    with one limit, :data:`MAX_PIXELS` (Pillow's default) or ``max_pixels=``, before decoding a
    pixel: a small file claiming a huge image (a decompression bomb) is refused at once.
    :func:`npz_header` and :func:`load_npy` do the same for NumPy files: shape and dtype come from
    the header, objects (pickles) are never loaded.

Writing
    :func:`write_image` writes PNG or TIFF (by suffix), atomically, with no EXIF/ICC/XMP/text
    chunks; float input (0..255 scale) is rounded, never truncated.
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

from ._atomic import atomic_path
from .errors import ImageReadError, InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
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
    "read_image",
    "to_float255",
    "to_uint8",
    "warn_if_turned",
    "write_image",
]

#: File name endings taken for images when a folder is listed (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Largest height×width any reader decodes (Pillow's default limit): checked from the header.
MAX_PIXELS = 89_478_485
_PILLOW_LOCK = threading.Lock()
_ORIENTATIONS = {
    2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "mirrored and rotated 90° left",
    6: "rotated 90° right", 7: "mirrored and rotated 90° right", 8: "rotated 90° left",
}


class ImageNoteWarning(UserWarning):
    """Something in an image file is deliberately not applied (e.g. its EXIF orientation)."""


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


def drop_alpha(image: np.ndarray) -> np.ndarray:
    """Gray or colour planes only: H×W×1 → H×W, gray + alpha → its gray plane, RGBA → RGB.

    Any other layout is returned as it is (a view, never a copy).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # gray, or gray + alpha
        return arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:  # RGBA
        return arr[..., :3]
    return arr


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """``image`` as H×W×3: alpha dropped (:func:`drop_alpha`), a gray plane repeated three times.

    Raises
    ------
    InputError
        Neither gray nor colour (the message names ``name`` and the shape).
    """
    arr = drop_alpha(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"{name}: unsupported image shape {arr.shape} (need gray or RGB)")
    return arr


def _too_large(path: Path, h: int, w: int, max_pixels: int) -> ImageReadError:
    return ImageReadError(
        f"{path}: the image declares {w}×{h} = {h * w / 1e6:.1f} megapixels, over the limit of "
        f"{max_pixels / 1e6:.1f} MP; refusing to decode it (raise dippas_core.io.MAX_PIXELS or "
        "pass max_pixels= if the file is trusted)"
    )


def _limit(max_pixels: int | None) -> int:
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise InputError(f"max_pixels must be a positive integer, got {limit!r}")
    return int(limit)


def _png_header(path: Path) -> tuple[int, int, int, int] | None:
    """(height, width, bit depth, colour type) from a PNG's IHDR, or None if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 29 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
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
        if path.suffix.lower() in _TIFF_SUFFIXES:
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
    """Pillow's own bomb check off while a header is read: :data:`MAX_PIXELS` is the one limit,
    and it is checked right after, before any pixel is decoded."""
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
        Largest height×width decoded (default :data:`MAX_PIXELS`), checked against the size the
        file declares before any pixel is decoded.

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
        if path.suffix.lower() in _TIFF_SUFFIXES and png is None:
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


# --------------------------------------------------------------------------------------------
# NumPy files: headers checked before any data is read
# --------------------------------------------------------------------------------------------


def _npy_header(fh, source: str) -> tuple[tuple[int, ...], np.dtype]:
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = npformat.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, EOFError, OSError, SyntaxError) as exc:
        raise InputError(f"{source}: not a NumPy array file ({exc})") from None
    if dtype.hasobject:
        raise InputError(
            f"{source}: holds Python objects, not plain numbers; such files are never loaded "
            "(loading them could run code)"
        )
    return tuple(int(n) for n in shape), dtype


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a ``.npy`` file from its header alone.

    Raises
    ------
    InputError
        Not a ``.npy`` file, or one holding Python objects (never loaded).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _npy_header(fh, str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None


def npz_header(path: str | os.PathLike, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of array ``name`` in a ``.npz`` archive, from its header alone.

    Only the first bytes of the member are inflated, so a small archive holding a huge array
    can be refused by size before its data is read.

    Raises
    ------
    InputError
        Not a zip archive, no member ``name``, or a member that is not a plain ``.npy`` array.
    """
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            if f"{name}.npy" not in zf.namelist():
                raise InputError(f"{path}: no array {name!r} in this .npz file")
            with zf.open(f"{name}.npy") as fh:
                return _npy_header(fh, f"{path} ({name})")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise InputError(
            f"{path}: not a NumPy .npz archive (a zip of .npy arrays): {exc}"
        ) from None


def load_npy(
    path: str | os.PathLike, *, shape: tuple[int, ...] | None = None, what: str = "array"
) -> np.ndarray:
    """Load a plain numeric ``.npy`` array, its header checked first (objects never loaded).

    Parameters
    ----------
    path
        The ``.npy`` file.
    shape
        When given, the shape the array must have; checked from the header, before the data.
    what
        What the array is, for messages.
    """
    path = Path(path)
    found, dtype = npy_header(path)
    if shape is not None and found != tuple(shape):
        raise InputError(f"{path}: the {what} is {found}, expected {tuple(shape)}")
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise InputError(f"{path}: the {what} holds {dtype}, not plain numbers")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: the {what} is damaged ({exc})") from None


def to_float255(image) -> np.ndarray:
    """float32 copy of ``image`` in the 0..255 scale: uint16 is divided by 257, float is kept."""
    arr = np.asarray(image)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(255.0 / 65535.0)
    if not (np.issubdtype(arr.dtype, np.number)) or arr.dtype == bool:
        raise InputError(f"image must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float32)


def to_uint8(image) -> np.ndarray:
    """``image`` as uint8: uint8 is returned as it is, uint16 scaled (:func:`to_float255`), other
    values (the 0..255 scale) rounded, never truncated, and clipped to 0..255."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        arr = to_float255(arr)
    out = np.rint(arr)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


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
            import imagecodecs  # libpng: IHDR, IDAT and IEND only (Pillow cannot write 16-bit RGB)

            tmp.write_bytes(imagecodecs.png_encode(arr.reshape(*arr.shape[:2], -1)))
        else:
            from PIL import Image

            Image.fromarray(arr).save(tmp, format="PNG")  # Pillow adds no ancillary chunks
    return path
