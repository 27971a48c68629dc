"""The Anonymize dock's form: its fields bound to :class:`AnonymizeSettings`, and its inputs.

:class:`AnonymizeForm` is the settings half of the Anonymize dock
(:class:`~napari_dippas._widgets._anonymize.AnonymizeWidget` adds running): the fields, their
two-way binding with the settings model, and what a run would take (the photo, the fingerprint,
the region, the tile plan, the provenance record).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QMessageBox, QSpinBox

from .._layer_updates import layer_source_path
from .._layers import Region, dippas_kind
from .._models import AnonymizeSettings, run_provenance
from ._attribution import (
    camera_of,
    is_fingerprint,
    is_photo,
    matching_fingerprint,
    size_problem,
)
from ._forms import DockWidget, LayerChoice, PathEdit, RegionPicker, without_kind

if TYPE_CHECKING:
    import napari

__all__ = ["DEFAULT_RUNS_FOLDER", "AnonymizeForm", "device_choices"]

#: outside any evidence folder: run folders hold copies of the photo and its fingerprint
DEFAULT_RUNS_FOLDER = Path.home() / "dippas-runs"


def device_choices(lines: list[str] | None = None) -> tuple[list[str], list[str]]:
    """``(choices, descriptions)``: ``auto`` plus each device in ``lines`` (as
    ``dippas_core.dip.device.describe_devices`` words them), and the lines.

    Without ``lines`` (the dock just opened: torch is not loaded in the viewer's process, the
    warm-up process reports the devices later) ``auto`` and ``cpu``, the device every machine has.
    """
    if lines is None:
        return ["auto", "cpu"], []
    names = [line.split()[0] for line in lines]
    return ["auto", *dict.fromkeys(["cpu", *names])], lines


class AnonymizeForm(DockWidget):
    """The Anonymize dock's fields, bound both ways to :attr:`settings`.

    Subclasses lay :attr:`form_layout` out in :attr:`body` with their own controls.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(napari_viewer)
        self.settings = AnonymizeSettings()
        #: the name of the photo layer of the last inputs read (see :meth:`_inputs`)
        self._photo_name = ""
        self.photo = LayerChoice(napari_viewer, is_photo, prefer="photo")
        self.fingerprint = LayerChoice(napari_viewer, is_fingerprint, prefer="fingerprint",
                                       shown=without_kind("fingerprint"))
        self.region = RegionPicker(napari_viewer, self._photo_shape)
        self.mode = QComboBox()
        self.mode.addItems(["aware", "blind"])
        self.mode.setToolTip("aware: remove the fingerprint K; blind: use the photo's own residual")
        choices, _ = device_choices()
        self.device = QComboBox()
        self.device.addItems(choices)
        self.devices_found = QLabel("found: looking for devices…")
        self.devices_found.setWordWrap(True)
        self.preset = QComboBox()
        self.preset.addItems(["tiny", "demo", "cpu", "paper"])  # AnonymizeSettings.preset's
        self.preset.setToolTip(
            "network size: tiny (tests), demo (tiny, at 38/39 dB), cpu (laptop), paper (GPU)"
        )
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1)
        self.tau = QDoubleSpinBox(minimum=0.0, maximum=99.0, decimals=1, singleStep=0.5)
        self.tau.setSuffix(" dB")
        self.tau.setToolTip(
            "the recording threshold: outputs at least this close to the photo are kept as "
            "snapshots"
        )
        self.stop_psnr = QDoubleSpinBox(minimum=0.0, maximum=99.0, decimals=1, singleStep=0.5)
        self.stop_psnr.setSuffix(" dB")
        self.max_iter = QSpinBox(minimum=1, maximum=1_000_000, singleStep=100)
        self.lr = QDoubleSpinBox(minimum=1e-5, maximum=1.0, decimals=5, singleStep=1e-4)
        self.lr.setToolTip("Adam learning rate (the paper: 0.001)")
        self.tile_size = QSpinBox(minimum=64, maximum=8192, singleStep=32)
        self.tile_size.setSuffix(" px")
        self.tile_size.setToolTip("larger photos are cut into tiles of this side, one network each")
        self.overlap = QSpinBox(minimum=32, maximum=4096, singleStep=32)
        self.overlap.setSuffix(" px")
        self.overlap.setToolTip("neighbouring tiles overlap by this much (blended in the overlap)")
        self.runs_folder = PathEdit("folder", placeholder="folder for run directories")
        self.runs_folder.set_path(DEFAULT_RUNS_FOLDER)
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
        form.addRow("tile size", self.tile_size)
        form.addRow("tile overlap", self.overlap)
        form.addRow("runs folder", self.runs_folder)
        self.form_layout = form
        self._bind()
        # the fingerprint follows the photo: its size and camera (until the analyst picks one)
        self._fingerprint_picked = False
        self.fingerprint.activated.connect(self._fingerprint_picked_by_hand)
        self.photo.currentTextChanged.connect(self._photo_changed)
        napari_viewer.layers.events.inserted.connect(self.match_fingerprint)
        self.match_fingerprint()

    def _fingerprint_picked_by_hand(self, *_: Any) -> None:
        self._fingerprint_picked = True

    def _photo_changed(self, *_: Any) -> None:
        self._fingerprint_picked = False  # another photo: its own camera's fingerprint
        self.match_fingerprint()

    def match_fingerprint(self, *_: Any) -> None:
        """Choose the fingerprint of the photo's size and camera
        (:func:`~._attribution.matching_fingerprint`), unless the analyst picked one."""
        photo = self.photo.layer()
        if self._fingerprint_picked or photo is None or self.closed:
            return
        found = matching_fingerprint(photo, [la for la in self.viewer.layers if is_fingerprint(la)])
        if found is not None and found is not self.fingerprint.layer():
            self.fingerprint.select(found)

    def _stop_matching(self) -> None:
        """The dock is closing: no more matching on the viewer's layer events."""
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            self.viewer.layers.events.inserted.disconnect(self.match_fingerprint)

    def show_devices(self, lines: list[str]) -> None:
        """The devices torch found (the warm-up process reports them): the list to choose from;
        the chosen device stays chosen."""
        choices, lines = device_choices(lines)
        chosen = self.device.currentText()
        self.device.blockSignals(True)
        self.device.clear()
        self.device.addItems(choices)
        self.device.setCurrentText(chosen if chosen in choices else "auto")
        self.device.blockSignals(False)
        if self.device.currentText() != self.settings.device:
            self.settings.device = self.device.currentText()
        self.devices_found.setText("found: " + "; ".join(lines))

    # -- settings <-> form ----------------------------------------------------------------------
    def _bind(self) -> None:
        """Two-way binding between :attr:`settings` and the form fields."""
        combos = {"mode": self.mode, "device": self.device, "preset": self.preset}
        spins = {"seed": self.seed, "record_psnr": self.tau, "stop_psnr": self.stop_psnr,
                 "max_iter": self.max_iter, "lr": self.lr, "tile_size": self.tile_size,
                 "overlap": self.overlap}
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
        self._mode_changed(self.settings.mode)
        self._apply_preset(self.settings.preset)

    def _mode_changed(self, mode: str) -> None:
        self.fingerprint.setEnabled(mode == "aware")

    def _apply_preset(self, name: str) -> None:
        """A new preset brings its own values (device, thresholds, iterations, lr, tiles)."""
        self.settings.use_preset(name)

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

    # -- the tile plan and the cost, before Run ---------------------------------------------------
    def _plan(self) -> tuple[Any, Region, tuple[int, ...]]:
        """The tile plan of the run Run would start, its region and the photo's shape.

        Raises
        ------
        dippas_core.errors.InputError
            No photo, a bad region or tile settings (in the analyst's words).
        """
        from dippas_core.errors import InputError
        from dippas_core.tiling import plan_tiles

        layer = self.photo.layer()
        if layer is None:
            raise InputError("Open a colour photo first (it appears in the 'photo' list).")
        shape = tuple(np.shape(layer.data))
        try:
            region = self.region.region(shape)
        except ValueError as exc:
            raise InputError(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
        plan = plan_tiles((region.h, region.w), self.settings.tile_size, self.settings.overlap)
        return plan, region, shape
