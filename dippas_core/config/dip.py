"""Settings of one DIP inversion (no torch import: usable by the CLI, the viewer and reports)."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any

from .._validation import check_known_fields
from ..errors import InputError
from .presets import PRESETS

_MAX_THREADS = max(1, os.cpu_count() or 1)

__all__ = ["DIPConfig", "GAMMA_MODES", "MIN_WIDTH"]

_AMP_MODES = ("auto", "off", "bf16", "fp16")
_LAYOUT_MODES = ("auto", "off", "on")
#: How gamma is fitted: ``"lsq"`` its least-squares value for each iteration's output,
#: ``"adam"`` learned by Adam with the network weights (the authors' code; dies at lr 1e-2).
GAMMA_MODES = ("lsq", "adam")
#: The generator's output layer (``network.OUTPUTS``): ``"linear"`` has no dead zone.
OUTPUTS = ("linear", "sigmoid")
#: How the generator goes up a scale (``network.UPSAMPLING``).
UPSAMPLING = ("bilinear", "nearest", "bilinear-top")
#: Narrowest MultiRes block: W = 1.67·U is split into floor(0.167 W), floor(0.333 W), floor(0.5 W)
#: channels (``network.multires_split``), and U = 3 already leaves the first branch empty.
MIN_WIDTH = 4


@dataclass(frozen=True)
class DIPConfig:
    """Parameters of the DIP inversion (method §4); JSON-serialisable with :meth:`to_dict`.

    Parameters
    ----------
    seed : int
        Fixes the input noise ``z``, the per-iteration perturbations and the initial weights.
    record_psnr : float
        The recording threshold: outputs ``I_phi`` with PSNR (dB, against the photo)
        ``>= record_psnr`` are kept as snapshots.  At most ``stop_psnr``; ``-inf`` keeps every
        output.  (Not the assembly's ``tau``, which picks among the snapshots kept.)
    stop_psnr : float
        The inversion stops once the PSNR reaches this value (dB); ``inf``: only at ``max_iter``.
    max_iter : int
        Hard cap on the number of iterations.
    lr : float
        Adam learning rate (amsgrad) of the network weights (and of ``gamma`` when
        ``gamma_mode="adam"``).
    gamma_mode : str
        How the injection strength ``gamma`` of ``I_phi · (1 + gamma · P)`` is fitted.
        ``"lsq"`` (default): at every iteration the least-squares gamma of that iteration's
        output, clamped at 0 (variable projection, ``docs/dip.md``). ``"adam"``: a parameter
        learned with the weights, clamped at 0 after each step (the paper's description; at
        ``lr = 1e-2`` it sits at 0 through the whole recording phase).
    z_channels : int
        Channels of the fixed input noise ``z`` (the paper: 512).
    z_std, perturb_std : float
        Standard deviation of ``z`` and of the fresh noise added to it at every iteration.
    widths : tuple of int
        ``U`` of the MultiRes block at each scale (each >= 4); its length is the number of scales.
    skip_widths : tuple of int or None
        Channels of the residual path at each of the ``len(widths) - 1`` upper scales;
        ``None`` means ``widths[:-1]`` (the paper: 16, 32, 64, 128).
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    amp : bool or str
        Mixed precision. ``True``/``"auto"``: bf16 autocast on CUDA GPUs with native bf16
        (compute capability >= 8), else fp16 with a gradient scaler; off on CPU and MPS (bf16
        autocast is slower there, see ``benchmarks/bench_dip.py``). ``"bf16"``/``"fp16"`` force
        that dtype on any device, ``False``/``"off"`` keeps float32.
    channels_last : bool or str
        Memory layout. ``True``/``"auto"``: channels-last on CUDA and the CPU (faster in most CPU
        runs of ``benchmarks/bench_dip.py``), not on MPS; ``"on"`` everywhere; ``False``/``"off"``
        never.
    compile : bool
        Wrap the network in ``torch.compile`` (worth it on CUDA for long runs).
    torch_threads : int or None
        When set, ``torch.set_num_threads`` for the duration of the run (restored afterwards).
        ``None`` leaves the caller's setting; cap it when Numba or Dask workers share the CPU.
    tiles_per_step : int or "auto"
        When a photo is inverted tile by tile (:func:`dippas_core.dip.batched.invert_tiles`):
        how many tiles are trained in one optimiser step, each its own network.  ``"auto"``
        picks N from the free GPU memory, or from a short measurement on the CPU.
    output : {"sigmoid", "linear"}
        The generator's output layer: the paper's sigmoid, or its tangent at 0 (``0.5 + h/4``)
        whose image is clipped to [0, 1] (no unit can saturate and stop learning: no stuck
        pixels).
    upsample : {"nearest", "bilinear", "bilinear-top"}
        How the generator goes up a scale: the paper's nearest-neighbour ×2, bilinear (no 2×2
        blocks for the decoder to smooth away: no grids on flat skies, but fine texture fits far
        slower), or ``"bilinear-top"``: bilinear into the full-resolution scale only (no
        row-period stripes along soft edges), nearest below.
    zero_head : bool
        Start the generator's last convolution at zero, so its first output is flat (with
        ``low_pass_sigma``: exactly the photo's low band) and the fit adds detail from there,
        instead of first undoing the random texture of an untrained network.
    guide : bool
        Give the generator the photo's low band (a Gaussian of ``low_pass_sigma``, else 2 px)
        as three more input channels beside ``z``: it sees where the edges are and fits the
        image's detail in fewer iterations.  The low band carries next to none of the camera
        pattern, which stays for the network to learn last, as in the paper.
    require_fidelity : bool
        An output is kept as a snapshot, and may end the fit, only when it also meets the local
        fidelity bars (``dippas_core.fidelity.BARS``: no pixel more than 40 levels off, at most
        0.05 % more than 20 off, no 16×16 window's mean colour moved by more than 2 levels):
        PSNR alone lets a blurred edge or a tinted patch through.
    low_pass_sigma : float or None
        When set, every output is recorded and judged (PSNR, snapshots, stopping) with its low
        frequencies taken from the photo: ``I_phi − G_sigma * (I_phi − I)``, a Gaussian of this
        many pixels (method §4).  The camera pattern lives at the noise's frequencies; the
        network's slow low-frequency error (colour blobs on flat skies) never reaches the image.
        ``None``: the output as it is (the paper).
    """

    seed: int = 0
    record_psnr: float = 38.0
    stop_psnr: float = 39.0
    max_iter: int = 10000
    lr: float = 1e-3
    gamma_mode: str = "lsq"
    z_channels: int = 512
    z_std: float = 0.1
    perturb_std: float = 0.1
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    skip_widths: tuple[int, ...] | None = None
    device: str = "auto"
    amp: bool | str = True
    channels_last: bool | str = True
    compile: bool = False
    torch_threads: int | None = None
    tiles_per_step: int | str = 1
    output: str = "sigmoid"
    upsample: str = "nearest"
    zero_head: bool = False
    guide: bool = False
    require_fidelity: bool = False
    low_pass_sigma: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.skip_widths is not None:
            object.__setattr__(self, "skip_widths", tuple(int(w) for w in self.skip_widths))
        self.validate()

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`~dippas_core.errors.InputError` naming the first bad field."""
        if len(self.widths) < 1 or any(w < MIN_WIDTH for w in self.widths):
            raise InputError(
                f"widths must be one or more integers >= {MIN_WIDTH} (a MultiRes block with "
                f"U < {MIN_WIDTH} has an empty convolution), got {self.widths}"
            )
        if self.skip_widths is not None and (
            len(self.skip_widths) != len(self.widths) - 1 or any(w < 0 for w in self.skip_widths)
        ):
            raise InputError(
                f"skip_widths needs {len(self.widths) - 1} values >= 0 (one per upper scale), "
                f"got {self.skip_widths}"
            )
        for name in ("lr", "z_std"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not float(self.perturb_std) >= 0:
            raise InputError(f"perturb_std must be >= 0, got {self.perturb_std!r}")
        for name in ("record_psnr", "stop_psnr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InputError(f"{name} must be a number of dB, got {value!r}")
            if math.isnan(value):
                raise InputError(f"{name} must be a number of dB, got NaN")
        if self.record_psnr > self.stop_psnr:
            # the inversion would stop before any output is good enough to keep
            raise InputError(
                f"record_psnr ({self.record_psnr} dB) must not exceed stop_psnr "
                f"({self.stop_psnr} dB): the run would stop before it keeps a snapshot"
            )
        if self.output not in OUTPUTS:
            raise InputError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.upsample not in UPSAMPLING:
            raise InputError(f"upsample must be one of {UPSAMPLING}, got {self.upsample!r}")
        lps = self.low_pass_sigma
        if lps is not None and (
            isinstance(lps, bool) or not isinstance(lps, numbers.Real) or not 0 < lps <= 64
        ):
            raise InputError(f"low_pass_sigma must be None or a number of pixels in (0, 64], "
                             f"got {lps!r}")
        if self.gamma_mode not in GAMMA_MODES:
            raise InputError(f"gamma_mode must be one of {GAMMA_MODES}, got {self.gamma_mode!r}")
        if int(self.max_iter) < 1:
            raise InputError(f"max_iter must be >= 1, got {self.max_iter!r}")
        if int(self.z_channels) < 1:
            raise InputError(f"z_channels must be >= 1, got {self.z_channels!r}")
        if self.torch_threads is not None and not 1 <= int(self.torch_threads) <= _MAX_THREADS:
            # torch crashes (segmentation fault) on absurd counts; more than the cores only slows
            raise InputError(
                f"torch_threads must be None or 1..{_MAX_THREADS} (this machine's cores), got "
                f"{self.torch_threads!r}"
            )
        tps = self.tiles_per_step
        if tps != "auto" and (isinstance(tps, bool) or not isinstance(tps, int) or tps < 1):
            raise InputError(f"tiles_per_step must be an integer >= 1 or 'auto', got {tps!r}")
        self.amp_mode  # noqa: B018 - raises on a bad value
        self.layout_mode  # noqa: B018

    @property
    def amp_mode(self) -> str:
        """``amp`` as one of ``"auto"``, ``"off"``, ``"bf16"``, ``"fp16"``."""
        mode = {True: "auto", False: "off"}.get(self.amp, self.amp)
        if mode not in _AMP_MODES:
            raise InputError(f"amp must be True, False or one of {_AMP_MODES}, got {self.amp!r}")
        return mode

    @property
    def layout_mode(self) -> str:
        """``channels_last`` as one of ``"auto"``, ``"off"``, ``"on"``."""
        mode = {True: "auto", False: "off"}.get(self.channels_last, self.channels_last)
        if mode not in _LAYOUT_MODES:
            raise InputError(
                f"channels_last must be True, False or one of {_LAYOUT_MODES}, "
                f"got {self.channels_last!r}"
            )
        return mode

    @property
    def residual_widths(self) -> tuple[int, ...]:
        """Channels of the residual paths (``skip_widths`` or ``widths[:-1]``)."""
        return self.skip_widths if self.skip_widths is not None else self.widths[:-1]

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DIPConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they are likely typos).

        Reads the name older versions wrote for the recording threshold (``tau_psnr``).
        """
        kwargs = dict(data)
        if "tau_psnr" in kwargs:
            old = kwargs.pop("tau_psnr")
            if kwargs.setdefault("record_psnr", old) != old:
                raise InputError(
                    f"record_psnr given twice, as {kwargs['record_psnr']!r} and as tau_psnr "
                    f"{old!r}"
                )
        check_known_fields(cls, kwargs, "DIPConfig field(s)")
        for key in ("widths", "skip_widths"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> DIPConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def coerce(cls, config: DIPConfig | dict | None) -> DIPConfig:
        """``config`` as a :class:`DIPConfig`: None gives the defaults, a dict goes through
        :meth:`from_dict`; anything else is an :class:`InputError`."""
        if config is None:
            return cls()
        if isinstance(config, dict):
            return cls.from_dict(config)
        if not isinstance(config, cls):
            raise InputError(f"config must be a DIPConfig or a dict, got {type(config).__name__}")
        return config

    @classmethod
    def preset(cls, name: str, **changes: Any) -> DIPConfig:
        """The DIP part of the preset ``name`` (:data:`~dippas_core.config.PRESETS`), with some
        fields changed: ``AnonymizeConfig.preset(name).dip``.

        ``"paper"``: the published setup (512-channel z, U = 16…256, stop at 39 dB).
        ``"cpu"``: a narrower network and 32-channel z that runs a 256×256 tile on a laptop CPU
        in minutes. ``"tiny"``: for tests and demos, ≈64×64 in seconds.
        """
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        check_known_fields(cls, changes, "DIPConfig field(s)")
        return cls(**{**PRESETS[name]["dip"], **changes})
