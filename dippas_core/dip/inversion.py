"""DIP inversion through the camera model ``I ≈ I_phi · (1 + gamma · P)`` (method §4, paper eq. 9).

:func:`invert` returns a generator: it yields one :class:`Step` per iteration (with the snapshot
``I_phi`` when its PSNR reaches ``tau_psnr``) and returns an :class:`InversionResult`. It never
keeps snapshots itself; the consumer streams them wherever it wants (``dippas_core.run`` writes
them to a chunked on-disk store).
"""

from __future__ import annotations

import gc
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_image, as_plane, check_same_size
from ..errors import DeviceError, InputError
from .config import DIPConfig
from .device import SpeedSettings, device_name, resolve_device, speed_settings, torch_threads

if TYPE_CHECKING:
    import torch

    from ..cancel import CancelToken

__all__ = [
    "Step",
    "InversionResult",
    "invert",
    "run_to_end",
    "warm_up",
    "least_squares_gamma",
    "STOP_REASONS",
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
        ``I_phi`` as float32 H×W×3 in 0..255 when ``psnr >= tau_psnr``, else None. It is the
        generator's output itself, never the fingerprint-injected product.
    environment : dict or None
        On the first step only: the run's environment (resolved device, speed settings, versions),
        as in :attr:`InversionResult.environment`, so that a consumer that closes the generator
        early still knows what ran.
    snapshot_device : torch.Tensor or None
        When the inversion runs on a GPU (not the CPU) and kept a snapshot: the same snapshot as
        an H×W×3 float32 tensor still on that device, so that its residual and tile sums can be
        computed there (:meth:`dippas_core.run.RunDirectory.ingest_on_device`).
    gamma_star : float
        The least-squares gamma of this iteration's ``I_phi`` (:func:`least_squares_gamma`,
        before any clamp): where the injection strength should be for this output.
    """

    iteration: int
    loss: float
    psnr: float
    gamma: float
    snapshot: np.ndarray | None = field(default=None, repr=False)
    environment: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    snapshot_device: Any = field(default=None, repr=False, compare=False)
    gamma_star: float = float("nan")  # last: older positional callers stay valid


@dataclass
class InversionResult:
    """What an inversion returns (``StopIteration.value`` of the :func:`invert` generator).

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


def _image_to_unit(image: Any, min_size: int) -> np.ndarray:
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
            stacklevel=3,
        )
    return arr * np.float32(1.0 / 255.0)


