"""Camera fingerprint K: maximum-likelihood estimate from flat-field images (method §2).

``K = sum_i W_i * I_i / 255  /  (sum_i (s(I_i) * m(I_i))**2 + 1)`` per colour channel, then gray,
zero-mean and the Fourier-domain Wiener filter (method §1 steps 3–5).  The sums are running sums, so
memory does not grow with the number of images.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import check_positive
from .atomic import atomic_path
from .errors import InputError, ShapeMismatchError

__all__ = [
    "Fingerprint",
    "check_fingerprint_file",
    "fingerprint_parts",
    "estimate_fingerprint",
    "intensity_scale",
    "saturation_mask",
]

#: Intensity-scale knee (method §2): linear below, Gaussian fall-off above.
SATURATION_KNEE = 252.0
SATURATION_WIDTH = 6.0
#: A channel whose maximum is at most this has no saturation mask.
SATURATION_MIN_MAX = 250.0
_FORMAT = "dippas-fingerprint/1"


def _package_version() -> str:
    from . import __version__

    return __version__


@dataclass
class Fingerprint:
    """A camera's sensor fingerprint and what it was estimated from.

    Attributes
    ----------
    K : numpy.ndarray
        float32 H×W fingerprint.
    camera : str
        Camera label (free text, e.g. ``"Nikon_D70_0"``).
    n_images : int
        Number of flat-field images averaged.
    sigma : float
        Noise level of the residual extraction (method §1).
    version : str
        dippas version that estimated it.
    crop : tuple of int or None
        (h, w) of the centre crop of the images the estimate used, None for whole images.
    method : str
        Residual path of the estimate (``"fast"`` or ``"reference"``; they differ by ~1e-4).
    """

    K: np.ndarray
    camera: str = ""
    n_images: int = 0
    sigma: float = 5.0
    version: str = field(default_factory=_package_version)
    crop: tuple[int, int] | None = None
    method: str = "fast"

    def __post_init__(self) -> None:
        k = np.asarray(self.K)
        if k.ndim != 2 or k.size == 0:
            raise InputError(f"fingerprint K must be a non-empty 2-D array, got shape {k.shape}")
        if not np.issubdtype(k.dtype, np.floating) and not np.issubdtype(k.dtype, np.integer):
            raise InputError(f"fingerprint K must be real numbers, got dtype {k.dtype}")
        k = k.astype(np.float32, copy=False)
        if not np.isfinite(k).all():
            raise InputError("fingerprint K contains NaN or infinite values")
        self.K = k
        if self.crop is not None:
            self.crop = (int(self.crop[0]), int(self.crop[1]))

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of K."""
        return (int(self.K.shape[0]), int(self.K.shape[1]))

    def metadata(self) -> dict:
        """JSON-serialisable description (everything but K)."""
        return {
            "format": _FORMAT,
            "camera": self.camera,
            "shape": list(self.shape),
            "n_images": int(self.n_images),
            "sigma": float(self.sigma),
            "crop": list(self.crop) if self.crop is not None else None,
            "version": self.version,
            "method": self.method,
        }

    def center_crop(self, size: int | tuple[int, int]) -> Fingerprint:
        """A new Fingerprint holding the centre crop of K (same rule as :func:`io.center_crop`)."""
        from .io import center_crop

        k = np.array(center_crop(self.K, size), copy=True)
        return Fingerprint(
            K=k,
            camera=self.camera,
            n_images=self.n_images,
            sigma=self.sigma,
            version=self.version,
            crop=k.shape,
            method=self.method,
        )

    def region(self, y: int, x: int, h: int, w: int) -> Fingerprint:
        """A new Fingerprint holding K's ``(y, x, h, w)`` region (the camera and the rest kept):
        the fingerprint of a photo's region, the same pixels."""
        return dataclasses.replace(self, K=np.array(self.K[y : y + h, x : x + w], copy=True))

    def save(self, path: str | os.PathLike, *, dtype: type = np.float32) -> Path:
        """Save to one ``.npz`` file (K + JSON metadata), atomically.

        ``dtype=np.float16`` halves the size (relative error about 5e-4; the shipped sample uses
        it).
        """
        from .run import environment_info

        path = Path(path)
        if path.suffix.lower() != ".npz":
            raise InputError(f"{path}: a fingerprint file must end in .npz")
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise InputError(f"dtype must be float32 or float16, got {dtype!r}")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                K=self.K.astype(dtype),
                # the versions that produced the file, for whoever reproduces it later
                metadata=np.array(
                    json.dumps({**self.metadata(), "environment": environment_info()})
                ),
            )
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, shape: tuple[int, int] | None = None
    ) -> Fingerprint:
        """Load a fingerprint saved by :meth:`save`; InputError naming the file if invalid.

        The array headers are checked first (:func:`check_fingerprint_file`): a file over the
        pixel limit, of another ``shape`` than asked, or holding Python objects is refused
        before its data is read.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such fingerprint file")
        check_fingerprint_file(path, shape=shape)
        try:
            with np.load(path, allow_pickle=False) as data:
                if "K" not in data.files or "metadata" not in data.files:
                    raise InputError(f"{path}: not a dippas fingerprint (needs K and metadata)")
                k = np.array(data["K"])
                meta = json.loads(str(data["metadata"]))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - zip/npy/json errors: name the file
            raise InputError(f"{path}: cannot read fingerprint ({exc})") from exc
        if not isinstance(meta, dict):
            raise InputError(f"{path}: fingerprint metadata is not a JSON object")
        if k.ndim != 2 or not np.issubdtype(k.dtype, np.floating):
            raise InputError(f"{path}: K must be a 2-D float array, got {k.dtype} {k.shape}")
        if not np.isfinite(k).all():
            raise InputError(f"{path}: fingerprint K contains NaN or infinite values")
        try:
            shape = meta.get("shape")
            if shape is not None and tuple(shape) != k.shape:
                raise InputError(
                    f"{path}: metadata says shape {tuple(shape)} but K is {k.shape}"
                )
            crop = meta.get("crop")
            return cls(
                K=k.astype(np.float32),
                camera=str(meta.get("camera", "")),
                n_images=int(meta.get("n_images", 0)),
                sigma=float(meta.get("sigma", 5.0)),
                version=str(meta.get("version", "")),
                crop=tuple(crop) if crop else None,
                method=str(meta.get("method", "fast")),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise InputError(f"{path}: damaged fingerprint metadata ({exc})") from None


def fingerprint_parts(
    fingerprint: Fingerprint | np.ndarray | None,
) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """The reference ``K`` (checked float32 H×W) and the metadata of ``fingerprint``.

    The one place that tells the accepted kinds apart: a :class:`Fingerprint` gives its ``K`` and
    ``camera``, ``n_images``, ``sigma``, ``version``; a bare array is ``K`` with no metadata
    (``{}``); ``None`` (blind mode) gives ``(None, None)``.

    Raises
    ------
    InputError
        ``fingerprint`` is something else (named), or ``K`` is not a finite 2-D array.
    """
    from ._validation import as_plane

    if fingerprint is None:
        return None, None
    if isinstance(fingerprint, Fingerprint):
        info = {
            "camera": fingerprint.camera,
            "n_images": fingerprint.n_images,
            "sigma": fingerprint.sigma,
            "version": fingerprint.version,
        }
        return as_plane(fingerprint.K, "fingerprint K"), info
    if isinstance(fingerprint, np.ndarray | list | tuple):
        return as_plane(fingerprint, "fingerprint K"), {}
    raise InputError(
        f"fingerprint must be a dippas_core.fingerprint.Fingerprint, its K as an H×W array, or "
        f"None (PRNU-blind mode); got {type(fingerprint).__name__}"
    )


def check_fingerprint_file(
    path: str | os.PathLike, *, shape: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Size of the fingerprint in a ``.npz`` from its headers alone; nothing else is read.

    Parameters
    ----------
    path
        The fingerprint file.
    shape
        When given, the (height, width) K must have (e.g. the photo's).

    Raises
    ------
    InputError
        Not a fingerprint archive, K not 2-D, more pixels than
        :data:`dippas_core.io.limits.MAX_PIXELS`, metadata larger than a JSON text can sensibly
        be, or K of another ``shape``.
    """
    import zipfile

    from . import io

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(
            f"{path}: not a fingerprint file (a NumPy .npz archive): {exc}"
        ) from None
    if not {"K.npy", "metadata.npy"} <= names:
        raise InputError(f"{path}: not a dippas fingerprint (needs K and metadata)")
    k_shape, _ = io.npz_header(path, "K")
    if len(k_shape) != 2:
        raise InputError(f"{path}: K must be a 2-D float array, got shape {k_shape}")
    h, w = k_shape
    if h * w > io.limits.MAX_PIXELS:
        raise InputError(
            f"{path}: K declares {h}×{w} = {h * w / 1e6:.1f} megapixels, over the limit of "
            f"{io.limits.MAX_PIXELS / 1e6:.1f} MP; refusing to read it"
        )
    m_shape, m_dtype = io.npz_header(path, "metadata")
    if m_dtype.itemsize * int(np.prod(m_shape)) > _MAX_METADATA_BYTES:
        raise InputError(f"{path}: fingerprint metadata is implausibly large; refusing to read it")
    if shape is not None and (h, w) != tuple(shape):
        raise InputError(
            f"the photo is {shape[0]}×{shape[1]} but the fingerprint {path} is {h}×{w}; "
            "use --crop N (or crop both) to work on matching central crops"
        )
    return h, w


