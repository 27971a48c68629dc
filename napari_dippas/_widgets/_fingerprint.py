"""Fingerprint dock widget: flat-field shots (a folder or an image-stack layer) → fingerprint K."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image
from qtpy.QtWidgets import (
    QButtonGroup,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
)

from .._layer_updates import add_new_layer
from .._layers import dippas_kind, fingerprint_layer, layer_title
from .._workers import JobCancelled, start_job
from ._forms import DockWidget, LayerChoice, PathEdit

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = ["DEFAULT_FINGERPRINTS_FOLDER", "FingerprintWidget", "flat_field_files"]

#: where fingerprints are proposed to be saved: never inside the flat-field (evidence) folder
DEFAULT_FINGERPRINTS_FOLDER = Path.home() / "dippas-fingerprints"


def _file_stem(name: str) -> str:
    """A file name made of a camera name (letters, digits, ``-_.`` kept)."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return stem or "fingerprint"


def flat_field_files(folder: str | Path, pattern: str = "*") -> list[Path]:
    """The image files of ``folder`` whose names match ``pattern`` (a glob), sorted by name.

    ``pattern`` picks one camera in a folder that mixes several (``Nikon_D70s_0_*``).

    Raises
    ------
    dippas_core.errors.InputError
        No such folder, no matching image, or a pattern ``glob`` refuses (an absolute one,
        ``**x``): the message says what to type instead.
    """
    from dippas_core.errors import InputError
    from dippas_core.io import IMAGE_SUFFIXES, find_images

    try:
        files = find_images(folder, pattern or "*")
    except (ValueError, NotImplementedError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(
            f"the file pattern {pattern!r} cannot be used ({exc}); give a file-name pattern "
            "relative to the folder, such as Nikon_D70s_0_* or *.jpg"
        ) from exc
    if not files:
        raise InputError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) matching {pattern!r} in {folder}"
        )
    return files


def _is_stack(layer: Layer) -> bool:
    """Image layers holding several frames: N×H×W or N×H×W×3."""
    if not isinstance(layer, Image) or dippas_kind(layer.metadata) == "snapshots":
        return False  # a run's snapshots are no flat fields
    return layer.data.ndim == (4 if layer.rgb else 3)


def _iterate(
    sources: Sequence[Any], crop: int, report: Callable[[Any], None], cancel: Any = None
) -> Iterator[np.ndarray]:
    """Yield each flat field (read from disk when a path), centre-cropped; report progress.

    Raises :class:`JobCancelled` before the next shot once ``cancel`` (a CancelToken) is set.
    """
    from dippas_core.io import center_crop, read_image

    for i, src in enumerate(sources):
        if cancel is not None and cancel.cancelled:
            raise JobCancelled("fingerprint estimate cancelled")
        image = read_image(src) if isinstance(src, Path) else np.asarray(src)
        if crop:
            image = center_crop(image, crop)
        yield image
        report((i + 1, len(sources)))


