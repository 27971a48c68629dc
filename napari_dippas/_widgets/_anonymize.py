"""Anonymize dock widget: run (and stop) the DIP inversion while watching it.

The form (fields bound to the settings, the inputs a run takes) is :class:`AnonymizeForm`;
the worker's job and how its end is reported are in :mod:`napari_dippas._run_job` (no Qt).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QVBoxLayout

from dippas_core.attribution import PCE_ALIGNED

from .._layer_updates import show_rectangles, upsert_run_layer
from .._layers import (
    Region,
    anonymized_layer,
    block_heatmap_layer,
    difference_layer,
    named_by_run,
    rectangles_layer,
    run_title,
)
from .._models import DECISION_LEVEL_PCE, RunHistory, trace_warning
from .._run_job import anonymize_job, record_end, record_failure
from .._run_state import RunState, TileFinished, TraceCheck, job_key, resumable_run
from .._warmup import WarmUp
from .._workers import start_job
from ._anonymize_form import DEFAULT_RUNS_FOLDER, AnonymizeForm, device_choices
from ._plots import LivePlot
from ._snapshots import SnapshotsView
from ._turns import Turns

if TYPE_CHECKING:
    import napari

__all__ = ["AnonymizeWidget", "DEFAULT_RUNS_FOLDER", "TraceCheck", "device_choices"]

#: seconds between two updates of the live plot (a blit: a few ms)
PLOT_INTERVAL_S = 0.3


class AnonymizeWidget(AnonymizeForm):
    """Run the DIPPAS inversion on a photo layer; Run turns into Stop while it runs.

    The scriptable state is in :attr:`settings` (:class:`AnonymizeSettings`, edits show in the
    form), :attr:`state` (:class:`~napari_dippas._run_state.RunState`: :attr:`job` and the
    tiles of a whole-photo run, fed by the run's callbacks) and :attr:`history`
    (:class:`RunHistory`).  A photo (or region) larger than the tile size runs tile by tile: the
    plan is drawn over the photo (layer ``tiles``), each tile coloured by its state; Stop keeps
    the finished tiles and Run on the same photo, region and settings resumes from them.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer.
    """

    #: emitted on the main thread with the run folder when a run ends (finished or stopped)
    run_finished = Signal(str)
    #: the warm-up process's devices, handed to the main thread
    devices_reported = Signal(list)

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.state = RunState()
        self.job = self.state.job
        self.history = RunHistory()
        self.worker = None
        self.cancel = None
        self.run_path: Path | None = None
        #: the ``snapshots`` layer of a one-tile run (None for a run in tiles)
        self.snapshots: SnapshotsView | None = None
        self._last_plot = 0.0
        #: 16 when the photo is 16-bit: the anonymized image is then saved 16-bit
        self._bit_depth = 8
        #: the region of the photo the current run works on
        self._region: Region | None = None
        #: what names the current run's layers (:func:`~napari_dippas._layers.run_title`)
        self._run_label = ""
        self._record: dict[str, Any] | None = None
        self._started_at = 0.0
        #: asks the analyst to confirm a large run (replaceable in scripts and tests)
        self.confirm: Callable[[str], bool] = self._ask
        #: the last trace check (PCE of the input before anonymizing), shown with the status
        self.trace_note = ""
        #: what the run does besides iterating (e.g. "Resuming the stopped run …")
        self.run_note = ""
        #: whether the current run goes tile by tile (a photo larger than the tile size)
        self._tiled = False
        #: the last cost estimate's worker, and (what it depends on, the estimate or None)
        self.estimate_worker = None
        self._estimate: tuple[str, Any] | None = None
        #: the run folder the ``tiles`` layer shows ("" for a plan not yet run)
        self._tiles_run_dir = ""

        self.plan_button = QPushButton("Plan && estimate time")
        self.plan_button.setToolTip(
            "draw the tiles over the photo and time a few iterations on the chosen device"
        )
        self.plan_button.clicked.connect(lambda: self.plan_and_estimate())
        self.estimate = QLabel("")
        self.estimate.setWordWrap(True)
        self.estimate.setVisible(False)  # shown with an estimate (no gap in the form without)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.toggle)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m iterations")
        self.status = QLabel(self.job.describe())
        self.status.setWordWrap(True)
        self.status.setMinimumHeight(3 * self.status.fontMetrics().lineSpacing())
        self.plot = LivePlot(napari_viewer)

        layout = QVBoxLayout(self.body)
        layout.addLayout(self.form_layout)
        layout.addWidget(self.plan_button)
        layout.addWidget(self.estimate)
        layout.addWidget(self.run_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addStretch(1)

        self.job.events.connect(self._show_job)
        for event in (self.state.tiles.events.rects, self.state.tiles.events.states,
                      self.state.tiles.events.offset):
            event.connect(self._show_tiles)
        self.state.trace_checked.connect(self._show_trace)
        # a plan on screen follows the photo, the region and the tile settings
        for spin in self.region.fields.values():
            spin.valueChanged.connect(self._plan_changed)
        self.settings.events.tile_size.connect(self._plan_changed)
        self.settings.events.overlap.connect(self._plan_changed)
        self.photo.currentTextChanged.connect(self._plan_changed)
        # torch and the kernels are compiled and cached by a process of their own (the GUI
        # never holds the GIL for them; napari_dippas._warmup); it also finds the devices
        self.devices_reported.connect(self.show_devices)
        self.warm_up = WarmUp(on_devices=self._report_devices)
        #: the layers a run adds, one per turn of the event loop
        self.turns = Turns()
        #: set once the warm-up process ended (the kernels are in their on-disk caches)
        self.warm = self.warm_up.done

    def _report_devices(self, lines: list[str]) -> None:
        """(The warm-up's thread) hand the devices to the main thread, if the dock is there."""
        with contextlib.suppress(RuntimeError):  # the Qt object may already be gone
            self.devices_reported.emit(lines)

    # -- run / stop -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job.status in ("running", "stopping")

    @property
    def settled(self) -> bool:
        """No run going and none of its layers still waiting for their turn."""
        return not self.running and not self.turns.pending

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

    # -- the tile plan and the cost, before Run ---------------------------------------------------
    def show_plan(self) -> Any:
        """Draw the tile plan over the photo (layer ``tiles``, every tile waiting); the plan.

        None (and the reason in the status line) when there is nothing to plan.
        """
        from dippas_core.errors import DippasError

        try:
            plan, region, _ = self._plan()
        except DippasError as exc:
            self.status.setText(str(exc))
            return None
        self._tiles_run_dir = ""
        self.state.tiles.set_plan(plan, region.translate)
        return plan

    def _show_estimate(self, text: str) -> None:
        self.estimate.setText(text)
        self.estimate.setVisible(bool(text))

    def _plan_changed(self, *_: Any) -> None:
        """The plan's inputs changed: the estimate is stale, a plan on screen is redrawn."""
        from dippas_core.errors import DippasError

        if self.running or self.closed:
            return
        self._show_estimate("")
        if self.state.tiles.rects:
            try:
                plan, region, _ = self._plan()
            except DippasError:
                return  # (e.g. a region typed halfway)
            self._tiles_run_dir = ""
            self.state.tiles.set_plan(plan, region.translate)

    def plan_and_estimate(self, then: Callable[[], None] | None = None) -> None:
        """The "Plan & estimate time" button: draw the plan, then time this device (worker).

        ``then`` is called once the estimate is in (or failed): Run measures first when it must
        ask before a large run, so that the question says how long.
        """
        from dippas_core.cost import estimate_cost

        plan = self.show_plan()
        if plan is None or self.running:
            return
        config = self.settings.anonymize_config()
        shape = plan.shape
        key = self._estimate_key(plan, config)
        layer = self.photo.layer()
        pixels = None
        if layer is not None and np.ndim(layer.data) == 3:
            _, region, _ = self._plan()  # the tiles' content predicts their iterations
            whole = np.asarray(layer.data)
            pixels = whole if region.is_whole(whole.shape) else region.crop(whole)
        self._show_estimate(f"{plan.describe()}; timing a few iterations on "
                              f"{self.settings.device}…")
        self.plan_button.setEnabled(False)

        def job(report: Callable[[Any], None]) -> Any:
            return estimate_cost(shape, config, photo=pixels)

        def returned(cost: Any) -> None:
            self._estimate = (key, cost)
            if not self.closed:
                self._show_estimate(f"{plan.describe()}.\nTime: {cost.text}.")

        def errored(exc: BaseException) -> None:
            self._estimate = (key, None)  # tried: Run asks without a time
            if not self.closed:
                self._show_estimate(f"No estimate: {exc}")

        def finished() -> None:
            if not self.closed:
                self.plan_button.setEnabled(True)
                if then is not None:
                    then()

        self.estimate_worker = start_job(
            job, on_returned=returned, on_errored=errored, on_finished=finished,
            what="Time estimate",
        )

    @staticmethod
    def _estimate_key(plan: Any, config: Any) -> str:
        """What an estimate depends on: the plan's shape and the run's settings."""
        import json

        return json.dumps([list(plan.shape), config.to_dict()], sort_keys=True, default=str)

    def _show_tiles(self, *_: Any) -> None:
        """Draw :attr:`state`'s tiles over the photo (the ``tiles`` layer follows their states)."""
        tiles = self.state.tiles
        if self.closed or not tiles.rects or len(tiles.rects) != len(tiles.states):
            return  # (a new plan's fields arrive one event at a time)
        info = {"run_dir": self._tiles_run_dir} if self._tiles_run_dir else {}
        show_rectangles(
            self.viewer,
            rectangles_layer(tiles.rects, tiles.states, offset=tiles.offset, **info),
        )
        self._show_job()

    # -- run ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a run in a worker thread (a stopped whole-photo run of the same job resumes)."""
        from dippas_core.cancel import CancelToken
        from dippas_core.errors import DippasError
        from dippas_core.job import prepare
        from dippas_core.run import PhotoRun

        if self.running:
            return
        try:
            photo, fingerprint, region = self._inputs()
            config = self.settings.anonymize_config()
            # the live plot follows every step: the tiles run in this process
            photo_job = prepare(photo, fingerprint, config, watched=True)
        except DippasError as exc:
            self.job.update({"status": "failed", "message": str(exc)})
            return
        dip, plan = config.dip, photo_job.plan
        self._tiled = tiled = photo_job.tiled
        key = job_key(photo, None if fingerprint is None else fingerprint.K, region.as_dict(),
                      self.settings.mode, config.to_dict())
        root = self.runs_folder.path() or DEFAULT_RUNS_FOLDER
        resume = resumable_run(root, key, len(plan)) if tiled else None
        if resume is None:
            cost = photo_job.cost()
            if cost.needs_confirmation:
                known = self._estimate
                if known is None or known[0] != self._estimate_key(plan, config):
                    # measure first: the question says how long (minutes, hours, weeks)
                    self.status.setText("A large run: timing a few iterations before asking…")
                    self.plan_and_estimate(then=self.start)
                    return
                cost = known[1] or cost  # the timed estimate (the plan's work if timing failed)
            if cost.needs_confirmation and not self.confirm(cost.question()):
                self.job.update({"status": "idle"})
                self.status.setText(
                    "Not started. Draw a region (Draw) to preview on part of the photo, or "
                    "choose a GPU device."
                )
                return
        self._region = region
        self._bit_depth = 16 if photo.dtype == np.uint16 else 8
        if self.estimate.text().startswith("No estimate"):
            self._show_estimate("")  # an earlier error never stays under a new run
        self.run_path = resume if resume is not None else self.new_run_path()
        #: names this run's layers: "photo × camera (run folder)"; each run keeps its own
        self._run_label = run_title(
            self.run_path.name, self._photo_name,
            fingerprint.camera if fingerprint is not None else "blind",
        )
        self._record = record = self._provenance(photo, fingerprint, region)
        record["job_key"] = key
        self.cancel = cancel = CancelToken()
        self.history.clear()
        # the plot's one slow redraw (fonts, ticks, the tau line) happens now, on the click
        self.plot.show_history(self.history, dip.record_psnr, final=True)
        self.trace_note = ""
        self.run_note = "" if resume is None else (
            f"Resuming the stopped run in {resume.name}: {PhotoRun.count_done(resume)} of "
            f"{len(plan)} tiles are already done and are not computed again."
        )
        self.job.start(dip.max_iter, str(self.run_path), dip.record_psnr)
        self._started_at = time.monotonic()
        self._tiles_run_dir = str(self.run_path)
        self.state.tiles.set_plan(plan, region.translate)
        self.state.progress = None  # the run reports its own (TilePrediction)
        self.snapshots = None
        if tiled:
            self.progress.setRange(0, len(plan))
            self.progress.setFormat("%v / %m tiles")
        else:
            self.progress.setRange(0, dip.max_iter)
            self.progress.setFormat("%v / %m iterations")
            self.snapshots = SnapshotsView(
                self.viewer, self.run_path, region.translate, self.job, self.history,
                label=self._run_label,
            )
            # its layer (and the dims slider it brings) in a turn after the click's
            view, shape = self.snapshots, photo.shape[:2]
            self.turns.add(lambda: None if self.closed else view.prepare(shape))
            self.state.tiles.start_tile(0)  # one tile: the core reports no tile events
        self.progress.setValue(0)
        run_path, job_model = self.run_path, self.job
        job = anonymize_job(photo_job, run_path, cancel, record)

        def returned(result: Any) -> None:
            # the status first, from a plain function: it must arrive even if the widget closed
            record_end(job_model, result.report, run_path)
            self._on_done(result)

        def errored(exc: BaseException) -> None:
            record_failure(job_model, exc, cancelled=cancel.cancelled,
                           record_psnr=dip.record_psnr)
            self._on_error(exc)

        from dippas_core.assembly import NoSnapshotsError

        self.worker = start_job(
            job, on_progress=self._on_steps, on_returned=returned,
            on_errored=errored, what="Anonymize", cancel=cancel, quiet=(NoSnapshotsError,),
        )

    def _close_down(self) -> None:
        """The widget left napari: cancel the run (it ends after its current iteration)."""
        self.stop()
        self.turns.clear()
        self.warm_up.stop()
        self._stop_matching()
        self.job.events.disconnect(self._show_job)
        for event in (self.state.tiles.events.rects, self.state.tiles.events.states,
                      self.state.tiles.events.offset):
            event.disconnect(self._show_tiles)
        self.plot.stop_redrawing()

    # -- live updates (main thread) -------------------------------------------------------------
    def _show_trace(self, check: TraceCheck) -> None:
        warning = trace_warning(check.pce, DECISION_LEVEL_PCE, check.n_pixels)
        self.trace_note = warning or (
            f"The input carries the camera's trace (PCE ({PCE_ALIGNED}) {check.pce:.1f} ≥ "
            f"{DECISION_LEVEL_PCE:g}): a before/after comparison is meaningful."
        )
        self._show_job()

    def _on_steps(self, batch: list[Any]) -> None:
        batch = self.state.apply(batch)
        if not batch:
            return
        self.job.tick(time.monotonic() - self._started_at)
        if self.closed:
            return
        self.history.extend(batch)
        now = time.monotonic()
        plot_due = now - self._last_plot >= PLOT_INTERVAL_S
        # never the layer and the plot in one turn of the event loop (each costs tens of ms);
        # when both are due, the one that waited longer goes first
        # the store on disk is read only while the steps say it holds snapshots not yet shown
        view = self.snapshots
        layer_updated = view is not None and view.unseen and view.refresh(
            allow_layer=not plot_due or view.last_update <= self._last_plot
        )
        if plot_due and not layer_updated:
            self._last_plot = now
            self.plot.show_history(self.history, self.settings.record_psnr)

    def _show_job(self, *_: Any) -> None:
        lines = [self.job.describe(), self.job.result, self.run_note, self.trace_note]
        if self._tiled:
            # the ETA from the tiles' content once one has finished; until then the upper bound
            eta = self.state.eta_text() if self.job.status == "running" else ""
            lines.insert(1, self.state.tiles.describe() + (eta or self._tiles_left()))
        self.status.setText("\n".join(line for line in lines if line))
        if self._tiled:
            self.progress.setValue(self.state.tiles.n_finished)
        else:
            if self.job.status in ("finished", "cancelled") and self.job.iteration > 0:
                # the honest total is what the run needed: a run that stopped at its PSNR is done
                self.progress.setRange(0, self.job.iteration)
            self.progress.setValue(min(self.job.iteration, self.progress.maximum()))
        self.run_button.setText("Stop" if self.running else "Run")
        self.run_button.setEnabled(self.job.status != "stopping")

    def _tiles_left(self) -> str:
        """``" · at most 12 min left for every tile"`` at the measured speed (running only)."""
        job, tiles = self.job, self.state.tiles
        per_it = job.seconds_per_iteration
        if job.status != "running" or not np.isfinite(per_it):
            return ""
        from dippas_core.cost import duration_text

        left = (max(job.max_iter - job.iteration, 0) + tiles.count("waiting") * job.max_iter)
        return f" · at most {duration_text(left * per_it)} left for every tile"

    def _on_done(self, result: Any) -> None:
        """The run ended (``job.status`` is already set): show its layers."""
        self.cancel = None
        view = self.snapshots
        if self.closed:  # the viewer may be gone with the widget: leave it alone
            if view is not None:
                view.forget_previous()
            return
        if not self._tiled and self.job.status == "finished":
            below = result.report.get("below_tau") or []
            self.state.tiles.finish_tile(TileFinished(0, float(below[0]["short_db"]) if below
                                                      else 0.0))
        self.state.tiles.run_ended()
        self.plot.show_history(self.history, self.settings.record_psnr, final=True)
        if view is not None:  # after the placeholder's own turn; the last snapshots
            self.turns.add(lambda: (view.forget_previous(), self.closed or view.refresh(True)))
        if result.report.get("partial"):  # a stopped photo run: its tiles wait for a resume
            run_path = str(self.run_path)
            self.turns.add(lambda: self.closed or (self._select(self.photo.layer()),
                                                   self.run_finished.emit(run_path)))
            return
        self._show_result(result, view)

    def _show_result(self, result: Any, view: SnapshotsView | None) -> None:
        """The run's layers (heatmaps, anonymized, difference), each in a turn of its own
        (:class:`Turns`); then the result is selected and :attr:`run_finished` sent."""
        B = int(result.report["block_ncc"]["B"])
        shape = result.image.shape[:2]
        info = {"run_dir": str(self.run_path)}
        label, run_path = self._run_label, str(self.run_path)
        # a result short of tau says so in its name too (and in its published sidecar)
        what = "anonymized (below tau)" if result.report.get("below_tau") else "anonymized"
        region = self._region
        offset = region.translate if region is not None else (0.0, 0.0)
        if region is not None:
            info["region"] = region.as_dict()
        layers = [
            block_heatmap_layer(result.maps["block_ncc_before"], B, image_shape=shape,
                                offset=offset, stage="before", **info),
            anonymized_layer(result.image, report=result.report, name=what,
                             bit_depth=self._bit_depth, offset=offset, **info),
            block_heatmap_layer(result.maps["block_ncc_after"], B, name="NCC after",
                                image_shape=shape, offset=offset, stage="after", **info),
        ]
        photo = self.photo.layer()
        if photo is not None and region is not None:
            source = np.asarray(photo.data)
            source = source if region.is_whole(source.shape) else region.crop(source)
            if source.shape == result.image.shape:
                layers.append(difference_layer(result.image, source,
                                               name="difference (after − before)",
                                               offset=offset, **info))
        shown: list[Any] = []
        for layer in layers:
            self.turns.add(lambda layer=layer: None if self.closed else shown.append(
                upsert_run_layer(self.viewer, named_by_run(layer, label))))

        def last() -> None:
            if self.closed:
                return
            if view is not None:
                view.finished(self.job.status)
            # the result is selected, never the snapshots placeholder
            self._select(shown[1] if len(shown) > 1 else None)
            self.run_finished.emit(run_path)

        self.turns.add(last)

    def _select(self, layer: Any) -> None:
        """Make ``layer`` the selected one (its controls show), if it is still in the viewer."""
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.selection.active = layer

    def _on_error(self, exc: BaseException) -> None:
        """The run failed (``job.status`` is already set): drop its placeholder layer."""
        self.cancel = None
        self.state.tiles.run_ended()
        view = self.snapshots
        if view is not None:  # after the placeholder's own turn
            self.turns.add(lambda: self.closed or view.failed())
