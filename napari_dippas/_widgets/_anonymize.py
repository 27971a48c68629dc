"""Anonymize dock widget: run (and stop) the DIP inversion while watching it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from .._layers import (
    Region,
    anonymized_layer,
    block_heatmap_layer,
    difference_layer,
    dippas_kind,
    snapshots_layer,
)
from .._models import (
    DECISION_LEVEL_PCE,
    AnonymizeJob,
    AnonymizeSettings,
    RunHistory,
    StepSummary,
    attribute,
    estimate_run_cost,
    run_provenance,
    sha256_array,
    trace_warning,
    write_provenance,
)
from .._workers import start_job
from ._attribution import camera_of, is_fingerprint, is_photo, size_problem
from ._common import (
    DockWidget,
    LayerChoice,
    LivePlot,
    PathEdit,
    RegionPicker,
    layer_source_path,
    upsert_layer,
    upsert_run_layer,
)

if TYPE_CHECKING:
    import napari

__all__ = ["AnonymizeWidget", "DEFAULT_RUNS_FOLDER", "PRESET_LR", "TraceCheck", "device_choices"]

#: outside any evidence folder: run folders hold copies of the photo and its fingerprint
DEFAULT_RUNS_FOLDER = Path.home() / "dippas-runs"
#: learning rate the viewer starts each preset with: the evaluation's measured CPU setting.
#: With the tiny network a 64×64 crop of a Dresden photo reaches tau at iteration 81 with 1e-2,
#: at 498 with the paper's 1e-3 (scripts/preset_check.py, seed 0); the paper network keeps 1e-3
PRESET_LR = {"tiny": 1e-2, "cpu": 1e-2}
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


@dataclass(frozen=True)
class TraceCheck:
    """Reported by a run before its inversion: the PCE of the input with its reference."""

    pce: float
    n_pixels: int


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
        #: the region of the photo the current run works on, and the photo's name
        self._region: Region | None = None
        self._photo_name = ""
        self._record: dict[str, Any] | None = None
        self._started_at = 0.0
        #: asks the analyst to confirm a large run (replaceable in scripts and tests)
        self.confirm: Callable[[str], bool] = self._ask
        #: the last trace check (PCE of the input before anonymizing), shown with the status
        self.trace_note = ""

        self.photo = LayerChoice(napari_viewer, is_photo, prefer="photo")
        self.fingerprint = LayerChoice(napari_viewer, is_fingerprint, prefer="fingerprint")
        self.region = RegionPicker(napari_viewer, self._photo_shape)
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
        self.progress.setFormat("%v / %m iterations")
        self.status = QLabel(self.job.describe())
        self.status.setWordWrap(True)
        self.status.setMinimumHeight(3 * self.status.fontMetrics().lineSpacing())
        self.plot = LivePlot(napari_viewer)

        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # narrow docks: wrap
        form.addRow("photo", self.photo)
        form.addRow("region", self.region)
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
        layout = QVBoxLayout(self.body)
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
             "lr": PRESET_LR.get(name, base.lr)}
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

    def _photo_shape(self) -> tuple[int, ...] | None:
        layer = self.photo.layer()
        return None if layer is None else tuple(layer.data.shape[:2])

    def _inputs(self) -> tuple[np.ndarray, Any, Region]:
        """The (cropped) photo, the (cropped) fingerprint or None, and the region.

        Raises
        ------
        dippas_core.errors.InputError
            In the analyst's words, with what to do.
        """
        from dippas_core.errors import InputError

        photo = self.photo.layer()
        if photo is None:
            raise InputError("Open a colour photo first (it appears in the 'photo' list).")
        data = np.asarray(photo.data)
        if not (data.ndim == 3 and data.shape[-1] == 3):
            raise InputError(
                f"The photo '{photo.name}' is gray; DIPPAS works on colour photos. Open the "
                "original colour file."
            )
        fp = None
        if self.settings.mode == "aware":
            fp = self.fingerprint.layer()
            if fp is None:
                raise InputError(
                    "No fingerprint: estimate one in the Fingerprint dock (or open a saved "
                    ".npz), or choose mode 'blind' to work without it."
                )
            problem = size_problem(photo, fp)
            if problem is not None:
                raise InputError(problem)
        try:
            region = self.region.region(data.shape)
        except ValueError as exc:
            raise InputError(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
        self._photo_name = photo.name
        crop = data if region.is_whole(data.shape) else region.crop(data)
        if fp is None:
            return crop, None, region
        info = (fp.metadata or {}).get("dippas", {}) if dippas_kind(fp.metadata) else {}
        K = np.asarray(fp.data, np.float32)
        from dippas_core.fingerprint import Fingerprint

        fingerprint = Fingerprint(
            K=K if region.is_whole(data.shape) else region.crop(K), camera=camera_of(fp),
            n_images=info.get("n_images", 0), sigma=info.get("sigma", 5.0),
            version=info.get("version", ""),
        )
        return crop, fingerprint, region

    def _ask(self, question: str) -> bool:
        """A Yes/No box; the default answer is No (a big run is never started by accident)."""
        answer = QMessageBox.question(
            self, "A large run", question,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _provenance(self, photo: np.ndarray, fingerprint: Any, region: Region) -> dict:
        layer = self.photo.layer()
        whole = np.asarray(layer.data) if layer is not None else photo
        fp = None if fingerprint is None else {
            "camera": fingerprint.camera, "n_images": int(fingerprint.n_images),
            "sigma": float(fingerprint.sigma), "version": fingerprint.version,
        }
        return run_provenance(
            source_name=self._photo_name,
            source_path=layer_source_path(layer) if layer is not None else None,
            photo=whole, region=region, fingerprint=fp,
            settings=self.settings.model_dump(),
        )

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
            photo, fingerprint, region = self._inputs()
            dip = self.settings.dip_config()
            config = AnonymizeConfig(dip=dip)
            from dippas_core.assembly import check_assembly_params

            check_assembly_params(
                photo.shape[:2], config.tile, config.B, config.L, config.assembly_tau
            )
        except DippasError as exc:
            self.job.update({"status": "failed", "message": str(exc)})
            return
        cost = estimate_run_cost(photo.shape, dip.max_iter, self.settings.device)
        if cost.needs_confirmation and not self.confirm(cost.warning()):
            self.job.update({"status": "idle"})
            self.status.setText(
                "Not started. Draw a region (Draw) to preview on part of the photo, or choose a "
                "GPU device."
            )
            return
        self._region = region
        self._bit_depth = 16 if photo.dtype == np.uint16 else 8
        self.run_path = self.new_run_path()
        self._record = record = self._provenance(photo, fingerprint, region)
        self.cancel = cancel = CancelToken()
        self._store = self._tile_sums = None
        self._n_shown = self._n_ncc = 0
        self.history.clear()
        # the plot's one slow redraw (fonts, ticks, the tau line) happens now, on the click
        self.plot.show_history(self.history, dip.tau_psnr, final=True)
        self.trace_note = ""
        self.job.start(dip.max_iter, str(self.run_path), dip.tau_psnr)
        self._started_at = time.monotonic()
        self.progress.setRange(0, dip.max_iter)
        self.progress.setValue(0)
        self._prepare_snapshots_layer(photo.shape[:2])
        run_path, job_model = self.run_path, self.job

        def job(report: Callable[[Any], None]) -> Any:
            from dippas_core.pipeline import anonymize

            # flagged before the inversion: is there a trace to remove at all?
            reference = None if fingerprint is None else fingerprint.K
            if reference is not None:  # (blind mode: the photo's own residual always "matches")
                check = attribute(photo, reference, sigma=config.sigma, block_size=config.B)
                report(TraceCheck(check.pce, int(photo.shape[0] * photo.shape[1])))
            result = anonymize(
                photo, fingerprint, config, run_dir=run_path, cancel=cancel,
                on_step=lambda step: report(StepSummary.from_step(step)),
            )
            record["outputs"] = [{
                "what": "assembled by the run (B, L, tau of the run's settings)",
                "pixels_sha256": sha256_array(result.image),
            }]
            write_provenance(run_path, record)
            return result

        def returned(result: Any) -> None:
            # the status first, from a plain function: it must arrive even if the widget closed
            stop_reason = result.report.get("inversion", {}).get("stop_reason", "")
            job_model.update(
                {"status": "cancelled" if stop_reason == "cancelled" else "finished",
                 "stop_reason": stop_reason}
            )
            self._on_done(result)

        def errored(exc: BaseException) -> None:
            from dippas_core.assembly import NoSnapshotsError

            if isinstance(exc.__cause__, NoSnapshotsError):
                if cancel.cancelled:  # stopped before tau: nothing kept, not a failure
                    job_model.stopped_empty()
                else:
                    job_model.update({"status": "failed", "message": (
                        f"No output came within tau = {dip.tau_psnr:g} dB of the photo in "
                        f"{job_model.iteration} iterations (best {job_model.best_psnr:.1f} dB): "
                        "nothing was kept. Raise max iterations or the learning rate, or lower "
                        "tau, and run again."
                    )})
            else:
                job_model.update({"status": "failed", "message": str(exc)})
            self._on_error(exc)

        from dippas_core.assembly import NoSnapshotsError

        self.worker = start_job(
            job, on_progress=self._on_steps, on_returned=returned,
            on_errored=errored, what="Anonymize", cancel=cancel, quiet=(NoSnapshotsError,),
        )

    def _close_down(self) -> None:
        """The widget left napari: cancel the run (it ends after its current iteration)."""
        self.stop()
        self.job.events.disconnect(self._show_job)
        self.plot._offscreen = None  # no more off-screen redraw steps

    # -- live updates (main thread) -------------------------------------------------------------
    def _on_steps(self, batch: list[Any]) -> None:
        checks = [item for item in batch if isinstance(item, TraceCheck)]
        batch = [item for item in batch if isinstance(item, StepSummary)]
        if checks:
            warning = trace_warning(checks[-1].pce, DECISION_LEVEL_PCE, checks[-1].n_pixels)
            self.trace_note = warning or (
                f"The input carries the camera's trace (PCE {checks[-1].pce:.1f} ≥ "
                f"{DECISION_LEVEL_PCE:g}): a before/after comparison is meaningful."
            )
            self._show_job()
        if not batch:
            return
        self.job.apply(batch)
        self.job.tick(time.monotonic() - self._started_at)
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
        active = self.viewer.layers.selection.active  # the new layer must not take the focus
        self._previous_snapshots = None
        if "snapshots" in self.viewer.layers:  # a previous run's: restored if this one fails
            old = self.viewer.layers["snapshots"]
            self._previous_snapshots = (old.data, dict(old.metadata), float(old.opacity))
        layer = upsert_layer(
            self.viewer, self._snapshots_tuple(blank)
        )
        # transparent, not hidden: a hidden layer leaves the dims, and the slider would come and go
        layer.opacity = 0.0
        # the slider walks through snapshots: say so, instead of napari's axis number ("-3")
        labels = list(self.viewer.dims.axis_labels)
        if len(labels) >= 3 and labels[-3] != "snapshot":
            labels[-3] = "snapshot"
            self.viewer.dims.axis_labels = labels
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active

    def _snapshots_tuple(self, stack: np.ndarray) -> Any:
        data, kwargs, kind = snapshots_layer(stack, run_dir=str(self.run_path), status="recording")
        offset = self._region.translate if self._region is not None else (0.0, 0.0)
        kwargs["translate"] = (0.0, *offset)
        return data, kwargs, kind

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
            if self._record is not None:  # the run folder exists now: record where it came from
                write_provenance(self.run_path, self._record)
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
            layer = upsert_layer(self.viewer, self._snapshots_tuple(self._store.frames))
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
        text = self.job.describe()
        self.status.setText(f"{text}\n{self.trace_note}" if self.trace_note else text)
        if self.job.status in ("finished", "cancelled") and self.job.iteration > 0:
            # the honest total is what the run needed: a run that stopped at its PSNR is done
            self.progress.setRange(0, self.job.iteration)
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
        region = self._region
        offset = region.translate if region is not None else (0.0, 0.0)
        if region is not None:
            info["region"] = region.as_dict()
        upsert_run_layer(
            self.viewer,
            block_heatmap_layer(result.maps["block_ncc_before"], B, image_shape=shape,
                                offset=offset, stage="before", **info),
        )
        upsert_run_layer(
            self.viewer,
            anonymized_layer(result.image, report=result.report, bit_depth=self._bit_depth,
                             offset=offset, **info),
        )
        upsert_run_layer(
            self.viewer,
            block_heatmap_layer(result.maps["block_ncc_after"], B, name="NCC after",
                                image_shape=shape, offset=offset, stage="after", **info),
        )
        photo = self.photo.layer()
        if photo is not None and region is not None:
            source = np.asarray(photo.data)
            source = source if region.is_whole(source.shape) else region.crop(source)
            if source.shape == result.image.shape:
                upsert_run_layer(
                    self.viewer,
                    difference_layer(result.image, source, name="difference (after − before)",
                                     offset=offset, **info),
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
