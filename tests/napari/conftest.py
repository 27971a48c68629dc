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
        mode="aware", device="cpu", seed=3, preset="tiny", tau_psnr=20.0, stop_psnr=40.0,
        max_iter=60, lr=1e-2,
    )


@pytest.fixture
def viewer(make_napari_viewer):
    """A real napari viewer (pytest-xvfb provides the display)."""
    return make_napari_viewer()


@pytest.fixture
def configure():
    """``configure(widget, settings)``: put AnonymizeSettings into an AnonymizeWidget (the form
    follows through the two-way binding)."""

    def apply(widget, settings) -> None:
        widget.settings.preset = settings.preset  # a preset resets tau/stop/max_iter: first
        widget.settings.update(settings.model_dump(exclude={"preset"}))

    return apply


@pytest.fixture
def synthetic_run(tmp_path):
    """``make(name, bits=8, seed=0)``: a recorded run of synthetic snapshots, no DIP (fast).

    Snapshots are ``photo·(1 + a·K) + noise`` with ``a`` varying over the image, so assembly has
    real choices to make.  ``bits=16`` stores the same photo as uint16 (×257), as a 16-bit
    camera file would be read; the snapshots (0..255 floats) are the same.
    """
    from dippas_core.dip.inversion import Step
    from dippas_core.run import RunDirectory, record

    def make(name: str, bits: int = 8, seed: int = 0, n: int = 8, shape=(64, 64)):
        rng = np.random.default_rng(seed)
        h, w = shape
        yy, xx = np.mgrid[0:h, 0:w]
        shade = (np.sin(xx / 9.0) * np.cos(yy / 13.0))[..., None] * np.array([60.0, 48.0, 36.0])
        photo = np.clip(np.rint(128 + shade + rng.normal(0, 4, (h, w, 3))), 0, 255).astype(np.uint8)
        K = rng.normal(0, 0.03, (h, w)).astype(np.float32)
        snaps = []
        for _ in range(n):
            phase = rng.uniform(0, 2 * np.pi, 2)
            a = rng.uniform(-0.5, 0.5) + np.sin(xx / 17.0 + phase[0]) * np.cos(yy / 11.0 + phase[1])
            snap = photo * (1 + a[..., None] * K[..., None]) + rng.normal(0, 1.5, (h, w, 3))
            snaps.append(np.clip(snap, 0, 255).astype(np.float32))

        def steps():
            for i, snap in enumerate(snaps, start=1):
                yield Step(i, 0.01, 30.0 + 0.1 * i, 0.01, snap)

        stored = photo.astype(np.uint16) * 257 if bits == 16 else photo
        run = RunDirectory.create(
            tmp_path / name, stored, K, mode="aware", dip_config={"seed": seed, "tau_psnr": 30.0}
        )
        record(run, steps())
        run.close()
        return run.path, photo, K

    return make
