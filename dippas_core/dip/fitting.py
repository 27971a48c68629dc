"""The fit of one inversion on its device: network, optimiser, loss of eq. 9, gamma (method §4).

:class:`Inverter` holds the device state of one inversion and makes one optimiser step at a time;
:class:`~dippas_core.dip.inversion.Inversion` drives it, :mod:`dippas_core.dip.batched` steps
several at once.  Everything here imports torch inside its functions.
"""

from __future__ import annotations

import gc
import math
import platform
import sys
import traceback
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import DIPConfig
from .device import SpeedSettings, device_name

if TYPE_CHECKING:
    import torch

__all__ = ["camera_model_loss", "least_squares_gamma"]

#: Gaussian sigma (pixels) of the guide's low band when the config sets no ``low_pass_sigma``.
GUIDE_SIGMA = 2.0


def snapshot_pair(kept: torch.Tensor | None) -> tuple[np.ndarray | None, Any]:
    """The host array of a kept H×W×3 snapshot tensor, and the tensor itself when on a GPU."""
    if kept is None:
        return None, None
    if kept.device.type == "cpu":
        return kept.numpy(), None  # a fresh tensor: the array shares memory with nothing reused
    return kept.cpu().numpy(), kept


def drop_failed_frames(exc: BaseException) -> None:
    """Clear the finished frames of ``exc``'s traceback.

    The exception (kept as the ``DeviceError``'s cause, and by whoever catches that) would
    otherwise pin the failed step's locals: its output, loss and so the whole autograd graph,
    which no ``empty_cache`` can then give back.
    """
    traceback.clear_frames(exc.__traceback__)  # frames still running are skipped


