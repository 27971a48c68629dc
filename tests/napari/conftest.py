"""Fixtures for the plugin's tests: small real data (the bundled Dresden sample) and tiny runs."""

from __future__ import annotations

import numpy as np
import pytest

#: photo crop used by the DIP tests: 64×64 keeps a tiny network at a few seconds on one CPU core
CROP = 64


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Six engineers share two cores: torch gets one thread (only if a test imported it)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def sample():
    """The bundled Dresden photo (uint8 256×256×3) and its camera's Fingerprint."""
    from dippas_core.sample import sample_data

    return sample_data()


@pytest.fixture(scope="session")
def small(sample):
    """A CROP×CROP centre crop of the sample photo and of its fingerprint K."""
    from dippas_core.io import center_crop

    photo, fp = sample
    return np.ascontiguousarray(center_crop(photo, CROP)), fp.center_crop(CROP)


@pytest.fixture
def tiny_settings():
    """Anonymize settings for a run of a few seconds that keeps snapshots early."""
    from napari_dippas._models import AnonymizeSettings

    # lr 1e-2 (not the paper's 1e-3) takes the 64×64 crop past 20 dB in about 30 iterations
    return AnonymizeSettings(
        mode="aware", device="cpu", seed=3, preset="tiny", record_psnr=20.0, stop_psnr=40.0,
        max_iter=60, lr=1e-2,
    )


@pytest.fixture
def viewer(make_napari_viewer):
    """A real napari viewer (tests/_display.py provides the display)."""
    return make_napari_viewer()


@pytest.fixture
def configure():
    """``configure(widget, settings)``: put AnonymizeSettings into an AnonymizeWidget (the form
    follows through the two-way binding)."""

    def apply(widget, settings) -> None:
        widget.settings.preset = settings.preset  # a preset resets tau/stop/max_iter: first
        widget.settings.update(settings.model_dump(exclude={"preset"}))
        # some tests start long runs on purpose (and stop them): no "large run" dialog
        widget.confirm = lambda question: True

    return apply


@pytest.fixture
def synthetic_run(synthetic_run):
    """``make(name, bits=8, seed=0)``: the folder, 8-bit photo and K of a recorded run of
    synthetic snapshots, no DIP (fast; the core tests' factory, closed so widgets can open it).

    Snapshots are ``photo·(1 + a·K) + noise`` with ``a`` varying over the image, so assembly has
    real choices to make.  ``bits=16`` stores the same photo as uint16 (×257).
    """

    def make(name: str, bits: int = 8, seed: int = 0, n: int = 8, shape=(64, 64)):
        run = synthetic_run(n, shape, seed=seed, bits=bits, name=name)
        run.close()
        photo = run.photo if bits == 8 else (run.photo // 257).astype(np.uint8)
        return run.path, photo, run.reference

    return make


@pytest.fixture
def layer_of():
    """``layer_of(viewer, kind, stage=None)``: the newest layer of a DIPPAS kind (and stage),
    None if none; found by its role, as the widgets find it: each run's layers are named by
    the run (``anonymized — photo × camera (run-…)``)."""
    from napari_dippas._layers import dippas_kind

    def find(viewer, kind, stage=None):
        found = [
            layer for layer in viewer.layers
            if dippas_kind(layer.metadata) == kind
            and (stage is None or layer.metadata["dippas"].get("stage") == stage)
        ]
        return found[-1] if found else None

    find.named = lambda viewer, what: next(  # "anonymized" -> "anonymized — <the run>"
        layer for layer in reversed(viewer.layers)
        if layer.name == what or layer.name.startswith(f"{what} — ")
    )
    return find
