"""The ``snapshots`` layer of a one-tile run, grown from the run's store as the run keeps them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._layer_updates import upsert_layer
from .._layers import snapshots_layer

if TYPE_CHECKING:
    import napari

    from .._models import AnonymizeJob, RunHistory

__all__ = ["LAYER_INTERVAL_S", "SnapshotsView"]

#: seconds between two updates of the snapshots layer (new data re-slices the layer: tens of ms)
LAYER_INTERVAL_S = 1.0


def _ncc_from_tile_sums(sums: np.ndarray) -> np.ndarray:
    """Whole-image NCC of each snapshot from its per-tile sums (n×Th×Tw×3 → n)."""
    total = sums.sum(axis=(1, 2))
    den = np.sqrt(total[:, 1] * total[:, 2])
    return np.divide(total[:, 0], den, out=np.zeros_like(den), where=den > 0)


class SnapshotsView:
    """The ``snapshots`` layer of one run (N×H×W×3, the store's memory map) and the NCC points
    of its kept snapshots (from the per-tile sums the run records: no extra residual).

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layer goes.
    run_dir : Path
        The run's folder (its store appears there once the run starts).
    offset : (float, float)
        The region's place on the photo.
    job, history
        Get the NCC of the newest snapshot and the NCC points.
    """

    def __init__(
        self, viewer: napari.Viewer, run_dir: Path, offset: tuple[float, float],
        job: AnonymizeJob, history: RunHistory, label: str = "",
    ) -> None:
        self.viewer = viewer
        #: the layer's name: ``snapshots — <the run's title>`` (each run keeps its own layer)
        self.name = f"snapshots — {label}" if label else "snapshots"
        self.run_dir = Path(run_dir)
        self.offset = offset
        self.job = job
        self.history = history
        #: snapshots shown in the layer, NCC points added, time of the last layer update
        self.n_shown = 0
        self.n_ncc = 0
        self.last_update = 0.0
        self._store: Any = None
        self._tile_sums: Any = None
        #: the ``snapshots`` layer's state before this run's placeholder replaced it
        self._previous: tuple[Any, dict[str, Any], float] | None = None

    def _tuple(self, stack: np.ndarray) -> Any:
        data, kwargs, kind = snapshots_layer(
            stack, name=self.name, run_dir=str(self.run_dir), status="recording"
        )
        kwargs["translate"] = (0.0, *self.offset)
        return data, kwargs, kind

    def prepare(self, shape: tuple[int, int]) -> None:
        """Add the layer before the run (transparent, one blank frame).

        Adding a layer builds its controls and shaders (hundreds of ms); doing it now, not when
        the first snapshot arrives, keeps the GUI fluid during the run.
        """
        if self.n_shown:  # a snapshot came before this turn: its layer is there already
            return
        blank = np.zeros((1, *shape, 3), np.uint16)
        active = self.viewer.layers.selection.active  # the new layer must not take the focus
        if self.name in self.viewer.layers:  # this run's, resumed: restored if this one fails
            old = self.viewer.layers[self.name]
            self._previous = (old.data, dict(old.metadata), float(old.opacity))
        layer = upsert_layer(self.viewer, self._tuple(blank))
        # transparent, not hidden: a hidden layer leaves the dims, and the slider would come and go
        layer.opacity = 0.0
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active

    @property
    def unseen(self) -> bool:
        """Whether the steps say the store holds snapshots not yet shown (or without NCC)."""
        return self.job.n_snapshots > min(self.n_shown, self.n_ncc)

    def refresh(self, force: bool = False, allow_layer: bool = True) -> bool:
        """Add NCC points from the tile sums on disk and grow the layer.

        The layer is updated at most every :data:`LAYER_INTERVAL_S` (``force``: now) and only
        if ``allow_layer``.  Returns whether it was updated.
        """
        from dippas_core.snapshots import SnapshotStore, TileSums

        if self._store is None:
            if not (self.run_dir / TileSums.META).exists():
                return False
            self._store = SnapshotStore(self.run_dir)
            self._tile_sums = TileSums(self.run_dir)
        now = time.monotonic()
        n = self._store.refresh()
        due = force or (allow_layer and now - self.last_update >= LAYER_INTERVAL_S)
        updated = n > self.n_shown and due
        if updated:
            self.last_update = now
            # follow the newest snapshot unless the user parked the slider on an older one
            # (napari may briefly reset the slider to 0 while a layer's range changes, so 0
            # does not count as a choice)
            current = self.viewer.dims.current_step[0]
            was_last = not 0 < current < self.n_shown - 1
            layer = upsert_layer(self.viewer, self._tuple(self._store.frames))
            layer.opacity = 1.0
            if was_last:
                self.viewer.dims.set_current_step(0, n - 1)
            self.n_shown = n
        k = self._tile_sums.refresh()
        if k > self.n_ncc:
            values = _ncc_from_tile_sums(self._tile_sums.array(k)[self.n_ncc : k])
            iterations = self._store.iterations[self.n_ncc : k]
            self.history.add_ncc(list(zip(iterations, values, strict=False)))
            self.job.ncc = float(values[-1])
            self.n_ncc = k
        return updated

    def forget_previous(self) -> None:
        """The run ended: the layer it replaced is gone for good (its memory map is let go)."""
        self._previous = None

    def _ours(self) -> Any:
        layers = self.viewer.layers
        if self.name not in layers:
            return None
        layer = layers[self.name]
        meta = layer.metadata.get("dippas", {})
        return layer if meta.get("run_dir") == str(self.run_dir) else None  # else not ours

    def finished(self, status: str) -> None:
        """The run ended (``status``): the layer says so; a placeholder that got nothing goes."""
        layer = self._ours()
        if layer is None:
            return
        layer.metadata["dippas"]["status"] = status
        if not self.n_shown and layer.opacity == 0.0:
            self.viewer.layers.remove(layer)  # nothing came: no empty layer stays

    def failed(self) -> None:
        """A failed run: its placeholder goes (the previous run's layer comes back).

        Snapshots the run already showed stay, marked failed: they are real and on disk.
        """
        layer = self._ours()
        if layer is not None:
            meta = layer.metadata.get("dippas", {})
            if self.n_shown:
                layer.metadata = {"dippas": {**meta, "status": "failed"}}
            elif self._previous is not None:
                data, metadata, opacity = self._previous
                layer.data = data
                layer.metadata = metadata
                layer.opacity = opacity
            else:
                self.viewer.layers.remove(layer)
        self._previous = None
