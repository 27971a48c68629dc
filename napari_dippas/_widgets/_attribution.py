"""Residual & attribution dock widget: does this photo carry this camera's fingerprint?"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from dippas_core.attribution import PCE_ALIGNED

from .._layer_updates import upsert_layer
from .._layers import (
    BLOCK_NCC_LIMIT,
    Region,
    block_heatmap_layer,
    dippas_kind,
    layer_title,
    residual_layer,
)
from .._models import (
    DECISION_LEVEL_PCE,
    AttributionResult,
    ResultsTable,
    attribute,
    pce_verdict,
)
from .._workers import start_job
from ._forms import DockWidget, LayerChoice, PathEdit, RegionPicker, without_kind
from ._plots import ColorbarCanvas

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "AttributionWidget", "camera_of", "is_fingerprint", "is_photo", "is_plane", "learned_scores",
    "matching_fingerprint", "size_problem",
]

#: our layers that are never a photo nor a fingerprint
_DERIVED_KINDS = ("residual", "block_ncc", "snapshots", "difference", "anonymized")


def is_photo(layer: Layer) -> bool:
    """A single 2-D image, gray or RGB (not a stack, not one of our maps)."""
    if not isinstance(layer, Image) or dippas_kind(layer.metadata) in (
        "fingerprint", "residual", "block_ncc", "snapshots", "difference",
    ):
        return False
    return layer.data.ndim == (3 if layer.rgb else 2)


def is_plane(layer: Layer) -> bool:
    """A single 2-D non-RGB image layer (a fingerprint, a reference residual)."""
    return isinstance(layer, Image) and not layer.rgb and layer.data.ndim == 2


def is_fingerprint(layer: Layer) -> bool:
    """A fingerprint: one we estimated or read, or a float plane loaded by hand (a saved K).

    Photos (integer pixels), residuals, block maps and snapshots are never offered.
    """
    if not is_plane(layer):
        return False
    kind = dippas_kind(layer.metadata)
    if kind is not None:
        return kind == "fingerprint"
    return np.issubdtype(np.asarray(layer.data[:1, :1]).dtype, np.floating)


def camera_of(layer: Layer) -> str:
    """The camera a fingerprint layer belongs to (its layer name when it does not say)."""
    info = (layer.metadata or {}).get("dippas", {})
    return str(info.get("camera") or layer.name) if isinstance(info, dict) else layer.name


def matching_fingerprint(photo: Layer, fingerprints: list[Layer]) -> Layer | None:
    """The fingerprint that goes with ``photo``: of its size, and of its camera when the photo's
    name or file names one (``Nikon_D70_1_20543.JPG`` → ``Nikon_D70_1``, the longest camera name
    that fits; ``Nikon_D70_0`` is another unit of the same model); else the newest of its size.
    None when none has the photo's size."""
    shape = tuple(photo.data.shape[:2])
    fits = [fp for fp in fingerprints if tuple(fp.data.shape[:2]) == shape]
    if not fits:
        return None
    source = getattr(getattr(photo, "source", None), "path", None) or ""
    words = f"{photo.name} {Path(str(source)).name}".lower()

    def named(fp: Layer) -> int:
        camera = camera_of(fp).lower()
        return len(camera) if camera and _names(words, camera) else 0

    return max(reversed(fits), key=named)  # the newest first among equals


def _names(words: str, camera: str) -> bool:
    """Whether ``words`` name ``camera`` as a whole ("nikon_d70_1" is not "nikon_d70_10")."""
    import re

    return re.search(rf"(?<![a-z0-9]){re.escape(camera)}(?![a-z0-9])", words) is not None


def size_problem(photo: Layer, fingerprint: Layer) -> str | None:
    """The analyst's words when a photo and a fingerprint cannot be compared, else None."""
    ph, fh = tuple(photo.data.shape[:2]), tuple(fingerprint.data.shape[:2])
    if ph == fh:
        return None
    return (
        f"The photo '{photo.name}' is {ph[0]}×{ph[1]} pixels but the fingerprint "
        f"'{fingerprint.name}' is {fh[0]}×{fh[1]}: they must cover the same full frame. Use a "
        "fingerprint estimated from full-frame shots of the camera (crop: full frame), then "
        "choose a region here if you want to work on part of the photo."
    )


def learned_scores(image: Any, model_path: Path | None) -> str:
    """Per-camera probabilities of the learned attacker at ``model_path`` as one line, most
    likely first ("" with no model)."""
    if model_path is None:
        return ""
    from dippas_core.attacker import AttackerModel

    probs = AttackerModel.load(model_path).predict_proba(image)
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    return "learned attacker: " + "  ".join(f"{cam} {p:.2f}" for cam, p in ranked)