#: Largest metadata array read from a fingerprint file (it holds a short JSON text).
_MAX_METADATA_BYTES = 1 << 20


def intensity_scale(image: np.ndarray) -> np.ndarray:
    """s(I) of method §2 (float, 0..255): ``I/252`` below 252, ``exp(-(I-252)**2/6)`` above."""
    i = np.asarray(image, dtype=np.float32)
    return np.where(
        i < SATURATION_KNEE,
        i / np.float32(SATURATION_KNEE),
        np.exp(-((i - np.float32(SATURATION_KNEE)) ** 2) / np.float32(SATURATION_WIDTH)),
    ).astype(np.float32)


def saturation_mask(image: np.ndarray) -> np.ndarray:
    """m(I) of method §2, per channel: False on flat saturated areas, True elsewhere.

    A channel whose maximum is at most 250 is all True.  Otherwise a pixel is masked when it equals
    the channel maximum and at least one of its 4 neighbours (with wrap-around) equals it too.
    """
    i = np.asarray(image)
    planes = i[..., np.newaxis] if i.ndim == 2 else i
    mask = np.ones(planes.shape, dtype=bool)
    for c in range(planes.shape[2]):
        ch = planes[..., c]
        top = ch.max()
        if top <= SATURATION_MIN_MAX:
            continue
        at_max = ch == top
        neighbour = (
            np.roll(at_max, 1, axis=0)
            | np.roll(at_max, -1, axis=0)
            | np.roll(at_max, 1, axis=1)
            | np.roll(at_max, -1, axis=1)
        )
        mask[..., c] = ~(at_max & neighbour)
    return mask[..., 0] if i.ndim == 2 else mask