def invert(
    image: Any,
    P: Any,
    config: DIPConfig | dict[str, Any] | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Step, None, InversionResult]:
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
        Checked before every iteration; once cancelled the generator stops with
        ``stop_reason == "cancelled"``.

    Returns
    -------
    generator
        Yields :class:`Step`; its return value (``StopIteration.value``, or :func:`run_to_end`) is
        an :class:`InversionResult`. The model, optimiser and device tensors are released when the
        generator ends, is cancelled, raises, or is closed early (``gen.close()``).

    Raises
    ------
    InputError, ShapeMismatchError
        Bad image or ``P`` (raised here, before the generator starts).
    DeviceError
        Unknown device (raised here), or out of device memory (raised by the generator).
    """
    config = DIPConfig.coerce(config)
    multiple = 2 ** (len(config.widths) - 1)
    img01 = _image_to_unit(image, min_size=multiple)
    plane = as_plane(P, "P")
    check_same_size(img01, plane, "image", "P")
    device = resolve_device(config.device)
    speed = speed_settings(config, device)
    return _iterate(img01, plane, config, device, speed, cancel)


def _iterate(
    img01: np.ndarray,
    P: np.ndarray,
    config: DIPConfig,
    device: torch.device,
    speed: SpeedSettings,
    cancel: CancelToken | None,
) -> Generator[Step, None, InversionResult]:
    import torch

    history: dict[str, list] = {k: [] for k in _HISTORY_KEYS}
    n_snapshots = 0
    stop_reason = "max_iter"
    start = time.perf_counter()
    inverter: _Inverter | None = None
    # ``torch_threads`` covers the inversion's own work only: between steps the caller (and any
    # other inversion running beside this one) keeps its own thread setting
    threads = config.torch_threads
    try:
        with torch_threads(threads):
            inverter = _Inverter(img01, P, config, device, speed)
            environment = _environment(device, speed)
        for iteration in range(1, config.max_iter + 1):
            if cancel is not None and cancel.cancelled:
                stop_reason = "cancelled"
                break
            with torch_threads(threads):
                loss, psnr, gamma, gamma_star, kept = inverter.step()
            for key, value in zip(
                _HISTORY_KEYS, (iteration, loss, psnr, gamma, gamma_star), strict=True
            ):
                history[key].append(value)
            n_snapshots += kept is not None
            env = dict(environment) if iteration == 1 else None
            snapshot, on_device = _snapshot_pair(kept)
            yield Step(iteration, loss, psnr, gamma, snapshot, env, on_device, gamma_star)
            del snapshot, on_device, kept  # the consumer owns them now
            if psnr >= config.stop_psnr:
                stop_reason = "psnr"
                break
    except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError) as exc:
        _drop_failed_frames(exc)
        raise DeviceError(_oom_message(img01.shape, config, device)) from exc
    except RuntimeError as exc:  # MPS and some CUDA paths report OOM as a RuntimeError
        if "out of memory" not in str(exc).lower():
            raise
        _drop_failed_frames(exc)
        raise DeviceError(_oom_message(img01.shape, config, device)) from exc
    finally:
        if inverter is not None:
            inverter.release()
            inverter = None
    return InversionResult(
        history={
            k: np.asarray(v, dtype=np.int64 if k == "iteration" else np.float64)
            for k, v in history.items()
        },
        n_snapshots=int(n_snapshots),
        stop_reason=stop_reason,
        seed=int(config.seed),
        config=config.to_dict(),
        environment=environment,
        elapsed_s=time.perf_counter() - start,
    )


def _snapshot_pair(kept: torch.Tensor | None) -> tuple[np.ndarray | None, Any]:
    """The host array of a kept H×W×3 snapshot tensor, and the tensor itself when on a GPU."""
    if kept is None:
        return None, None
    if kept.device.type == "cpu":
        return kept.numpy(), None  # a fresh tensor: the array shares memory with nothing reused
    return kept.cpu().numpy(), kept


def _drop_failed_frames(exc: BaseException) -> None:
    """Clear the finished frames of ``exc``'s traceback.

    The exception (kept as the ``DeviceError``'s cause, and by whoever catches that) would
    otherwise pin the failed step's locals: its output, loss and so the whole autograd graph,
    which no ``empty_cache`` can then give back.
    """
    traceback.clear_frames(exc.__traceback__)  # frames still running are skipped


class _Inverter:
    """Device state of one inversion: network, optimiser, z, target, P and gamma.

    Everything that holds device memory is an attribute so that :meth:`release` can drop it.
    """

    def __init__(
        self,
        img01: np.ndarray,
        P: np.ndarray,
        config: DIPConfig,
        device: torch.device,
        speed: SpeedSettings,
    ) -> None:
        self.device = device
        self.config = config
        self.height, self.width = img01.shape[:2]
        self._saved_globals = _set_cuda_globals(speed) if device.type == "cuda" else None
        try:
            self._allocate(img01, P, config, device, speed)
        except BaseException as exc:
            # nobody will call release() on a half-built object: restore the cuDNN/TF32 globals
            # and give back what was allocated so far
            _drop_failed_frames(exc)
            try:
                self.release()
            except Exception as cleanup:  # noqa: BLE001 - the allocation error explains more
                exc.add_note(f"(cleaning up after it also failed: {cleanup!r})")
            raise

    def _allocate(
        self,
        img01: np.ndarray,
        P: np.ndarray,
        config: DIPConfig,
        device: torch.device,
        speed: SpeedSettings,
    ) -> None:
        import torch

        from .network import MultiResUNet

        # initial weights from the seed, without disturbing the caller's global RNG state
        fork_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(config.seed)
            model = MultiResUNet(
                in_channels=config.z_channels,
                out_channels=3,
                widths=config.widths,
                skip_widths=config.residual_widths,
            )
        self.model = model.to(device)
        layout = torch.channels_last if speed.channels_last else torch.contiguous_format
        if speed.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if speed.compile else self.model
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(config.seed))
        ph, pw = self.model.padded_size(self.height, self.width)
        # z and the perturbation buffer are drawn in memory order, so channels-last costs no copy
        self.z = self._randn((1, config.z_channels, ph, pw), layout).mul_(config.z_std)
        self.noisy_z = torch.empty_like(self.z)
        self.target = torch.from_numpy(np.ascontiguousarray(img01.transpose(2, 0, 1))[None]).to(
            device
        )
        self.P = torch.from_numpy(np.ascontiguousarray(P)[None, None]).to(device)
        self.gamma = torch.nn.Parameter(torch.zeros((), device=device))
        params = list(self.model.parameters())
        if config.gamma_mode == "adam":
            params.append(self.gamma)  # the old way: gamma learned with the weights
        self.optimizer = _adam(params, config.lr, device)
        self.amp_dtype = getattr(torch, speed.amp_dtype) if speed.amp_dtype else None
        self.scaler = torch.amp.GradScaler("cuda") if speed.grad_scaler else None
        self.layout = layout
        self.tau = float(config.tau_psnr)

    def _randn(self, shape: tuple[int, int, int, int], layout: Any) -> torch.Tensor:
        import torch

        if layout is torch.channels_last:
            n, c, h, w = shape
            return torch.randn(
                (n, h, w, c), generator=self.generator, device=self.device
            ).permute(0, 3, 1, 2)
        return torch.randn(shape, generator=self.generator, device=self.device)

    def step(self) -> tuple[float, float, float, float, torch.Tensor | None]:
        """One Adam step; returns loss, PSNR of I_phi, gamma, gamma* and the snapshot if kept.

        Built from the pieces that :mod:`dippas_core.dip.batched` also calls per tile
        (:meth:`perturb`, :meth:`loss_of`, :meth:`after_update`, :meth:`report`), so that N tiles
        in one step follow exactly the rule of one inversion.
        """
        import torch

        self.perturb()
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            out = self.forward(self.noisy_z, (self.height, self.width))
        i_phi = out.float()
        loss = self.loss_of(i_phi)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.after_update()
        # the only host synchronisation of the iteration: the scalars in one transfer
        loss_v, psnr_v, gamma_v, star_v = self.report(i_phi, loss).tolist()
        snapshot = self.snapshot(i_phi) if psnr_v >= self.tau else None
        return float(loss_v), float(psnr_v), float(gamma_v), float(star_v), snapshot

    def perturb(self) -> None:
        """Draw this iteration's input ``z + perturb_std · noise`` into :attr:`noisy_z`."""
        import torch

        noise = self._randn(tuple(self.z.shape), self.layout)
        torch.add(self.z, noise, alpha=self.config.perturb_std, out=self.noisy_z)

    def loss_of(self, i_phi: torch.Tensor) -> torch.Tensor:
        """The loss of eq. 9 for the generator's output ``i_phi`` (1×3×H×W float32).

        Also fixes this step's gamma and gamma* (:meth:`_gammas`), which :meth:`report` gives.
        """
        self._step_gamma, self._step_star = self._gammas(i_phi)
        return camera_model_loss(i_phi, self._step_gamma, self.P, self.target)

    def _gammas(self, i_phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gamma that multiplies ``P`` in this iteration's loss, and this output's gamma*.

        ``"lsq"``: the clamped least-squares gamma* of this very output (variable projection; a
        constant to autograd — at the optimum dJ/dgamma = 0, so its own gradient would add
        nothing). ``"adam"``: the learned parameter.
        """
        star = least_squares_gamma(i_phi.detach(), self.P, self.target)[0]
        if self.config.gamma_mode == "lsq":
            return star.clamp(min=0.0), star
        return self.gamma, star

    def after_update(self) -> None:
        """What follows the optimiser step: a learned gamma (``"adam"``) kept ``>= 0``."""
        import torch

        if self.config.gamma_mode == "adam":
            with torch.no_grad():
                self.gamma.clamp_(min=0.0)
            self._step_gamma = self.gamma  # the value after the update

    def report(self, i_phi: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """The step's loss, PSNR (dB) of ``i_phi``, gamma and gamma*: one tensor on the device."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            psnr = -10.0 * torch.log10(F.mse_loss(i_phi.detach(), self.target))
            return torch.stack(
                [loss.detach(), psnr, self._step_gamma.detach(), self._step_star.detach()]
            )

    @staticmethod
    def snapshot(i_phi: torch.Tensor) -> torch.Tensor:
        """``i_phi`` as a fresh H×W×3 tensor on the 0..255 scale (shares memory with nothing)."""
        import torch

        with torch.no_grad():
            return (i_phi.detach()[0] * 255.0).permute(1, 2, 0).contiguous()

    def release(self) -> None:
        """Drop every tensor, the model and the optimiser; give cached device memory back."""
        # torch is loaded (this object holds its tensors); no import here, so release also works
        # when an abandoned generator is collected at interpreter shutdown
        torch = sys.modules.get("torch")
        saved = self._saved_globals
        for name in list(vars(self)):
            if name not in ("device", "config"):
                delattr(self, name)
        if torch is None or self.device.type == "cpu":
            # reference counting already freed the tensors; a full collection would hold the
            # GIL for hundreds of ms in a big process (napari) and stall the GUI thread
            return
        gc.collect()  # cycles may still pin device memory that empty_cache cannot return
        if self.device.type == "cuda":
            try:
                torch.cuda.empty_cache()
            finally:
                _restore_cuda_globals(saved)
        elif self.device.type == "mps":
            torch.mps.empty_cache()


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


def camera_model_loss(
    i_phi: torch.Tensor, gamma: torch.Tensor, P: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``MSE(i_phi · (1 + gamma · P), target)``: the fit through the camera model (eq. 9)."""
    import torch.nn.functional as F

    return F.mse_loss(i_phi * (1.0 + gamma * P), target)


def least_squares_gamma(
    i_phi: torch.Tensor, P: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``argmin_gamma ||i_phi·(1 + gamma·P) − target||²`` per batch item (no clamp).

    Closed form ``<i_phi·P, target − i_phi> / <i_phi·P, i_phi·P>``, reduced over every dimension
    but the first; ``P`` broadcasts (N×1×H×W or 1×1×H×W against N×3×H×W).  0 where
    ``i_phi·P`` is identically zero.  Returns a float tensor of shape (N,) on the inputs' device.
    """
    injected = i_phi * P
    dims = tuple(range(1, i_phi.ndim))
    num = (injected * (target - i_phi)).sum(dims)
    den = injected.square().sum(dims)
    return num / den.clamp(min=float(np.finfo(np.float32).tiny))


def _adam(params: list, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam with AMSGrad (method §4); the fused kernel on CUDA where this torch has it."""
    import torch

    if device.type == "cuda":
        try:
            return torch.optim.Adam(params, lr=lr, amsgrad=True, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=lr, amsgrad=True)


def _set_cuda_globals(speed: SpeedSettings) -> dict[str, Any]:
    import torch

    saved = {
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    torch.backends.cuda.matmul.allow_tf32 = speed.tf32
    torch.backends.cudnn.allow_tf32 = speed.tf32
    torch.backends.cudnn.benchmark = True  # one input size for thousands of iterations
    return saved


def _restore_cuda_globals(saved: dict[str, Any] | None) -> None:
    import torch

    if not saved:
        return
    torch.backends.cuda.matmul.allow_tf32 = saved["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = saved["cudnn_tf32"]
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]


def _oom_message(shape: tuple[int, ...], config: DIPConfig, device: torch.device) -> str:
    h, w = shape[:2]
    hints = [
        f"crop the image (it is {h}×{w}; the paper uses 512×512)",
        f"narrow the network (widths={list(config.widths)}, e.g. DIPConfig.preset('cpu'))",
        f"use fewer input channels (z_channels={config.z_channels}, e.g. 64)",
    ]
    if config.amp_mode == "off":
        hints.append("turn mixed precision on (amp=True)")
    return f"out of memory on {device}: " + "; ".join(hints)


def _environment(device: torch.device, speed: SpeedSettings) -> dict[str, Any]:
    import torch

    from .. import __version__

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "dippas_core": __version__,
        "device": device_name(device),
        "torch_threads": torch.get_num_threads(),
        **speed.to_dict(),
        # read after _Inverter set them: what the steps really ran with
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def run_to_end(gen: Generator[Step, None, InversionResult]) -> InversionResult:
    """Drain an :func:`invert` generator (snapshots are dropped) and return its result."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value

