"""DIP inversion through the camera model ``I ≈ I_phi · (1 + gamma · P)`` (method §4, paper eq. 9).

:func:`invert` returns an :class:`Inversion`: iterating over it runs one iteration per
:class:`Step` (with the snapshot ``I_phi`` when its PSNR reaches ``record_psnr``, the recording
threshold); once it ends, :attr:`Inversion.result` is the :class:`InversionResult`::

    inversion = invert(photo, K, config)
    for step in inversion:
        ...                 # progress; step.snapshot when kept
    result = inversion.result

It never keeps snapshots itself; the consumer streams them wherever it wants
(:func:`dippas_core.run.record` writes them to a chunked on-disk store).  The device work of one
step lives in :mod:`dippas_core.dip.fitting`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .._validation import as_image, as_plane, check_same_size
from ..cancel import CancelToken
from ..config import DIPConfig
from ..errors import DeviceError, InputError
from .device import resolve_device, speed_settings, torch_threads
from .fitting import (  # noqa: F401 - re-exported: dip.batched and scripts use them from here
    Inverter,
    _adam,
    camera_model_loss,
    drop_failed_frames,
    least_squares_gamma,
    oom_message,
    restore_cuda_globals,
    run_environment,
    set_cuda_globals,
    snapshot_pair,
)

if TYPE_CHECKING:
    from .device import SpeedSettings

__all__ = [
    "Inversion",
    "InversionResult",
    "STOP_REASONS",
    "Step",
    "StepSource",
    "invert",
    "least_squares_gamma",
    "run_to_end",
    "warm_up",
]

#: Why an inversion ended.
STOP_REASONS = ("psnr", "max_iter", "cancelled")
_HISTORY_KEYS = ("iteration", "loss", "psnr", "gamma", "gamma_star")


@dataclass
class Step:
    """One DIP iteration.

    Attributes
    ----------
    iteration : int
        1-based iteration number.
    loss : float
        ``MSE(I_phi · (1 + gamma · P), I)`` of this iteration's output, images in [0, 1].
    psnr : float
        PSNR (dB) of ``I_phi`` against the photo.
    gamma : float
        The injection strength (``>= 0``). With ``gamma_mode="lsq"`` (the default) the one this
        iteration's loss used; with ``"adam"`` the value after this iteration's update and clamp.
    snapshot : numpy.ndarray or None
        ``I_phi`` as float32 H×W×3 in 0..255 when ``psnr >= record_psnr``, else None. It is the
        generator's output itself, never the fingerprint-injected product.
    environment : dict or None
        On the first step only: the run's environment (resolved device, speed settings, versions),
        as in :attr:`InversionResult.environment`, so that a consumer that closes the inversion
        early still knows what ran.
    snapshot_device : torch.Tensor or None
        When the inversion runs on a GPU (not the CPU) and kept a snapshot: the same snapshot as
        an H×W×3 float32 tensor still on that device, so that its residual and tile sums can be
        computed there (:meth:`dippas_core.run.RunDirectory.ingest_on_device`).
    gamma_star : float
        The least-squares gamma of this iteration's ``I_phi`` (:func:`least_squares_gamma`,
        before any clamp): where the injection strength should be for this output.
    tile : int or None
        In a photo run (:func:`dippas_core.pipeline.anonymize`'s ``on_step``), the index of the
        tile the step belongs to: several tiles per step interleave their steps.  None otherwise.
    looks_same : bool or None
        With ``DIPConfig.require_fidelity``: whether the output meets the local fidelity bars
        (only such an output is kept or ends the fit); None below the PSNR from which they are
        checked (:func:`invert`'s ``fidelity_from``: such an output is neither kept nor ends
        it); always True when the config requires no bars.
    """

    iteration: int
    loss: float
    psnr: float
    gamma: float
    snapshot: np.ndarray | None = field(default=None, repr=False)
    environment: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    snapshot_device: Any = field(default=None, repr=False, compare=False)
    gamma_star: float = float("nan")  # after the older fields: positional callers stay valid
    tile: int | None = None
    #: whether the output meets the local fidelity bars (True when the config requires none,
    #: None where they were not measured)
    looks_same: bool | None = True


@dataclass
class InversionResult:
    """What an inversion made: :attr:`Inversion.result` once it has ended.

    Attributes
    ----------
    history : dict of str to numpy.ndarray
        ``iteration`` (int64), ``loss``, ``psnr``, ``gamma``, ``gamma_star`` (float64), one entry
        per iteration.
    n_snapshots : int
        Number of steps that carried a snapshot.
    stop_reason : str
        ``"psnr"`` (reached ``stop_psnr``), ``"max_iter"`` or ``"cancelled"``.
    seed : int
    config : dict
        ``DIPConfig.to_dict()`` of the run.
    environment : dict
        Versions (python, torch, numpy, dippas_core), device, resolved speed settings, threads.
    elapsed_s : float
        Wall-clock seconds from the first iteration's set-up to the end.
    """

    history: dict[str, np.ndarray]
    n_snapshots: int
    stop_reason: str
    seed: int
    config: dict[str, Any]
    environment: dict[str, Any]
    elapsed_s: float

    @property
    def n_iterations(self) -> int:
        return int(len(self.history["iteration"]))

    @property
    def final_psnr(self) -> float:
        """PSNR of the last iteration (NaN when none ran)."""
        psnr = self.history["psnr"]
        return float(psnr[-1]) if len(psnr) else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (history arrays become lists)."""
        return {
            "history": {k: v.tolist() for k, v in self.history.items()},
            "n_snapshots": self.n_snapshots,
            "stop_reason": self.stop_reason,
            "seed": self.seed,
            "config": self.config,
            "environment": self.environment,
            "elapsed_s": self.elapsed_s,
        }




def image_to_unit(image: Any, min_size: int, stacklevel: int = 3) -> np.ndarray:
    """The photo as float32 H×W×3 in [0, 1] (uint8 /255, uint16 /65535, float 0..255 /255)."""
    raw = np.asarray(image) if not isinstance(image, np.ndarray) else image
    arr = as_image(raw, "image", min_size=min_size)
    if arr.ndim != 3:
        raise InputError(
            f"DIP inversion needs a colour H×W×3 image, got a gray {arr.shape[0]}×{arr.shape[1]} "
            "one; stack it into three channels first"
        )
    if raw.dtype == np.uint16:
        return arr * np.float32(1.0 / 65535.0)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 255.0 + 1e-3:
        raise InputError(f"image values must lie in 0..255, got {lo:g}..{hi:g}")
    if raw.dtype.kind == "f" and 0 < hi <= 1.0:
        warnings.warn(
            "float image has values in 0..1; DIP expects the 0..255 scale (multiply by 255)",
            stacklevel=stacklevel,
        )
    return arr * np.float32(1.0 / 255.0)


@runtime_checkable
class StepSource(Protocol):
    """What :func:`dippas_core.run.record` drives: an :class:`Inversion` or a stand-in for one.

    An iterator of :class:`Step` that owns its cancellation (:attr:`cancel_token`, checked before
    each step), gives its :class:`InversionResult` once it has ended (``None`` before, and when
    it cannot tell), and takes the torch thread count its steps should run with on a CPU
    (:meth:`share_cpu`).
    """

    cancel_token: CancelToken

    @property
    def result(self) -> InversionResult | None: ...

    def __iter__(self) -> Iterator[Step]: ...

    def __next__(self) -> Step: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...

    def share_cpu(self, threads: int | None) -> None: ...


class Inversion:
    """One DIP inversion of ``image`` through ``I_phi · (1 + gamma · P)``, run step by step.

    Made by :func:`invert` (which checks the inputs).  Iterating runs it: one :class:`Step` per
    iteration, until the PSNR reaches ``stop_psnr``, ``max_iter`` iterations ran, or it was
    cancelled; then :attr:`result` holds the :class:`InversionResult`.

    It owns its cancellation: :meth:`cancel` (or the shared :attr:`cancel_token`, checked before
    every iteration) ends it with ``stop_reason == "cancelled"``, its result keeping every
    finished step.  It owns the torch thread setting its steps run with (:attr:`threads`: the
    config's ``torch_threads``, or what :meth:`share_cpu` gave; the caller's own setting comes
    back between steps).  The network, optimiser and device tensors are built on the first
    iteration and released when it ends, fails, or is closed (:meth:`close`, a ``with`` block).

    For callers written against the former generator: ``next()`` works, the final
    ``StopIteration`` carries the result as its ``value``, and :meth:`close` ends it early.
    """

    def __init__(
        self,
        image: Any,
        P: Any,
        config: DIPConfig | dict[str, Any] | None = None,
        cancel: CancelToken | None = None,
        *,
        fidelity_from: float | None = None,
    ) -> None:
        config = DIPConfig.coerce(config)
        multiple = 2 ** (len(config.widths) - 1)
        self._img01 = image_to_unit(image, min_size=multiple, stacklevel=4)
        self._P = as_plane(P, "P")
        check_same_size(self._img01, self._P, "image", "P")
        #: The inversion's settings.
        self.config: DIPConfig = config
        #: The resolved torch device (never ``"auto"``).
        self.device = resolve_device(config.device)
        self._speed: SpeedSettings = speed_settings(config, self.device)
        #: Checked before every iteration; shared with whoever else may stop the job.
        self.cancel_token: CancelToken = cancel if cancel is not None else CancelToken()
        #: Torch intra-op threads of each step (``None``: the caller's setting).
        self.threads: int | None = config.torch_threads
        self._fidelity_from = fidelity_from
        self._inverter: Inverter | None = None
        self._history: dict[str, list] = {k: [] for k in _HISTORY_KEYS}
        self._n_snapshots = 0
        self._environment: dict[str, Any] = {}
        self._started: float | None = None
        self._stop_reason: str | None = None  # known once the next step would not run
        self._result: InversionResult | None = None
        self._failed = False

    # -- the iterator ---------------------------------------------------------------------------
    def __iter__(self) -> Inversion:
        return self

    def __next__(self) -> Step:
        if self._result is not None or self._failed:
            raise StopIteration(self._result)
        try:
            return self._advance()
        except StopIteration:
            raise
        except BaseException as exc:
            self._failed = True
            if _is_oom(exc):
                error = self._device_error(exc)  # before the release: frees the step's graph
                self._release()
                raise error from exc
            self._release()
            raise

    def _advance(self) -> Step:
        if self._inverter is None:
            self._set_up()
        if self._stop_reason is None and self.cancel_token.cancelled:
            self._stop_reason = "cancelled"
        if self._stop_reason is None and self.n_iterations >= self.config.max_iter:
            self._stop_reason = "max_iter"
        if self._stop_reason is not None:
            self._finish(self._stop_reason)
            raise StopIteration(self._result)
        with torch_threads(self.threads):
            loss, psnr, gamma, gamma_star, kept = self._inverter.step()
        iteration = self.n_iterations + 1
        for key, value in zip(
            _HISTORY_KEYS, (iteration, loss, psnr, gamma, gamma_star), strict=True
        ):
            self._history[key].append(value)
        self._n_snapshots += kept is not None
        if self._inverter.ends(psnr):
            self._stop_reason = "psnr"
        env = dict(self._environment) if iteration == 1 else None
        snapshot, on_device = snapshot_pair(kept)
        # the consumer owns the snapshot now: nothing here keeps a reference to it
        return Step(iteration, loss, psnr, gamma, snapshot, env, on_device, gamma_star,
                    looks_same=self._inverter.looks_same)

    def _set_up(self) -> None:
        self._started = time.perf_counter()
        with torch_threads(self.threads):
            # looked up here (not bound at import) so that a script may swap the inverter class
            self._inverter = Inverter(self._img01, self._P, self.config, self.device, self._speed,
                                      self._fidelity_from)
            self._environment = run_environment(self.device, self._speed)

    def _device_error(self, exc: BaseException) -> DeviceError:
        drop_failed_frames(exc)
        return DeviceError(oom_message(self._img01.shape, self.config, self.device))

    def _finish(self, stop_reason: str) -> None:
        self._release()
        self._result = InversionResult(
            history={
                k: np.asarray(v, dtype=np.int64 if k == "iteration" else np.float64)
                for k, v in self._history.items()
            },
            n_snapshots=int(self._n_snapshots),
            stop_reason=stop_reason,
            seed=int(self.config.seed),
            config=self.config.to_dict(),
            environment=self._environment,
            elapsed_s=0.0 if self._started is None else time.perf_counter() - self._started,
        )

    def _release(self) -> None:
        inverter, self._inverter = self._inverter, None
        if inverter is not None:
            inverter.release()

    # -- control --------------------------------------------------------------------------------
    @property
    def result(self) -> InversionResult | None:
        """The :class:`InversionResult` once the inversion has ended; ``None`` while it runs
        (and after it failed with an exception)."""
        return self._result

    @property
    def n_iterations(self) -> int:
        """Iterations finished so far."""
        return len(self._history["iteration"])

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def cancel(self) -> None:
        """Stop before the next iteration (the token is shared: its other holders see it too)."""
        self.cancel_token.cancel()

    def share_cpu(self, threads: int | None) -> None:
        """Run the steps with ``threads`` torch threads, when on the CPU and the config sets none.

        The recorder leaves the other cores to its residual computations this way.
        """
        if threads and self.config.torch_threads is None and self.device.type == "cpu":
            self.threads = int(threads)

    def run(self) -> InversionResult:
        """Run to the end, dropping the snapshots; return :attr:`result`."""
        for _ in self:
            pass
        return self._result

    def close(self) -> None:
        """End now: release the device state; an unfinished inversion counts as cancelled."""
        if self._result is None and not self._failed:
            self._finish("cancelled")
        self._release()

    def __enter__(self) -> Inversion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # an abandoned inversion gives its device memory back
        with contextlib.suppress(Exception):
            self._release()

    def __repr__(self) -> str:
        state = "running" if self._result is None else f"ended: {self._result.stop_reason}"
        return f"Inversion({self.n_iterations} iterations, {state}, device={self.device})"


def _is_oom(exc: BaseException) -> bool:
    """Out of device memory (MPS and some CUDA paths report it as a plain RuntimeError)."""
    import sys

    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is None and torch is not None:
        oom = torch.cuda.OutOfMemoryError
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def invert(
    image: Any,
    P: Any,
    config: DIPConfig | dict[str, Any] | None = None,
    cancel: CancelToken | None = None,
    *,
    fidelity_from: float | None = None,
) -> Inversion:
    """Fit the Multi-Resolution U-Net to ``image`` through ``I_phi · (1 + gamma · P)``.

    Parameters
    ----------
    image : array_like
        The photo, H×W×3: uint8, uint16, or float in the 0..255 scale.
    P : array_like
        float H×W, in the image's orientation: the camera fingerprint ``K`` (PRNU-aware) or the
        photo's own noise residual (PRNU-blind). It is broadcast over the three channels.
    config : DIPConfig or dict, optional
        Defaults to ``DIPConfig()`` (the paper's setup).
    cancel : CancelToken, optional
        A token shared with other jobs; by default the inversion makes its own
        (:meth:`Inversion.cancel`).
    fidelity_from : float, optional
        With ``config.require_fidelity``: the PSNR (dB) from which outputs are checked against
        the local fidelity bars (:attr:`Step.looks_same`).  Default: ``record_psnr``.
        A consumer that keeps every output
        (``record_psnr = -inf``) and filters them at its own threshold passes that threshold.

    Returns
    -------
    Inversion
        Not started: iterate over it (``for step in inversion``), then read
        :attr:`Inversion.result`; :meth:`Inversion.run` does both.

    Raises
    ------
    InputError, ShapeMismatchError
        Bad image or ``P`` (raised here, before any device state is built).
    DeviceError
        Unknown device (raised here), or out of device memory (raised while iterating).
    """
    return Inversion(image, P, config, cancel, fidelity_from=fidelity_from)


def run_to_end(inversion: Iterable[Step]) -> InversionResult | None:
    """Run an :class:`Inversion` to its end (snapshots are dropped) and return its result.

    Also drains any other iterator of steps, returning its ``StopIteration`` value.
    """
    if isinstance(inversion, Inversion):
        return inversion.run()
    iterator = iter(inversion)
    while True:
        try:
            next(iterator)
        except StopIteration as stop:
            return stop.value


def warm_up() -> None:
    """Load what a first inversion would load lazily, so that a later run starts at once.

    The first optimiser step imports ``torch._dynamo`` and the first convolution sets up its
    kernels: seconds during which the importing thread holds the GIL in long stretches.  A GUI
    calls this from a background thread while the user is still choosing settings.  Safe to call
    from any thread, any number of times; the residual kernels (Numba) load too.
    """
    import torch

    from ..residual import residual

    with torch.enable_grad():
        conv = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.BatchNorm2d(2))
        opt = _adam(list(conv.parameters()), 1e-3, torch.device("cpu"))
        conv(torch.zeros(1, 3, 8, 8)).square().mean().backward()
        opt.step()
    residual(np.zeros((32, 32, 3), np.float32))