def _describe(shape: tuple[int, ...]) -> str:
    size = f"{shape[0]}×{shape[1]}"
    return size if len(shape) == 2 else f"{size}×{shape[2]}"


def _accumulate_reference(img, sigma, rp_sum, nn_sum) -> None:
    """Add one image to the running sums (H×W×C), plain NumPy: the oracle of the fast path."""
    from .residual import wavelet_noise

    rp_sum += wavelet_noise(img, sigma, method="reference") * (img / np.float32(255.0))
    nn_sum += (intensity_scale(img) * saturation_mask(img)) ** 2


def _accumulate_fast(img, sigma, rp_sum, nn_sum) -> None:
    """Add one image to the running sums (C×H×W) with the Numba kernels."""
    from . import _kernels
    from .residual import _wavelet_noise_fast

    noise = _wavelet_noise_fast(img, sigma, threaded=True)
    _kernels.ml_accumulate(
        img[..., np.newaxis] if img.ndim == 2 else img,
        noise,
        rp_sum,
        nn_sum,
        np.float32(SATURATION_KNEE),
        np.float32(SATURATION_WIDTH),
        np.float32(SATURATION_MIN_MAX),
    )


def _fingerprint_of_sums(rp_sum: np.ndarray, nn_sum: np.ndarray, method: str) -> np.ndarray:
    """K from the two sums (method §2): their ratio, gray, zero-mean, Wiener-filtered."""
    from .residual import _gray_zero_mean_wiener_dft, rgb2gray, wiener_dft, zero_mean

    k = rp_sum / (nn_sum + np.float32(1.0))
    if method == "reference":
        return wiener_dft(zero_mean(rgb2gray(k)))
    h, w = k.shape[-2:]
    return _gray_zero_mean_wiener_dft(k, h, w)


