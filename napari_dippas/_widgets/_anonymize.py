"""Anonymize dock widget: run (and stop) the DIP inversion while watching it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from .._layers import anonymized_layer, block_heatmap_layer, dippas_kind, snapshots_layer
from .._models import AnonymizeJob, AnonymizeSettings, RunHistory, StepSummary
from .._workers import start_job
from ._attribution import is_photo, is_plane
from ._common import DockWidget, LayerChoice, LivePlot, PathEdit, upsert_layer

if TYPE_CHECKING:
    import napari

__all__ = ["AnonymizeWidget", "DEFAULT_RUNS_FOLDER", "device_choices"]

DEFAULT_RUNS_FOLDER = Path.home() / "dippas-runs"
#: seconds between two updates of the live plot (a blit: a few ms)
PLOT_INTERVAL_S = 0.3
#: seconds between two updates of the snapshots layer (new data re-slices the layer: tens of ms)
LAYER_INTERVAL_S = 1.0


def device_choices() -> tuple[list[str], list[str]]:
    """``(choices, descriptions)``: ``auto`` plus each device torch finds, and one line each."""
    from dippas_core.dip.device import describe_devices

    lines = describe_devices()
    names = [line.split()[0] for line in lines]
    return ["auto", *dict.fromkeys(names)], lines


def _ncc_from_tile_sums(sums: np.ndarray) -> np.ndarray:
    """Whole-image NCC of each snapshot from its per-tile sums (n×Th×Tw×3 → n)."""
    total = sums.sum(axis=(1, 2))
    den = np.sqrt(total[:, 1] * total[:, 2])
    return np.divide(total[:, 0], den, out=np.zeros_like(den), where=den > 0)


class AnonymizeWidget(DockWidget):
    """Run the DIPPAS inversion on a photo layer; Run turns into Stop while it runs.

    The scriptable state is in :attr:`settings` (:class:`AnonymizeSettings`, edits show in the
    form), :attr:`job` (:class:`AnonymizeJob`) and :attr:`history` (:class:`RunHistory`).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer.
    """

    #: emitted on the main thread with the run folder when a run ends (finished or stopped)
    run_finished = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.settings = AnonymizeSettings()
        self.job = AnonymizeJob()
        self.history = RunHistory()
        self.worker = None
        self.cancel = None
        self.run_path: Path | None = None
        self._store: Any = None
        self._tile_sums: Any = None
        self._n_shown = 0
        self._n_ncc = 0
        self._last_plot = 0.0
        self._last_layer = 0.0
        #: the ``snapshots`` layer's state before this run's placeholder replaced it
        self._previous_snapshots: tuple[Any, dict[str, Any], float] | None = None
        #: 16 when the photo is 16-bit: the anonymized image is then saved 16-bit
        self._bit_depth = 8

        self.photo = LayerChoice(napari_viewer, is_photo, prefer="photo")
        self.fingerprint = LayerChoice(napari_viewer, is_plane, prefer="fingerprint")
        self.mode = QComboBox()
        self.mode.addItems(["aware", "blind"])
        self.mode.setToolTip("aware: remove the fingerprint K; blind: use the photo's own residual")
        choices, lines = device_choices()
        self.device = QComboBox()
        self.device.addItems(choices)
        self.devices_found = QLabel("found: " + "; ".join(lines))
        self.devices_found.setWordWrap(True)
        self.preset = QComboBox()
        self.preset.addItems(["tiny", "cpu", "paper"])
        self.preset.setToolTip("network size: tiny (tests), cpu (laptop), paper (GPU)")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1)
        self.tau = QDoubleSpinBox(minimum=0.0, maximum=99.0, decimals=1, singleStep=0.5)
        self.tau.setSuffix(" dB")
        self.tau.setToolTip("outputs at least this close to the photo are kept as snapshots")
        self.stop_psnr = QDoubleSpinBox(minimum=0.0, maximum=99.0, decimals=1, singleStep=0.5)
        self.stop_psnr.setSuffix(" dB")
        self.max_iter = QSpinBox(minimum=1, maximum=1_000_000, singleStep=100)
        self.lr = QDoubleSpinBox(minimum=1e-5, maximum=1.0, decimals=5, singleStep=1e-4)
        self.lr.setToolTip("Adam learning rate (the paper: 0.001)")
        self.runs_folder = PathEdit("folder", placeholder="folder for run directories")
        self.runs_folder.set_path(DEFAULT_RUNS_FOLDER)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.toggle)
        self.progress = QProgressBar()
        self.status = QLabel(self.job.describe())
        self.status.setWordWrap(True)
        self.status.setMinimumHeight(3 * self.status.fontMetrics().lineSpacing())
        self.plot = LivePlot(napari_viewer)

        form = QFormLayout()
        form.addRow("photo", self.photo)
        form.addRow("mode", self.mode)
        form.addRow("fingerprint", self.fingerprint)
        form.addRow("device", self.device)
        form.addRow(self.devices_found)
        form.addRow("network", self.preset)
        form.addRow("seed", self.seed)
        form.addRow("keep ≥ (tau)", self.tau)
        form.addRow("stop at PSNR", self.stop_psnr)
        form.addRow("max iterations", self.max_iter)
        form.addRow("learning rate", self.lr)
        form.addRow("runs folder", self.runs_folder)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addStretch(1)

        self._bind()
        self.job.events.connect(self._show_job)
        #: set once torch and the kernels are loaded (see :meth:`_warm_up`)
        self.warm = threading.Event()
        threading.Thread(target=self._warm_up, name="dippas-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        """Load torch's lazy parts and the Numba kernels now, off the GUI thread.

        A first run would otherwise load them while it runs, holding the GIL for stretches of a
        few hundred ms and stalling the viewer; a run started before this ends just waits for
        the same imports.
        """
        from dippas_core.dip.inversion import warm_up

        try:
            warm_up()
        finally:
            self.warm.set()

    # -- settings <-> form ----------------------------------------------------------------------
    def _bind(self) -> None:
        """Two-way binding between :attr:`settings` and the form fields."""
        combos = {"mode": self.mode, "device": self.device, "preset": self.preset}
        spins = {"seed": self.seed, "tau_psnr": self.tau, "stop_psnr": self.stop_psnr,
                 "max_iter": self.max_iter}
        for name, combo in combos.items():
            combo.setCurrentText(getattr(self.settings, name))
            combo.currentTextChanged.connect(
                lambda text, n=name: setattr(self.settings, n, text)
            )
            getattr(self.settings.events, name).connect(
                lambda value, c=combo: c.setCurrentText(value) if c.currentText() != value else None
            )
        for name, spin in spins.items():
            spin.setValue(getattr(self.settings, name))
            spin.valueChanged.connect(lambda value, n=name: setattr(self.settings, n, value))
            getattr(self.settings.events, name).connect(
                lambda value, s=spin: s.setValue(value) if s.value() != value else None
            )
        self.settings.events.mode.connect(self._mode_changed)
        self.settings.events.preset.connect(self._apply_preset)
        self.lr.valueChanged.connect(lambda value: setattr(self.settings, "lr", value))
        self.settings.events.lr.connect(self._show_lr)
        self._mode_changed(self.settings.mode)
        self._apply_preset(self.settings.preset)

    def _show_lr(self, value: float | None) -> None:
        if value is not None and self.lr.value() != value:
            self.lr.setValue(value)

    def _mode_changed(self, mode: str) -> None:
        self.fingerprint.setEnabled(mode == "aware")

    def _apply_preset(self, name: str) -> None:
        """A new network preset brings its own stopping rule and snapshot threshold."""
        from dippas_core.dip import DIPConfig

        base = DIPConfig.preset(name)
        self.settings.update(
            {"tau_psnr": base.tau_psnr, "stop_psnr": base.stop_psnr, "max_iter": base.max_iter,
             "lr": base.lr}
        )

    # -- run / stop -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job.status in ("running", "stopping")

    def toggle(self) -> None:
        """The Run/Stop button."""
        if self.running:
            self.stop()
        else:
            self.start()

    def stop(self) -> None:
        """Ask the inversion to stop; it ends after the current iteration and frees the device."""
        if self.cancel is not None and self.running:
            self.cancel.cancel()
            self.job.status = "stopping"

    def _inputs(self) -> tuple[np.ndarray, Any]:
        from dippas_core.errors import InputError

        photo = self.photo.layer()
        if photo is None:
            raise InputError("choose a photo layer (H×W×3)")
        if self.settings.mode == "blind":
            return np.asarray(photo.data), None
        fp = self.fingerprint.layer()
        if fp is None:
            raise InputError("aware mode needs a fingerprint layer (or choose blind mode)")
        info = (fp.metadata or {}).get("dippas", {}) if dippas_kind(fp.metadata) else {}
        fingerprint = SimpleNamespace(
            K=np.asarray(fp.data, np.float32), camera=info.get("camera", fp.name),
            n_images=info.get("n_images", 0), sigma=info.get("sigma", 5.0),
            version=info.get("version", ""),
        )
        return np.asarray(photo.data), fingerprint

    def new_run_path(self) -> Path:
        """A fresh run folder inside the runs folder (time stamp + seed)."""
        root = self.runs_folder.path() or DEFAULT_RUNS_FOLDER
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = root / f"run-{stamp}-seed{self.settings.seed}"
        k = 1
        while path.exists():
            k += 1
            path = root / f"run-{stamp}-seed{self.settings.seed}-{k}"
        return path

    def start(self) -> None:
        """Start a run in a worker thread."""
        from dippas_core.cancel import CancelToken
        from dippas_core.errors import DippasError
        from dippas_core.pipeline import AnonymizeConfig

        if self.running:
            return
        try:
            photo, fingerprint = self._inputs()
            dip = self.settings.dip_config()
        except DippasError as exc:
            self.job.update({"status": "failed", "message": str(exc)})
            return
        config = AnonymizeConfig(dip=dip)
        self._bit_depth = 16 if photo.dtype == np.uint16 else 8
        self.run_path = self.new_run_path()
        self.cancel = cancel = CancelToken()
        self._store = self._tile_sums = None
        self._n_shown = self._n_ncc = 0
        self.history.clear()
        # the plot's one slow redraw (fonts, ticks, the tau line) happens now, on the click
        self.plot.show_history(self.history, dip.tau_psnr, final=True)
        self.job.start(dip.max_iter, str(self.run_path))
        self.progress.setRange(0, dip.max_iter)
        self.progress.setValue(0)
        self._prepare_snapshots_layer(photo.shape[:2])
        run_path, job_model = self.run_path, self.job

        def job(report: Callable[[Any], None]) -> Any:
            from dippas_core.pipeline import anonymize

            return anonymize(
                photo, fingerprint, config, run_dir=run_path, cancel=cancel,
                on_step=lambda step: report(StepSummary.from_step(step)),
            )

        def returned(result: Any) -> None:
            # the status first, from a plain function: it must arrive even if the widget closed
            stop_reason = result.report.get("inversion", {}).get("stop_reason", "")
            job_model.update(
                {"status": "cancelled" if stop_reason == "cancelled" else "finished",
                 "stop_reason": stop_reason}
            )
            self._on_done(result)

        def errored(exc: BaseException) -> None:
            job_model.update({"status": "failed", "message": str(exc)})
            self._on_error(exc)

        self.worker = start_job(
            job, on_progress=self._on_steps, on_returned=returned,
            on_errored=errored, what="Anonymize", cancel=cancel,
        )

    def _close_down(self) -> None:
        """The widget left napari: cancel the run (it ends after its current iteration)."""
        self.stop()
        self.job.events.disconnect(self._show_job)
        self.plot._offscreen = None  # no more off-screen redraw steps

    # -- live updates (main thread) -------------------------------------------------------------
    def _on_steps(self, batch: list[StepSummary]) -> None:
        self.job.apply(batch)
        if self.closed:
            return
        self.history.extend(batch)
        now = time.monotonic()
        plot_due = now - self._last_plot >= PLOT_INTERVAL_S
        # never the layer and the plot in one turn of the event loop (each costs tens of ms);
        # when both are due, the one that waited longer goes first
        layer_updated = self._refresh_snapshots(
            allow_layer=not plot_due or self._last_layer <= self._last_plot
        )
        if plot_due and not layer_updated:
            self._last_plot = now
            self.plot.show_history(self.history, self.settings.tau_psnr)

    def _prepare_snapshots_layer(self, shape: tuple[int, int]) -> None:
        """Add the ``snapshots`` layer before the run (transparent, one blank frame).

        Adding a layer builds its controls and shaders (hundreds of ms); doing it now, not when
        the first snapshot arrives, keeps the GUI fluid during the run.
        """
        blank = np.zeros((1, *shape, 3), np.uint16)
        self._previous_snapshots = None
        if "snapshots" in self.viewer.layers:  # a previous run's: restored if this one fails
            old = self.viewer.layers["snapshots"]
            self._previous_snapshots = (old.data, dict(old.metadata), float(old.opacity))
        layer = upsert_layer(
            self.viewer, snapshots_layer(blank, run_dir=str(self.run_path), status="recording")
        )
        # transparent, not hidden: a hidden layer leaves the dims, and the slider would come and go
        layer.opacity = 0.0

    def _refresh_snapshots(self, force: bool = False, allow_layer: bool = True) -> bool:
        """Add NCC points from the tile sums on disk and grow the ``snapshots`` layer.

        The layer is updated at most every ``LAYER_INTERVAL_S`` (``force``: now) and only if
        ``allow_layer``.  Returns whether it was updated.
        """
        from dippas_core.snapshots import SnapshotStore, TileSums

        if self.run_path is None:
            return False
        if self._store is None:
            if not (self.run_path / TileSums.META).exists():
                return False
            self._store = SnapshotStore(self.run_path)
            self._tile_sums = TileSums(self.run_path)
        now = time.monotonic()
        n = self._store.refresh()
        due = force or (allow_layer and now - self._last_layer >= LAYER_INTERVAL_S)
        updated = n > self._n_shown and due
        if updated:
            self._last_layer = now
            # follow the newest snapshot unless the user parked the slider on an older one
            # (napari may briefly reset the slider to 0 while a layer's range changes, so 0
            # does not count as a choice)
            current = self.viewer.dims.current_step[0]
            was_last = not 0 < current < self._n_shown - 1
            layer = upsert_layer(
                self.viewer,
                snapshots_layer(self._store.frames, run_dir=str(self.run_path), status="recording"),
            )
            layer.opacity = 1.0
            if was_last:
                self.viewer.dims.set_current_step(0, n - 1)
            self._n_shown = n
        k = self._tile_sums.refresh()
        if k > self._n_ncc:
            values = _ncc_from_tile_sums(self._tile_sums.array(k)[self._n_ncc : k])
            iterations = self._store.iterations[self._n_ncc : k]
            self.history.add_ncc(list(zip(iterations, values, strict=False)))
            self.job.ncc = float(values[-1])
            self._n_ncc = k
        return updated

    def _show_job(self, *_: Any) -> None:
        self.status.setText(self.job.describe())
        self.progress.setValue(min(self.job.iteration, self.progress.maximum()))
        self.run_button.setText("Stop" if self.running else "Run")
        self.run_button.setEnabled(self.job.status != "stopping")

    def _on_done(self, result: Any) -> None:
        """The run ended (``job.status`` is already set): show its layers."""
        self.cancel = None
        self._previous_snapshots = None  # replaced for good: let its memory map go
        if self.closed:  # the viewer may be gone with the widget: leave it alone
            return
        self._refresh_snapshots(force=True)
        self.plot.show_history(self.history, self.settings.tau_psnr, final=True)
        B = int(result.report["block_ncc"]["B"])
        shape = result.image.shape[:2]
        info = {"run_dir": str(self.run_path)}
        before = upsert_layer(
            self.viewer,
            block_heatmap_layer(result.maps["block_ncc_before"], B, image_shape=shape,
                                stage="before", **info),
        )
        upsert_layer(
            self.viewer,
            anonymized_layer(result.image, report=result.report, bit_depth=self._bit_depth, **info),
        )
        upsert_layer(
            self.viewer,
            block_heatmap_layer(result.maps["block_ncc_after"], B, name="NCC after",
                                limit=before.contrast_limits[1], image_shape=shape,
                                stage="after", **info),
        )
        if "snapshots" in self.viewer.layers:
            meta = self.viewer.layers["snapshots"].metadata.get("dippas", {})
            meta["status"] = self.job.status
        self.run_finished.emit(str(self.run_path))

    def _on_error(self, exc: BaseException) -> None:
        """The run failed (``job.status`` is already set): drop its placeholder layer."""
        self.cancel = None
        if not self.closed:
            self._drop_placeholder()

    def _drop_placeholder(self) -> None:
        """A failed run: its ``snapshots`` placeholder goes (the previous run's layer comes back).

        Snapshots the run already showed stay, marked failed: they are real and on disk.
        """
        layers = self.viewer.layers
        if "snapshots" not in layers:
            return
        layer = layers["snapshots"]
        meta = layer.metadata.get("dippas", {})
        if meta.get("run_dir") != str(self.run_path):
            return  # not ours any more
        if self._n_shown:
            layer.metadata = {"dippas": {**meta, "status": "failed"}}
        elif self._previous_snapshots is not None:
            data, metadata, opacity = self._previous_snapshots
            layer.data = data
            layer.metadata = metadata
            layer.opacity = opacity
        else:
            layers.remove(layer)
        self._previous_snapshots = None
