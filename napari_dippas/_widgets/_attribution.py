"""Residual & attribution dock widget: does this photo carry this camera's fingerprint?"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Image
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from .._layers import block_heatmap_layer, dippas_kind, residual_layer
from .._models import AttributionResult, attribute, attribution_verdict
from .._workers import start_job
from ._common import ColorbarCanvas, DockWidget, LayerChoice, upsert_layer

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = ["AttributionWidget", "DEFAULT_THRESHOLDS", "is_photo", "is_plane", "learned_scores"]

#: Starting thresholds.  PCE: our PCE is taken at zero shift (photo and fingerprint aligned), about
#: chi-square(1) under "no match", so 25 means a false-alarm rate near Q(5) ≈ 3e-7; the classic 60
#: (Goljan et al. 2009) pays for a search over every shift of a full-size photo and is too strict
#: for crops of a few hundred pixels.  NCC: depends on the image size, 0.01 suits small crops.
DEFAULT_THRESHOLDS = {"PCE": 25.0, "NCC": 0.01}


def is_photo(layer: Layer) -> bool:
    """A single 2-D image, gray or RGB (not a stack, not one of our maps)."""
    if not isinstance(layer, Image) or dippas_kind(layer.metadata) in (
        "fingerprint", "residual", "block_ncc", "snapshots",
    ):
        return False
    return layer.data.ndim == (3 if layer.rgb else 2)


def is_plane(layer: Layer) -> bool:
    """A single 2-D non-RGB image layer (a fingerprint, a reference residual)."""
    return isinstance(layer, Image) and not layer.rgb and layer.data.ndim == 2


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
    """Residual, NCC/PCE with a plain-words verdict, and a block-NCC heatmap over the photo.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.worker = None
        self.result: AttributionResult | None = None

        self.photo = LayerChoice(napari_viewer, is_photo, prefer="photo")
        self.fingerprint = LayerChoice(napari_viewer, is_plane, prefer="fingerprint")
        self.sigma = QDoubleSpinBox(minimum=0.5, maximum=20.0, value=5.0, singleStep=0.5)
        self.block = QSpinBox(minimum=8, maximum=4096, value=64, singleStep=16)
        self.block.setSuffix(" px")
        self.score = QComboBox()
        self.score.addItems(list(DEFAULT_THRESHOLDS))
        self.threshold = QDoubleSpinBox(decimals=4, minimum=-1e6, maximum=1e9)
        self.threshold.setValue(DEFAULT_THRESHOLDS["PCE"])
        self.score.currentTextChanged.connect(self._score_changed)
        self.threshold.valueChanged.connect(self._show_verdict)
        self.run_button = QPushButton("Compute residual && scores")
        self.run_button.clicked.connect(self.start)
        self.scores = QLabel("NCC –    PCE –")
        self.verdict = QLabel("Choose a photo and a fingerprint, then Compute.")
        self.verdict.setWordWrap(True)
        self.colorbar = ColorbarCanvas(napari_viewer, "block NCC")
        # optional second opinion: a model from `dippas train-attacker`
        self.attacker_path: Path | None = None
        self.attacker_button = QPushButton("Learned attacker: none (load a model…)")
        self.attacker_button.clicked.connect(self._choose_attacker)
        self.learned = QLabel("")
        self.learned.setWordWrap(True)

        form = QFormLayout()
        form.addRow("photo", self.photo)
        form.addRow("fingerprint", self.fingerprint)
        form.addRow("sigma", self.sigma)
        form.addRow("block size", self.block)
        form.addRow("verdict on", self.score)
        form.addRow("threshold", self.threshold)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.scores)
        layout.addWidget(self.verdict)
        layout.addWidget(self.attacker_button)
        layout.addWidget(self.learned)
        layout.addWidget(self.colorbar)
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

    def _score_changed(self, score: str) -> None:
        self.threshold.setValue(DEFAULT_THRESHOLDS[score])
        self._show_verdict()

    def _show_verdict(self, *_: Any) -> None:
        if self.result is None:
            return
        score = self.score.currentText()
        value = self.result.pce if score == "PCE" else self.result.ncc
        self.verdict.setText(attribution_verdict(score, value, self.threshold.value()))

    def start(self) -> None:
        """Compute in a worker thread (button "Compute")."""
        photo, fp = self.photo.layer(), self.fingerprint.layer()
        if photo is None or fp is None:
            self.verdict.setText("Need a photo layer and a fingerprint layer.")
            return
        # attribute() brings a 16-bit photo to the 0..255 scale the residual and scores expect
        image, K = photo.data, fp.data
        sigma, block = self.sigma.value(), self.block.value()
        attacker = self.attacker_path
        self.run_button.setEnabled(False)
        self.verdict.setText("Computing the residual…")
        self.worker = start_job(
            lambda report: (
                attribute(image, K, sigma=sigma, block_size=block),
                learned_scores(image, attacker),
            ),
            on_returned=lambda both: self._on_done(*both, photo.name),
            on_errored=lambda exc: None if self.closed else self.verdict.setText(str(exc)),
            on_finished=lambda: None if self.closed else self.run_button.setEnabled(True),
            what="Attribution",
        )

    def _on_done(self, result: AttributionResult, learned: str, photo_name: str) -> None:
        self.result = result
        if self.closed:
            return
        self.learned.setText(learned)
        upsert_layer(self.viewer, residual_layer(result.residual, sigma=result.sigma))
        heat = upsert_layer(
            self.viewer,
            block_heatmap_layer(
                result.block_ncc, result.block_size, image_shape=result.residual.shape,
                stage="before", photo=photo_name,
            ),
        )
        self.colorbar.set_limit(heat.contrast_limits[1], f"block NCC (B = {result.block_size})")
        self.scores.setText(f"NCC {result.ncc:.5f}    PCE {result.pce:.1f}")
        self._show_verdict()
