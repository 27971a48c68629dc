"""Assemble & export dock widget: choose B, L, tau, watch the anonymized image change, save it."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from dippas_core.assembly import NoSnapshotsError
from dippas_core.attribution import PCE_ALIGNED
from dippas_core.fidelity import describe

from .._layer_updates import same_path, upsert_run_layer
from .._layers import BLOCK_NCC_LIMIT, block_heatmap_layer, dippas_kind
from .._models import (
    DECISION_LEVEL_PCE,
    AssemblyOutcome,
    AssemblySettings,
    RunSession,
    add_output_to_provenance,
    sha256_file,
    trace_warning,
)
from .._reader import (
    assembly_layers,
    is_run_directory,
    last_assembly_params,
    run_offset,
    save_assembly_params,
    shifted,
)
from .._workers import start_job
from ._forms import DockWidget, LayerChoice, PathEdit, without_kind
from ._plots import ColorbarCanvas

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = ["AssembleWidget"]

#: wait this long after the last B/L/tau change before re-assembling (sliders send many values)
DEBOUNCE_MS = 150
#: what Export writes for a region's run (the choice's words)
REGION_ONLY = "the region only"
WHOLE_PHOTO = "the whole photo, this region replaced"


def _is_run_layer(layer: Layer) -> bool:
    return dippas_kind(layer.metadata) == "snapshots" and "run_dir" in layer.metadata["dippas"]


def _on_shared_scale(data_tuple: Any) -> Any:
    """A block-NCC map put on the one colour scale of every map (:data:`BLOCK_NCC_LIMIT`)."""
    data, kwargs, kind = data_tuple
    if dippas_kind(kwargs.get("metadata")) != "block_ncc":
        return data_tuple
    meta = {**kwargs["metadata"]["dippas"], "limit": BLOCK_NCC_LIMIT}
    limits = (-BLOCK_NCC_LIMIT, BLOCK_NCC_LIMIT)
    return data, {**kwargs, "contrast_limits": limits, "metadata": {"dippas": meta}}, kind


class AssembleWidget(DockWidget):
    """Re-assemble a recorded run live and export the anonymized image with its JSON report.

    :attr:`settings` (:class:`AssemblySettings`) is the scriptable state; every change
    re-assembles after a short debounce, in a worker thread, newest settings winning: one
    assembly runs at a time (a :class:`RunSession` is not thread-safe), a request made meanwhile
    waits for it, and only the result of the latest request is shown.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.settings = AssemblySettings()
        self.session: RunSession | None = None
        self.outcome: AssemblyOutcome | None = None
        self.worker = None
        #: number of the latest assembly request; an older request's result is dropped
        self.generation = 0
        self._pending = False  # a request waits for the running job
        # set at once, unlike worker.is_running (True only once superqt's thread has started)
        self._job_active = False
        self._watched: Layer | None = None

        self.run = LayerChoice(napari_viewer, _is_run_layer, prefer="snapshots",
                               shown=without_kind("snapshots"))
        self.run.currentTextChanged.connect(self._run_layer_changed)
        self.open_run = PathEdit("folder", placeholder="or open a run folder…")
        self.open_button = QPushButton("Open run")
        self.open_button.clicked.connect(self._open_clicked)
        self.block = QComboBox()
        self.block.setToolTip("B: block size (pixels) of the assembly mosaic")
        self.n_average = QSpinBox(minimum=1, maximum=1000, value=self.settings.L)
        self.n_average.setToolTip("L: snapshots averaged per block")
        self.tau = QDoubleSpinBox(minimum=0.0, maximum=99.0, decimals=1, singleStep=0.5)
        self.tau.setValue(self.settings.tau)
        self.tau.setSuffix(" dB")
        self.tau.setToolTip("only snapshots at least this close to the photo are used")
        self.block.currentTextChanged.connect(
            lambda t: setattr(self.settings, "B", int(t)) if t else None
        )
        self.n_average.valueChanged.connect(lambda v: setattr(self.settings, "L", v))
        self.tau.valueChanged.connect(lambda v: setattr(self.settings, "tau", v))
        self.settings.events.B.connect(lambda v: self.block.setCurrentText(str(v)))
        # (lambdas: psygnal cannot read a Qt method's signature and warns "no signature found")
        self.settings.events.L.connect(lambda v: self.n_average.setValue(v))
        self.settings.events.tau.connect(lambda v: self.tau.setValue(v))

        self.table = {}
        grid = QGridLayout()
        for col, title in enumerate(("", "before", "after")):
            grid.addWidget(QLabel(f"<b>{title}</b>"), 0, col)
        for row, name in enumerate(("NCC", "PCE"), start=1):
            grid.addWidget(QLabel(name if name == "NCC" else f"PCE ({PCE_ALIGNED})"), row, 0)
            for col, stage in enumerate(("before", "after"), start=1):
                self.table[name, stage] = QLabel("–")
                grid.addWidget(self.table[name, stage], row, col)
        grid.addWidget(QLabel("PSNR"), 3, 0)
        self.psnr = QLabel("–")
        grid.addWidget(self.psnr, 3, 1, 1, 2)
        grid.addWidget(QLabel("fidelity"), 4, 0)
        self.fidelity = QLabel("–")  # beside PSNR: what it cannot see (dippas_core.fidelity)
        self.fidelity.setWordWrap(True)
        grid.addWidget(self.fidelity, 4, 1, 1, 2)
        self.status = QLabel("Choose a run (the snapshots layer of a run, or a run folder).")
        self.status.setWordWrap(True)
        self.colorbar = ColorbarCanvas(napari_viewer, "block NCC (before and after)")
        self.export_path = PathEdit("save_file", "Images (*.png *.tif *.tiff)", "anonymized.png")
        #: a region's run: export the region alone, or the whole photo with the region replaced
        self.export_what = QComboBox()
        self.export_what.addItems([REGION_ONLY, WHOLE_PHOTO])
        self.export_what.currentTextChanged.connect(lambda *_: self._say_what_is_exported())
        self.export_note = QLabel("")
        self.export_note.setWordWrap(True)
        self.export_button = QPushButton("Export image + JSON report")
        self.export_button.clicked.connect(lambda: self.export())

        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # narrow docks: wrap
        form.addRow("run", self.run)
        form.addRow(self.open_run)
        form.addRow(self.open_button)
        form.addRow("B (block)", self.block)
        form.addRow("L (average)", self.n_average)
        form.addRow("tau", self.tau)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        layout.addLayout(grid)
        layout.addWidget(self.status)
        layout.addWidget(self.colorbar)
        layout.addWidget(self.export_path)
        layout.addWidget(self.export_what)
        layout.addWidget(self.export_note)
        layout.addWidget(self.export_button)
        layout.addStretch(1)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.assemble)
        self.settings.events.connect(lambda *_: self._debounce.start())
        self._run_layer_changed()

    def _close_down(self) -> None:
        """The widget left napari: no more re-assembly, stop watching the run's layer."""
        self._pending = False
        self._unwatch()
        self._debounce.stop()

    def _unwatch(self) -> None:
        if self._watched is not None:
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                self._watched.events.data.disconnect(self._run_data_changed)
            self._watched = None

    # -- choosing a run -------------------------------------------------------------------------
    def _run_layer_changed(self, *_: Any) -> None:
        self._unwatch()
        if self.closed:
            return
        layer = self.run.layer()  # the chosen object: its name may have changed
        if layer is None and (self.session is None or not Path(self.session.path).is_dir()
                              or self.session.run.refresh() == 0):
            # e.g. a run that failed to start, or stopped before it recorded anything, took
            # its placeholder layer away: wait for nothing
            self.session = None
            self.status.setText("Choose a run (the snapshots layer of a run, or a run folder).")
        if layer is not None:
            # a run still recording grows this layer: re-assemble as it grows
            layer.events.data.connect(self._run_data_changed)
            self._watched = layer
            self._run_data_changed()

    def _run_data_changed(self, *_: Any) -> None:
        layer = self._watched
        if layer is None:
            return
        path = str(layer.metadata["dippas"]["run_dir"])
        if self.session is None or not same_path(self.session.path, path):
            self.set_run(path)
        elif self.session.run.status == "recording":  # a finished run has nothing new
            self._debounce.start()

    def _open_clicked(self) -> None:
        path = self.open_run.path()
        if path is not None:
            self.open_run_folder(path)

    def open_run_folder(self, path: str | Path) -> list[Layer]:
        """Open the run in folder ``path`` as layers and work on it (button "Open run").

        The run is chosen from the layers the reader returned: napari renames them when another
        run's layers are open (``snapshots [1]``), so a name would pick the wrong run.
        """
        if not is_run_directory(path):
            self.status.setText(f"{Path(path).name} is not a DIPPAS run folder.")
            return []
        try:
            layers = self.viewer.open(str(path), plugin="napari-dippas")
        except Exception as exc:  # noqa: BLE001 - shown to the user; the viewer is unchanged
            self.status.setText(f"Could not open {Path(path).name}: {exc}")
            return []
        for layer in layers:
            # napari numbers a clashing name ("photo [1]"): name it by its run instead
            match = re.fullmatch(r"(.*) \[\d+\]", layer.name)
            if match:
                layer.name = f"{match.group(1)} — {Path(path).name}"
        snapshots = [layer for layer in layers if _is_run_layer(layer)]
        if snapshots:
            self.run.select(snapshots[-1])
        if self.session is None or not same_path(self.session.path, path):
            self.set_run(path)  # a run without snapshots yet has no layer to choose
        return list(layers)

    def set_run(self, path: str | Path) -> None:
        """Work on the run in folder ``path`` (re-assembles at once)."""
        if not is_run_directory(path):  # a run that is just starting: wait for its data
            self.session = None
            self.status.setText(f"Waiting for the run in {Path(path).name} to start…")
            return
        self.session = RunSession(path)
        params = last_assembly_params(self.session)
        self.block.blockSignals(True)
        self.block.clear()
        self.block.addItems([str(b) for b in self.session.valid_block_sizes()])
        self.block.blockSignals(False)
        self.settings.update(params.model_dump())
        self.block.setCurrentText(str(self.settings.B))
        self.status.setText(f"Run {Path(path).name}: {self.session.run.status}.")
        self._say_what_is_exported()
        self._debounce.start()

    # -- assembling -----------------------------------------------------------------------------
    def assemble(self) -> None:
        """Re-assemble with the current settings in a worker (newest settings win).

        While a job runs, the request waits and starts when that job ends (with the settings
        of that moment); the running job's result, now stale, is then dropped.
        """
        if self.session is None or self.closed:
            return
        self.generation += 1
        if self._job_active:
            self._pending = True
            return
        self._start_job()

    def _start_job(self) -> None:
        """Start the latest request (only when no job runs)."""
        self._pending = False
        if self.session is None or self.closed:
            return
        generation, session, settings = self.generation, self.session, self.settings.model_copy()
        self.status.setText(
            f"Assembling B={settings.B}, L={settings.L}, "
            f"tau={settings.tau:g} dB…"
        )

        def job(report: Any) -> tuple[RunSession, AssemblyOutcome]:
            outcome = session.assemble(settings)
            save_assembly_params(session, settings)
            return session, outcome  # the session travels along: the widget's may change

        self._job_active = True
        self.worker = start_job(
            job, on_returned=lambda result: self._on_done(result, generation),
            on_errored=lambda exc: self._on_error(exc, generation, session),
            on_finished=self._on_finished, what="Assembly", quiet=(NoSnapshotsError,),
        )

    def _is_stale(self, generation: int, session: RunSession | None = None) -> bool:
        """A newer request was made, the run changed, or the widget closed: drop the result."""
        return (
            self.closed
            or generation != self.generation
            or (session is not None and session is not self.session)
        )

    def _on_error(self, exc: BaseException, generation: int, session: RunSession) -> None:
        if self._is_stale(generation, session):
            return
        if isinstance(exc, NoSnapshotsError) and session.run.status == "recording":
            # followed from its start: the run has not recorded anything yet
            self.status.setText(f"Waiting for the first snapshot of {Path(session.path).name}…")
            return
        self.status.setText(str(exc))

    def _on_finished(self) -> None:
        self._job_active = False
        if self._pending:
            self._start_job()

    def _on_done(self, result: tuple[RunSession, AssemblyOutcome], generation: int) -> None:
        session, outcome = result
        if self._is_stale(generation, session):
            return
        self.outcome = outcome
        info = {"run_dir": session.path}  # the job's run, never a later one
        B = outcome.before.block_size
        offset = run_offset(session.path)
        before = upsert_run_layer(
            self.viewer,
            block_heatmap_layer(outcome.before.block_ncc, B, image_shape=outcome.image.shape[:2],
                                offset=offset, stage="before", **info),
        )
        for data_tuple in assembly_layers(outcome, **info):
            upsert_run_layer(self.viewer, _on_shared_scale(shifted(data_tuple, offset)))
        self.colorbar.set_limit(before.contrast_limits[1], f"block NCC, B = {B} (before and after)")
        for stage, scores in (("before", outcome.before), ("after", outcome.after)):
            self.table["NCC", stage].setText(f"{scores.ncc:.5f}")
            self.table["PCE", stage].setText(f"{scores.pce:.1f}")
        self.psnr.setText(f"{outcome.psnr:.2f} dB")
        self.fidelity.setText(describe(outcome.report.get("fidelity"), " · ", " · ") or "–")
        p = outcome.params
        text = (
            f"Assembled B={p['B']}, L={p['L']} from {p['n_candidates']} of {p['n_snapshots']} "
            f"snapshots (PSNR ≥ {p['psnr_threshold']:.2f} dB) in {p['elapsed_s'] * 1000:.0f} ms."
        )
        h, w = outcome.image.shape[:2]
        # a photo (or region) without a detectable trace: "after" proves nothing, say so
        warning = trace_warning(outcome.before.pce, DECISION_LEVEL_PCE, h * w)
        self.status.setText(f"{text}\n{warning}" if warning else text)

    # -- export ---------------------------------------------------------------------------------
    def anonymized_layer(self) -> Layer | None:
        """The current run's anonymized image layer, whatever napari named it (else None)."""
        if self.session is None:
            return None
        for layer in reversed(self.viewer.layers):  # the newest first
            info = (layer.metadata or {}).get("dippas")
            if (
                dippas_kind(layer.metadata) == "anonymized"
                and isinstance(info, dict)
                and same_path(info.get("run_dir"), self.session.path)
            ):
                return layer
        return None

    def _region_of_run(self) -> tuple[dict[str, int] | None, dict[str, Any] | None]:
        """The current run's region on its photo and the photo's record (None, None for a run of
        a whole photo, or one made elsewhere: the command line records no region)."""
        from dippas_core.jsonio import read_json

        from .._models import PROVENANCE_FILE

        if self.session is None:
            return None, None
        try:  # (within a size bound: nothing read back is trusted)
            record = read_json(Path(self.session.path) / PROVENANCE_FILE)
            region, source = record.get("region"), record.get("source") or {}
        except (OSError, ValueError, AttributeError):
            return None, None
        if not isinstance(region, dict) or not isinstance(source, dict):
            return None, None
        whole = (region.get("h"), region.get("w")) == (source.get("height"), source.get("width"))
        return (None, None) if whole else (region, source)

    def _say_what_is_exported(self) -> None:
        """Offer both exports for a region's run, and say which one Export writes."""
        region, source = self._region_of_run()
        self.export_what.setVisible(region is not None)
        if region is None:
            self.export_note.setText("")
            self.export_note.setVisible(False)
            return
        size = f"{region['h']}×{region['w']} region (y {region['y']}, x {region['x']})"
        if self.export_what.currentText() == WHOLE_PHOTO:
            text = (f"Writes the whole {source.get('height')}×{source.get('width')} photo with "
                    f"the {size} anonymized: the rest of the photo still carries the camera's "
                    "trace.")
        else:
            text = f"Writes the {size} only, not the rest of the photo."
        self.export_note.setText(text)
        self.export_note.setVisible(True)

    def _whole_photo(self, source: dict[str, Any]) -> np.ndarray | None:
        """The run's photo, whole, from the viewer's layers (found by its pixels' SHA-256)."""
        from .._models import sha256_array

        shape = (source.get("height"), source.get("width"))
        for layer in self.viewer.layers:
            data = getattr(layer, "data", None)
            if (getattr(layer, "rgb", False) and np.ndim(data) == 3
                    and tuple(np.shape(data)[:2]) == shape
                    and sha256_array(np.asarray(data)) == source.get("pixels_sha256")):
                return np.asarray(data)
        return None

    def export(self, path: str | Path | None = None, what: str | None = None) -> list[str]:
        """Save the current run's anonymized layer through the plugin's writer (+ JSON report).

        A region's run writes ``what`` (default: the choice in the dock): :data:`REGION_ONLY`,
        the region's pixels alone, or :data:`WHOLE_PHOTO`, the photo it was cut from with the
        region replaced (the rest of it still carries the camera's trace: the status says so,
        and the sidecar's ``scope``).  The layer is found by its kind and run folder, not by its
        name.  Returns the files written (empty when there is nothing to save or no path).
        """
        path = Path(path) if path else self.export_path.path()
        layer = self.anonymized_layer()
        if layer is None:
            self.status.setText("Nothing to export yet: assemble a run first.")
            return []
        if path is None:
            self.status.setText("Choose where to save the image (.png, .tif).")
            return []
        region, source = self._region_of_run()
        what = what or self.export_what.currentText()
        info = dict((layer.metadata or {}).get("dippas") or {})
        data = np.asarray(layer.data)
        said = ""
        if region is not None:
            report = dict(info.get("report") or {})
            size = f"{region['h']}×{region['w']} region"
            if what == WHOLE_PHOTO:
                photo = self._whole_photo(source)
                if photo is None:
                    self.status.setText(
                        f"The whole photo is not open in the viewer (a layer with the "
                        f"{source.get('height')}×{source.get('width')} pixels this run was cut "
                        "from): open it, or export the region only."
                    )
                    return []
                y, x, h, w = (int(region[k]) for k in ("y", "x", "h", "w"))
                if data.dtype == photo.dtype:
                    whole = photo.copy()
                else:  # a 16-bit photo's assembly is float on the 0..255 scale
                    from dippas_core.io import to_float255

                    whole = to_float255(photo).astype(data.dtype)
                whole[y : y + h, x : x + w] = data
                data = whole
                report["scope"] = "whole photo, region replaced"
                said = (f": the whole photo with the {size} replaced; the rest of the photo "
                        "still carries the camera's trace")
            else:
                report["scope"] = "region only"
                said = f": the {size} only"
            info["report"] = report
        try:
            from .._writer import write_image_layer

            written = write_image_layer(str(path), data, {"metadata": {"dippas": info},
                                                          "name": layer.name})
        except Exception as exc:  # noqa: BLE001 - shown to the user, nothing was written
            from napari.utils.notifications import show_error

            show_error(f"Export failed: {exc}")
            return []
        # the forensic record stays in the run folder: which file came out, and its hash
        for out in written:
            add_output_to_provenance(
                self.session.path if self.session is not None else "",
                {"file": Path(out).name, "sha256": sha256_file(out),
                 **({"scope": info["report"]["scope"]} if region is not None else {})},
            )
        self.status.setText("Saved " + ", ".join(Path(p).name for p in written) + said + ".")
        return written