class Inverter:
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
        fidelity_from: float | None = None,
    ) -> None:
        self.device = device
        self.config = config
        self.fidelity_from = bars_checked_from(config, fidelity_from)
        self.height, self.width = img01.shape[:2]
        self._saved_globals = set_cuda_globals(speed) if device.type == "cuda" else None
        try:
            self._allocate(img01, P, speed)
        except BaseException as exc:
            # nobody will call release() on a half-built object: restore the cuDNN/TF32 globals
            # and give back what was allocated so far
            drop_failed_frames(exc)
            try:
                self.release()
            except Exception as cleanup:  # noqa: BLE001 - the allocation error explains more
                exc.add_note(f"(cleaning up after it also failed: {cleanup!r})")
            raise

    def _allocate(self, img01: np.ndarray, P: np.ndarray, speed: SpeedSettings) -> None:
        """Build the network, optimiser and tensors on :attr:`device` from :attr:`config`."""
        import torch

        config, device = self.config, self.device

        from .network import MultiResUNet

        # initial weights from the seed, without disturbing the caller's global RNG state
        fork_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(config.seed)
            model = MultiResUNet(
                in_channels=config.z_channels + (3 if config.guide else 0),
                out_channels=3,
                widths=config.widths,
                skip_widths=config.residual_widths,
                output=config.output,
                upsample=config.upsample,
                zero_head=bool(config.zero_head),
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
        self.target = torch.from_numpy(np.ascontiguousarray(img01.transpose(2, 0, 1))[None]).to(
            device
        )
        if config.guide:
            # the photo's low band as three more input channels, fixed (not perturbed)
            taps = _gaussian_taps(float(config.low_pass_sigma or GUIDE_SIGMA), device)
            guide = _blur(self.target, taps) - 0.5
            mode = "reflect" if ph - self.height < self.height and pw - self.width < self.width \
                else "replicate"
            guide = torch.nn.functional.pad(
                guide, (0, pw - self.width, 0, ph - self.height), mode=mode
            )
            self.noisy_z = torch.cat([torch.empty_like(self.z), guide], dim=1).contiguous(
                memory_format=layout
            )
        else:
            self.noisy_z = torch.empty_like(self.z)
        self.P = torch.from_numpy(np.ascontiguousarray(P)[None, None]).to(device)
        self.gamma = torch.nn.Parameter(torch.zeros((), device=device))
        params = list(self.model.parameters())
        if config.gamma_mode == "adam":
            params.append(self.gamma)  # the old way: gamma learned with the weights
        self.optimizer = _adam(params, config.lr, device)
        self.amp_dtype = getattr(torch, speed.amp_dtype) if speed.amp_dtype else None
        self.scaler = torch.amp.GradScaler("cuda") if speed.grad_scaler else None
        self.layout = layout
        self.tau = float(config.record_psnr)
        self.low_pass = (
            _gaussian_taps(float(config.low_pass_sigma), device)
            if config.low_pass_sigma
            else None
        )
        from ..fidelity import checker_reference

        self._checker_reference = (
            torch.from_numpy(checker_reference(img01 * 255.0)).to(device)
            if config.require_fidelity
            else None
        )
        self._shown: torch.Tensor | None = None
        #: Whether the last step's output meets the local fidelity bars (always True when the
        #: config does not require them; None below :attr:`fidelity_from`, where they are not
        #: measured): only outputs that meet them are kept and may end the fit.
        self.looks_same: bool | None = True

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
        # the host synchronisation of the iteration: the scalars in one transfer (and a second
        # one for the bars where they are measured)
        loss_v, psnr_v, gamma_v, star_v = self.report(i_phi, loss).tolist()
        self.looks_same = (
            bool(self.bars().item()) if self.measures_bars(psnr_v) else self.unmeasured_bars()
        )
        snapshot = self.snapshot(i_phi) if self.keeps(psnr_v) else None
        return float(loss_v), float(psnr_v), float(gamma_v), float(star_v), snapshot

    def keeps(self, psnr: float) -> bool:
        """Whether this step's output is a snapshot: its PSNR at the recording threshold and,
        when required, the local fidelity bars met (:attr:`looks_same`).  A threshold of
        ``-inf`` keeps every output (a consumer that filters them itself)."""
        return self.tau == -math.inf or (psnr >= self.tau and bool(self.looks_same))

    def ends(self, psnr: float) -> bool:
        """Whether the fit may stop after this step: ``stop_psnr`` reached by an output that
        meets the fidelity bars when they are required."""
        return psnr >= self.config.stop_psnr and bool(self.looks_same)

    def measures_bars(self, psnr: float) -> bool:
        """Whether this step's output is checked against the local fidelity bars: the config
        requires them and its PSNR reached :attr:`fidelity_from` (below it nobody keeps the
        output, so the check — 6–8 % of a 256-px iteration on a CPU — would be spent for
        nothing)."""
        return bool(self.config.require_fidelity) and psnr >= self.fidelity_from

    def bars(self) -> torch.Tensor:
        """:func:`meets_local_bars` of the last step's output (1/0 on the device)."""
        return meets_local_bars(self._shown, self.target, self._checker_reference)

    def unmeasured_bars(self) -> bool | None:
        """:attr:`looks_same` of an output not checked: True when no bars are required, None
        (not measured) below :attr:`fidelity_from`."""
        return None if self.config.require_fidelity else True

    def perturb(self) -> None:
        """Draw this iteration's input ``z + perturb_std · noise`` into :attr:`noisy_z`."""
        import torch

        noise = self._randn(tuple(self.z.shape), self.layout)
        if self.config.guide:
            zc = self.z.shape[1]
            self.noisy_z[:, :zc] = torch.add(self.z, noise, alpha=self.config.perturb_std)
        else:
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

    def shown(self, i_phi: torch.Tensor) -> torch.Tensor:
        """The image an output stands for: clipped to [0, 1], its low band the photo's when
        ``low_pass_sigma`` is set (``I_phi − G * (I_phi − I)``, method §4)."""
        import torch

        with torch.no_grad():
            out = i_phi.detach()
            if self.low_pass is not None:
                out = out - _blur(out - self.target, self.low_pass)
            return out.clamp(0.0, 1.0)

    def report(self, i_phi: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """The step's loss, PSNR (dB) of the image shown (:meth:`shown`), gamma and gamma*:
        one tensor on the device.  The image is kept for :meth:`snapshot` and the bars
        (:func:`meets_local_bars`)."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            self._shown = self.shown(i_phi)
            psnr = -10.0 * torch.log10(F.mse_loss(self._shown, self.target))
            return torch.stack(
                [loss.detach(), psnr, self._step_gamma.detach(), self._step_star.detach()]
            )

    def snapshot(self, i_phi: torch.Tensor) -> torch.Tensor:
        """This step's image (:meth:`shown`, from :meth:`report`) as a fresh H×W×3 tensor on the
        0..255 scale (shares memory with nothing)."""
        import torch

        shown = self._shown if self._shown is not None else self.shown(i_phi)
        with torch.no_grad():
            return (shown[0] * 255.0).permute(1, 2, 0).contiguous()

    def release(self) -> None:
        """Drop every tensor, the model and the optimiser; give cached device memory back."""
        # torch is loaded (this object holds its tensors); no import here, so release also works
        # when an abandoned inversion is collected at interpreter shutdown
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
                restore_cuda_globals(saved)
        elif self.device.type == "mps":
            torch.mps.empty_cache()



def bars_checked_from(config: DIPConfig, fidelity_from: float | None = None) -> float:
    """The PSNR from which an inversion checks its outputs against the local fidelity bars.

    ``fidelity_from`` when given (a consumer that keeps every output, ``record_psnr = -inf``,
    and filters them at its own threshold: the tiles of a photo); else ``record_psnr``, the
    lowest PSNR at which an output may be kept or end the fit (``stop_psnr`` is never below it).
    """
    return float(config.record_psnr if fidelity_from is None else fidelity_from)


def meets_local_bars(shown: torch.Tensor, target: torch.Tensor,
                     checker_reference: torch.Tensor | None = None) -> torch.Tensor:
    """1.0 when the image ``shown`` (N×3×H×W, 0..1) keeps every local fidelity bar against
    ``target`` — no pixel more than ``max_abs`` levels off, at most ``share_off`` of them more
    than 20 off, no 16×16 window's mean colour moved by more than ``colour_shift``, no 64×64
    window's change concentrated at the pixel period (``checkerboard``) — else 0.0.

    The same measures as :func:`dippas_core.fidelity.fidelity`, on the device: window means from
    an integral image (two cumulative sums), the windows' spectra in one batched FFT, so it costs
    a small part of an iteration.  Measured on the image as it will be written (rounded to 8-bit
    levels), with the colour shift and checkerboard bars times ``FIT_MARGIN``: the stitch of two
    tiles may add a little to either.  ``checker_reference``: the photo's own per window
    (:func:`dippas_core.fidelity.checker_reference` of ``target``), as the report measures it.
    """
    import torch

    from ..fidelity import BARS, FIT_MARGIN, OFF_LEVELS, SHIFT_WINDOW

    d = torch.round(shown * 255.0) - target * 255.0
    ad = d.abs()
    ok = ad.amax() <= BARS["max_abs"]
    ok = ok & ((ad > OFF_LEVELS).any(dim=1).float().mean() <= BARS["share_off"])
    h, w = d.shape[-2:]
    wy, wx = min(SHIFT_WINDOW, h), min(SHIFT_WINDOW, w)
    c = torch.nn.functional.pad(d.double().cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    box = c[..., wy:, wx:] - c[..., :-wy, wx:] - c[..., wy:, :-wx] + c[..., :-wy, :-wx]
    ok = ok & (box.abs().amax() / (wy * wx) <= FIT_MARGIN * BARS["colour_shift"])
    checker = checkerboard_energy(d, checker_reference)
    ok = ok & (checker <= FIT_MARGIN * BARS["checkerboard"])
    return ok.float()


def checkerboard_energy(d: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`dippas_core.fidelity.checkerboard_energy` of the change ``d`` (N×3×H×W, levels) on
    its device: the worst window's energy near the Nyquist points over a flat spectrum's, each
    window's divided by ``reference`` (one per window, in the same order) when given."""
    import torch

    from ..fidelity import CHECKER_MIN_AMPLITUDE, CHECKER_WINDOW, checker_windows, nyquist_band

    corners, wy, wx, radius = checker_windows(tuple(d.shape[-2:]), CHECKER_WINDOW)
    win = torch.stack([d[..., y:y + wy, x:x + wx] for y, x in corners], dim=1).double()
    win = win - win.mean(dim=(-2, -1), keepdim=True)  # N×K×3×wy×wx, each channel mean-free
    hann = np.outer(np.hanning(wy), np.hanning(wx))
    taper = torch.from_numpy(hann).to(win.device)
    spec = torch.fft.fft2(win * taper).abs() ** 2
    band = nyquist_band(wy, wx, radius)
    total = spec.sum(dim=(-3, -2, -1))
    in_band = (spec * torch.from_numpy(band).to(win.device)).sum(dim=(-3, -2, -1))
    share = in_band / total.clamp_min(1e-30) / float(band.mean())
    value = share / reference if reference is not None else share
    # fidelity._visible: the part above 1 in full only from a pattern of 2 levels on
    mean_square = in_band / ((wy * wx) ** 2 * d.shape[-3] * float(np.mean(hann**2)))
    excess = mean_square * (1.0 - 1.0 / share.clamp_min(1e-30))
    faint = 1.0 + (value - 1.0) * (excess / CHECKER_MIN_AMPLITUDE**2).clamp(max=1.0)
    value = torch.where((value > 1.0) & (share > 1.0), faint, value)
    return torch.where(total > 0, value, torch.zeros_like(value)).amax()


def _gaussian_taps(sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian taps of ``sigma`` pixels (radius 3 sigma) on ``device``."""
    import torch

    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).to(device)


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of N×C×H×W ``x`` with mirrored borders (each channel alone)."""
    import torch.nn.functional as F

    n, c, h, w = x.shape
    r = taps.numel() // 2
    mode = "reflect" if r < min(h, w) else "replicate"
    y = F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode=mode)
    y = F.conv2d(y, taps.view(1, 1, 1, -1))
    y = F.conv2d(y, taps.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


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


def set_cuda_globals(speed: SpeedSettings) -> dict[str, Any]:
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


def restore_cuda_globals(saved: dict[str, Any] | None) -> None:
    import torch

    if not saved:
        return
    torch.backends.cuda.matmul.allow_tf32 = saved["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = saved["cudnn_tf32"]
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]


def oom_message(shape: tuple[int, ...], config: DIPConfig, device: torch.device) -> str:
    h, w = shape[:2]
    hints = [
        f"crop the image (it is {h}×{w}; the paper uses 512×512)",
        f"narrow the network (widths={list(config.widths)}, e.g. DIPConfig.preset('cpu'))",
        f"use fewer input channels (z_channels={config.z_channels}, e.g. 64)",
    ]
    if config.amp_mode == "off":
        hints.append("turn mixed precision on (amp=True)")
    return f"out of memory on {device}: " + "; ".join(hints)


def run_environment(device: torch.device, speed: SpeedSettings) -> dict[str, Any]:
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
        # read after Inverter set them: what the steps really ran with
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env