def _as_image_list(images: Any) -> Any:
    """What :func:`estimate_fingerprint` iterates over: one path becomes a list of one."""
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray) and (
        images.ndim not in (3, 4) or (images.ndim == 3 and images.shape[2] == 3)
    ):
        raise InputError(
            f"images as one array must be N×H×W×3 (or N×H×W gray), got shape {images.shape}; "
            "pass a list to give a single image"
        )
    return images


def _read_one(idx: int, item: Any, crop: Any) -> tuple[str, np.ndarray]:
    """An image of the list (a path is read), cropped, as float 0..255; its name in errors."""
    from .io import center_crop, read_image
    from .residual_spec import as_float255

    if isinstance(item, (str, os.PathLike)):
        name = str(item)
        img = read_image(item)
    else:
        name = f"images[{idx}]"
        img = np.asarray(item)
    if crop is not None:
        try:
            img = center_crop(img, crop)
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
    return name, as_float255(img, name)


def _zero_sums(img: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """The two running sums: H×W(×C) like the image (reference), C×H×W (fast: the kernels')."""
    if method == "reference":
        shape = img.shape
    elif img.ndim == 2:
        shape = (1, *img.shape)
    else:
        shape = (img.shape[2], *img.shape[:2])
    return np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)


def estimate_fingerprint(
    images: Iterable,
    *,
    sigma: float = 5.0,
    crop: int | tuple[int, int] | None = None,
    camera: str = "",
    method: str = "fast",
) -> Fingerprint:
    """Maximum-likelihood camera fingerprint from flat-field images (method §2).

    Parameters
    ----------
    images : iterable
        Paths (read with :func:`dippas_core.io.read_image`, pixels as stored) or arrays (uint8,
        uint16 or float 0..255, H×W×3 or H×W), or an N×H×W×3 array.  Read one at a time.
    sigma : float
        Noise level of the residual extraction (method §1), > 0.
    crop : int or (h, w), optional
        Centre-crop every image to this size first (as prnu-python's example does with 512).
    camera : str
        Label stored with the fingerprint.
    method : {"fast", "reference"}
        Residual path (see :func:`dippas_core.residual.residual`).

    Returns
    -------
    Fingerprint

    Raises
    ------
    ShapeMismatchError
        Two inputs differ in size or orientation (the message names the input and both sizes).
    InputError
        No images, or an image is not a valid picture.
    ImageReadError
        A file cannot be read.
    """
    from .residual import _check_method

    sigma = check_positive(sigma, "sigma")
    _check_method(method)
    rp_sum = nn_sum = None
    first_name, first_shape = "", None
    n = 0
    for idx, item in enumerate(_as_image_list(images)):
        name, img = _read_one(idx, item, crop)
        if first_shape is None:
            first_name, first_shape = name, img.shape
        elif img.shape != first_shape:
            turned = img.shape[:2] == first_shape[1::-1] and img.shape[2:] == first_shape[2:]
            hint = " (rotated: all images must share one orientation)" if turned else ""
            raise ShapeMismatchError(
                f"{name} is {_describe(img.shape)} but {first_name} is "
                f"{_describe(first_shape)}{hint}; not averaging images of different sizes"
            )
        if rp_sum is None:
            rp_sum, nn_sum = _zero_sums(img, method)
        if method == "reference":
            _accumulate_reference(img, sigma, rp_sum, nn_sum)
        else:
            _accumulate_fast(img, sigma, rp_sum, nn_sum)
        n += 1
    if n == 0:
        raise InputError("no images given to estimate a fingerprint from")
    k_final = _fingerprint_of_sums(rp_sum, nn_sum, method)
    crop_hw = None if crop is None else k_final.shape[:2]
    return Fingerprint(
        K=k_final, camera=camera, n_images=n, sigma=sigma, crop=crop_hw, method=method
    )