class AttributionWidget(DockWidget):
    """Residual, PCE verdict, NCC, a block-NCC heatmap over the photo, and a results table.

    The verdict is on the PCE against a decision level (60 by default, as in forensic
    practice); the NCC is shown as a number (its scale depends on the image size).  Every
    score adds a row to :attr:`results` (photos × cameras), exportable as CSV.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.worker = None
        self.result: AttributionResult | None = None
        self.results = ResultsTable()

        self.photo = LayerChoice(napari_viewer, is_photo, prefer="photo")
        self.fingerprint = LayerChoice(napari_viewer, is_fingerprint, prefer="fingerprint",
                                       shown=without_kind("fingerprint"))
        self.region = RegionPicker(napari_viewer, self._photo_shape)
        self.sigma = QDoubleSpinBox(minimum=0.5, maximum=20.0, value=5.0, singleStep=0.5)
        self.block = QSpinBox(minimum=8, maximum=4096, value=64, singleStep=16)
        self.block.setSuffix(" px")
        self.threshold = QDoubleSpinBox(decimals=1, minimum=0.0, maximum=1e6)
        self.threshold.setValue(DECISION_LEVEL_PCE)
        self.threshold.setToolTip(
            "PCE decision level: 60 is the usual forensic choice (Goljan et al. 2009)"
        )
        self.threshold.valueChanged.connect(self._level_changed)
        self.run_button = QPushButton("Compute residual && scores")
        self.run_button.clicked.connect(self.start)
        self.scores = QLabel(f"PCE ({PCE_ALIGNED}) –    NCC –")
        self.verdict = QLabel("Choose a photo and a fingerprint, then Compute.")
        self.verdict.setWordWrap(True)
        self.colorbar = ColorbarCanvas(napari_viewer, "block NCC")
        self.colorbar.set_limit(BLOCK_NCC_LIMIT, "block NCC (one scale for all maps)")
        # optional second opinion: a model from `dippas train-attacker`
        self.attacker_path: Path | None = None
        self.attacker_button = QPushButton("Learned attacker: none (load a model…)")
        self.attacker_button.clicked.connect(self._choose_attacker)
        self.learned = QLabel("")
        self.learned.setWordWrap(True)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(
            ["photo", "camera", f"PCE ({PCE_ALIGNED})", "NCC", "verdict"]
        )
        self.table.setMinimumHeight(110)
        self.table.setMinimumWidth(0)
        self.table.verticalHeader().setVisible(False)
        self.csv_path = PathEdit("save_file", "CSV (*.csv)", "results.csv")
        self.csv_button = QPushButton("Export table (CSV)")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        self.results.changed.connect(self._show_table)

        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # narrow docks: wrap
        form.addRow("photo", self.photo)
        form.addRow("fingerprint", self.fingerprint)
        form.addRow("region", self.region)
        form.addRow("sigma", self.sigma)
        form.addRow("block size", self.block)
        form.addRow("PCE level", self.threshold)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.scores)
        layout.addWidget(self.verdict)
        layout.addWidget(self.attacker_button)
        layout.addWidget(self.learned)
        layout.addWidget(self.colorbar)
        layout.addWidget(QLabel("Results (photos × cameras)"))
        layout.addWidget(self.table)
        layout.addWidget(self.csv_path)
        layout.addWidget(self.csv_button)
        layout.addStretch(1)

    def _choose_attacker(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Learned attacker model", "", "attacker model (*.pt);;all files (*)"
        )
        self.set_attacker(path or None)

    def set_attacker(self, path: str | Path | None) -> None:
        """Score with the learned attacker at ``path`` too on the next Compute (None: stop)."""
        self.attacker_path = Path(path) if path else None
        name = self.attacker_path.name if self.attacker_path else "none (load a model…)"
        self.attacker_button.setText(f"Learned attacker: {name}")
        self.learned.setText("")

    def _photo_shape(self) -> tuple[int, ...] | None:
        layer = self.photo.layer()
        return None if layer is None else tuple(layer.data.shape[:2])

    def _level_changed(self, *_: Any) -> None:
        self.results.relevel(self.threshold.value())
        self._show_verdict()

    def _show_verdict(self, *_: Any) -> None:
        if self.result is None:
            return
        level = self.threshold.value()
        text = pce_verdict(self.result.pce, level)
        h, w = self.result.residual.shape
        region = getattr(self, "_region", None)
        if self.result.pce < level and region is not None and h * w < 512 * 512:
            text += (
                f" On a region of {h}×{w} pixels even the true camera's trace is often too "
                "weak to detect: try a larger region or the whole photo before concluding."
            )
        self.verdict.setText(text)

    def _clear_scores(self, message: str) -> None:
        """Forget the previous scores (they belong to another photo) and say why."""
        self.result = None
        self.scores.setText(f"PCE ({PCE_ALIGNED}) –    NCC –")
        self.verdict.setText(message)

    def start(self) -> None:
        """Compute in a worker thread (button "Compute")."""
        photo, fp = self.photo.layer(), self.fingerprint.layer()
        if photo is None or fp is None:
            self._clear_scores(
                "Need a photo layer and a fingerprint layer: open a photo, and estimate or "
                "open its camera's fingerprint (.npz)."
            )
            return
        problem = size_problem(photo, fp)
        if problem is None:
            try:
                region = self.region.region(photo.data.shape)
            except ValueError as exc:
                problem = f"{str(exc)[0].upper()}{str(exc)[1:]}."
        if problem is not None:
            self._clear_scores(problem)
            return
        whole = region.is_whole(photo.data.shape)
        self._region = None if whole else region
        # attribute() brings a 16-bit photo to the 0..255 scale the residual and scores expect
        image = np.asarray(photo.data) if whole else region.crop(np.asarray(photo.data))
        K = np.asarray(fp.data) if whole else region.crop(np.asarray(fp.data))
        sigma, block = self.sigma.value(), self.block.value()
        subject = (photo.name, camera_of(fp), None if whole else region)
        attacker = self.attacker_path
        self.learned.setText("")
        self.run_button.setEnabled(False)
        self._clear_scores("Computing the residual…")
        self.worker = start_job(
            lambda report: (
                attribute(image, K, sigma=sigma, block_size=block),
                learned_scores(image, attacker),
            ),
            on_returned=lambda both: self._on_done(*both, *subject),
            on_errored=self._on_error,
            on_finished=lambda: None if self.closed else self.run_button.setEnabled(True),
            what="Attribution",
        )

    def _on_error(self, exc: BaseException) -> None:
        if not self.closed:
            self._clear_scores(f"{exc} Nothing was scored; check the inputs and Compute again.")

    def _on_done(
        self, result: AttributionResult, learned: str, photo_name: str, camera: str,
        region: Region | None,
    ) -> None:
        self.result = result
        if self.closed:
            return
        self.learned.setText(learned)
        offset = region.translate if region is not None else (0.0, 0.0)
        upsert_layer(
            self.viewer,
            residual_layer(result.residual, sigma=result.sigma, offset=offset,
                           name=layer_title("residual", photo_name, region=region),
                           photo=photo_name),
        )
        upsert_layer(
            self.viewer,
            block_heatmap_layer(
                result.block_ncc, result.block_size, image_shape=result.residual.shape,
                offset=offset, name=layer_title("block NCC", photo_name, camera, region),
                stage="before", photo=photo_name, camera=camera,
            ),
        )
        self.colorbar.set_limit(BLOCK_NCC_LIMIT, f"block NCC, B = {result.block_size}")
        level = self.threshold.value()
        self.scores.setText(
            f"PCE ({result.pce_kind}) {result.pce:.1f} (level {level:g})    NCC {result.ncc:.5f}"
        )
        self._show_verdict()
        h, w = result.residual.shape
        self.results.add(
            photo_name, camera, result.ncc, result.pce, level,
            region="whole photo" if region is None else region.label(), pixels=h * w,
            pce_kind=result.pce_kind,
        )

    # -- results table --------------------------------------------------------------------------
    def _show_table(self) -> None:
        rows = self.results.rows
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            photo = row["photo"] if row["region"] == "whole photo" else (
                f"{row['photo']} [{row['region']}]"
            )
            cells = (photo, row["camera"], f"{row['PCE']:.1f}", f"{row['NCC']:.5f}",
                     row["verdict"])
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()  # the table scrolls sideways inside the dock

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        """Save the results table as CSV (button "Export table"); returns the file or None."""
        path = Path(path) if path else self.csv_path.path()
        if not self.results.rows:
            self.verdict.setText("The table is empty: compute some scores first.")
            return None
        if path is None:
            self.verdict.setText("Choose where to save the table (a .csv file).")
            return None
        try:
            written = self.results.to_csv(path)
        except OSError as exc:
            self.verdict.setText(f"Could not save the table to {path}: {exc.strerror or exc}.")
            return None
        self.verdict.setText(f"Saved the table ({len(self.results.rows)} rows) to {written}.")
        return written