class FingerprintWidget(DockWidget):
    """Estimate a camera fingerprint K from flat-field shots; add it as a layer and save it.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (napari passes it when the widget is opened from the Plugins menu).
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.worker = None
        self.cancel: Any = None
        #: the layer of the latest estimate
        self.layer: Any = None

        self.from_folder = QRadioButton("folder of flat-field files")
        self.from_layer = QRadioButton("image-stack layer")
        self.from_folder.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.from_folder)
        group.addButton(self.from_layer)
        self.folder = PathEdit("folder", placeholder="folder with .jpg/.png/.tif shots")
        self.pattern = QLineEdit("*")
        self.pattern.setToolTip("only files whose names match, e.g. Nikon_D70s_0_*")
        self.stack = LayerChoice(napari_viewer, _is_stack)
        self.camera = QLineEdit()
        self.camera.setPlaceholderText("camera name (stored with K)")
        self.sigma = QDoubleSpinBox(minimum=0.5, maximum=20.0, value=5.0, singleStep=0.5)
        self.crop = QSpinBox(minimum=0, maximum=100000, value=0, singleStep=64)
        self.crop.setSpecialValueText("full frame")
        self.crop.setToolTip("centre crop (pixels) applied to every shot; 0 keeps the full frame")
        self.output = PathEdit("save_file", "Fingerprint (*.npz)", "where to save K (.npz)")
        self.run_button = QPushButton("Estimate fingerprint")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("stop reading shots; nothing is saved")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m shots")
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # narrow docks: wrap
        form.addRow(self.from_folder)
        form.addRow(self.folder)
        form.addRow("files", self.pattern)
        form.addRow(self.from_layer)
        form.addRow(self.stack)
        form.addRow("camera", self.camera)
        form.addRow("sigma", self.sigma)
        form.addRow("crop", self.crop)
        form.addRow("save to", self.output)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.folder.edit.textChanged.connect(self._suggest_output)
        self.pattern.textChanged.connect(self._suggest_output)
        self.camera.textChanged.connect(self._suggest_output)
        self.stack.currentTextChanged.connect(self._suggest_output)
        self.from_folder.toggled.connect(self._suggest_output)
        self._suggested = ""

    def _suggest_output(self, *_: Any) -> None:
        """Propose ``~/dippas-fingerprints/<camera>.npz`` (never inside the evidence folder).

        A path the user typed is left alone; a previous suggestion follows the camera name.
        """
        current = self.output.edit.text()
        if current and current != self._suggested:
            return
        camera = self.camera.text().strip() or self._source_camera()
        if not camera:  # no name to go by: no suggestion (never another camera's file)
            self._suggested = ""
            self.output.edit.clear()
            return
        self._suggested = str(DEFAULT_FINGERPRINTS_FOLDER / f"{_file_stem(camera)}.npz")
        self.output.set_path(self._suggested)

    def _source_camera(self) -> str:
        """The camera the chosen shots name: the pattern (``Nikon_D70_1_*``), else the folder's
        name, or the image-stack layer's name."""
        if not self.from_folder.isChecked():
            layer = self.stack.layer()
            return layer.name if layer is not None else ""
        folder = self.folder.path()
        pattern = self.pattern.text().strip() or "*"
        return pattern.rstrip("*_") if pattern != "*" else (folder.name if folder else "")

    def stop(self) -> None:
        """Cancel the estimate (button "Cancel"): it stops before the next shot."""
        if self.cancel is not None:
            self.cancel.cancel()
            self.status.setText("Cancelling after the current shot…")

    def _sources(self) -> tuple[list[Any], str]:
        from dippas_core.errors import InputError

        if self.from_folder.isChecked():
            folder = self.folder.path()
            if folder is None:
                raise InputError("choose the folder of flat-field files")
            pattern = self.pattern.text().strip() or "*"
            camera = pattern.rstrip("*_") if pattern != "*" else folder.name
            return list(flat_field_files(folder, pattern)), camera
        layer = self.stack.layer()
        if layer is None:
            raise InputError("no image-stack layer (N×H×W or N×H×W×3) in the viewer")
        return [np.asarray(frame) for frame in layer.data], layer.name

    def start(self) -> None:
        """Start the estimate in a worker thread (button "Estimate fingerprint")."""
        from dippas_core.cancel import CancelToken
        from dippas_core.errors import DippasError

        out = self.output.path()
        if out is not None and out.suffix.lower() != ".npz":  # now, not after minutes of work
            self.status.setText(
                f"The fingerprint file must end in .npz (got {out.name!r}); "
                "choose another name under 'save to'."
            )
            return
        try:
            sources, default_camera = self._sources()
        except DippasError as exc:
            self.status.setText(str(exc))
            return
        camera = self.camera.text().strip() or default_camera
        sigma, crop = self.sigma.value(), self.crop.value()
        self.cancel = cancel = CancelToken()
        self.progress.setRange(0, len(sources))
        self.progress.setValue(0)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Reading {len(sources)} shots…")

        def job(report: Callable[[Any], None]) -> Any:
            from dippas_core.fingerprint import estimate_fingerprint

            fp = estimate_fingerprint(
                _iterate(sources, crop, report, cancel), sigma=sigma, camera=camera
            )
            save_error = None
            if out is not None:
                try:
                    fp.save(out)
                except (OSError, ValueError) as exc:  # the estimate survives as a layer
                    save_error = exc
            return fp, out, save_error

        self.worker = start_job(
            job, on_progress=self._on_progress, on_returned=self._on_done,
            on_errored=self._on_error, on_finished=self._on_finished,
            what="Fingerprint estimate", cancel=cancel,
        )

    def _close_down(self) -> None:
        """The widget left napari: stop reading shots."""
        if self.cancel is not None:
            self.cancel.cancel()

    def _on_finished(self) -> None:
        self.cancel = None
        if not self.closed:
            self.run_button.setEnabled(True)
            self.cancel_button.setEnabled(False)

    def _on_progress(self, batch: list[tuple[int, int]]) -> None:
        if self.closed:
            return
        done, total = batch[-1]
        self.progress.setValue(done)
        self.status.setText(f"Read {done} of {total} shots…")

    def _on_done(self, value: tuple[Any, Path | None, BaseException | None]) -> None:
        fp, out, save_error = value
        if self.closed:
            return
        saved_to = None if out is None or save_error is not None else str(out)
        # a second fingerprint is a new layer beside the first, named by its camera
        self.layer = add_new_layer(
            self.viewer,
            fingerprint_layer(
                fp.K, camera=fp.camera, n_images=fp.n_images, sigma=fp.sigma, version=fp.version,
                path=saved_to, name=layer_title("fingerprint", camera=fp.camera),
            ),
        )
        if save_error is not None:
            from napari.utils.notifications import show_error

            message = (
                f"The fingerprint is in the '{self.layer.name}' layer but could not be saved to "
                f"{out}: {save_error}. Choose another file under 'save to' and estimate again."
            )
            show_error(message)
            self.status.setText(message)
            return
        saved = f", saved to {out}" if out is not None else " (not saved: no file chosen)"
        # done with this camera: the next shots get their own name and file, never this one's
        self.camera.blockSignals(True)
        self.camera.clear()
        self.camera.blockSignals(False)
        self._suggested = self.output.edit.text()  # (a path typed for this camera goes too)
        self._suggest_output()
        self.status.setText(
            f"Fingerprint of {fp.camera or 'the camera'} from {fp.n_images} shots, "
            f"{fp.shape[0]}×{fp.shape[1]}{saved}."
        )

    def _on_error(self, exc: BaseException) -> None:
        if not self.closed:
            stopped = isinstance(exc.__cause__, JobCancelled)
            self.status.setText(
                "Cancelled: no fingerprint was made and nothing was saved." if stopped
                else f"{exc} Check the files (or the layer) and estimate again."
            )
