"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import _display
import _testdata
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: $DIPPAS_TESTDATA, else ../shared/data/prnu-python-testdata (see tests/_testdata.py)
TESTDATA = _testdata.data_folder()


@pytest.hookimpl(optionalhook=True)
def pytest_xvfb_disable(config: pytest.Config) -> bool:
    """The suite starts its display itself (tests/_display.py: out of pytest's process group)."""
    return True


def pytest_configure(config: pytest.Config) -> None:
    _display.stop_on_signals()
    wants_display = config.pluginmanager.has_plugin("xvfb") and not config.getoption(
        "--no-xvfb", default=False
    )
    if wants_display and not os.environ.get("PYTEST_XDIST_WORKER"):
        _display.start_display()


def pytest_runtest_logfinish(nodeid: str, location: tuple) -> None:
    """A Ctrl-C that a Qt callback swallowed (pytest-qt records it and goes on): stop here."""
    if _display.interrupted():
        raise KeyboardInterrupt("stopped after the test a Ctrl-C interrupted")


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The Dresden subset of prnu-python (6 Nikon cameras), every file checked against the
    registry's SHA-256 (``tests/testdata-registry.txt``); CI must have it."""
    folder = _testdata.data_folder()
    if not (folder / "ff-jpg").is_dir() and os.environ.get(_testdata.DOWNLOAD_ENV) == "1":
        for name in _testdata.registered():
            _testdata.fetch(name)
    if not (folder / "ff-jpg").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"camera test data missing at {folder}")
        pytest.skip(f"camera test data not found at {folder} (set DIPPAS_TESTDATA)")
    _testdata.verify()  # a damaged or missing file fails here, named
    return folder


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test, restored after (the DIP tests share 2 cores)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def float64():
    """torch's default dtype float64 for the test (the networks are built in it), restored after:
    where equality is the point, float32's kernel-dependent rounding no longer blurs it."""
    torch = pytest.importorskip("torch")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def synthetic_run(tmp_path):
    """Factory of recorded runs of synthetic snapshots (no DIP): ``photo·(1 + a·K) + noise``.

    ``a`` varies in sign and size across snapshots and over the image, so block NCCs differ in sign
    across snapshots and blocks like the real thing.  Used by the runs/assembly tests.
    ``bits=16`` stores the same photo as uint16 (×257), as a 16-bit camera file would be read;
    the snapshots (0..255 floats) are the same.
    """
    from dippas_core.dip.inversion import Step
    from dippas_core.run import RunDirectory, record

    made = iter(range(10**6))

    def make(n=12, shape=(96, 80), *, seed=0, tau=30.0, mode="aware", bits=8, name=None,
             **create_kw):
        rng = np.random.default_rng(seed)
        h, w = shape
        yy, xx = np.mgrid[0:h, 0:w]
        shade = (np.sin(xx / 9.0) * np.cos(yy / 13.0))[..., None] * np.array([60.0, 48.0, 36.0])
        photo = np.clip(np.rint(128 + shade + rng.normal(0, 4, (h, w, 3))), 0, 255).astype(np.uint8)
        K = rng.normal(0, 0.03, (h, w)).astype(np.float32)

        def steps():
            for i in range(1, n + 1):
                # fingerprint strength varying over the image: blocks prefer different snapshots
                phase = rng.uniform(0, 2 * np.pi, 2)
                wave = np.sin(xx / 17.0 + phase[0]) * np.cos(yy / 11.0 + phase[1])
                a = rng.uniform(-0.5, 0.5) + wave
                snap = photo * (1 + a[..., None] * K[..., None]) + rng.normal(0, 1.5, (h, w, 3))
                yield Step(i, 0.01, tau + 0.1 * i, 0.01, np.clip(snap, 0, 255).astype(np.float32))

        stored = photo.astype(np.uint16) * 257 if bits == 16 else photo
        run = RunDirectory.create(
            tmp_path / (name or f"run{next(made)}"), stored, K, mode=mode,
            dip_config={"seed": seed, "record_psnr": tau}, **create_kw,
        )
        record(run, steps())
        return run

    return make


# --- real cameras (Engineer A): read every Dresden JPEG once per session, crop at once ---------

CAMERA_CROP = 512


def _device_label(path: Path) -> str:
    """Dresden device label: the file name before the last ``_`` (e.g. ``Nikon_D70s_0``)."""
    return path.stem.rsplit("_", 1)[0]


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    """The bundled sample photo and its camera's fingerprint as files (photo.png, K.npz)."""
    from dippas_core.io import write_image
    from dippas_core.sample import sample_data

    d = tmp_path_factory.mktemp("sample")
    photo, fingerprint = sample_data()
    write_image(d / "photo.png", photo)
    fingerprint.save(d / "K.npz")
    return d / "photo.png", d / "K.npz"


@pytest.fixture(scope="session")
def flatfield_crops(testdata) -> dict[str, list[np.ndarray]]:
    """camera -> centre 512×512 uint8 crops of its 10 flat-field shots (pixels as stored)."""
    from dippas_core.io import center_crop, read_image

    crops: dict[str, list[np.ndarray]] = {}
    for path in (testdata / name for name in _testdata.registered("ff-jpg/")):
        crop = np.array(center_crop(read_image(path), CAMERA_CROP))  # copy: free the full image
        crops.setdefault(_device_label(path), []).append(crop)
    return crops


@pytest.fixture(scope="session")
def camera_fingerprints(flatfield_crops) -> dict:
    """camera -> Fingerprint (512×512) from its 10 flat-field centre crops (fast path)."""
    from dippas_core.fingerprint import estimate_fingerprint

    return {
        cam: estimate_fingerprint(crops, camera=cam, crop=CAMERA_CROP)
        for cam, crops in flatfield_crops.items()
    }


@pytest.fixture(scope="session")
def natural_photos(testdata) -> list[tuple[str, str, np.ndarray]]:
    """(camera, file name, centre 512×512 uint8 crop) of the 16 natural Dresden photos."""
    from dippas_core.io import center_crop, read_image

    return [
        (_device_label(p), p.name, np.array(center_crop(read_image(p), CAMERA_CROP)))
        for p in (testdata / name for name in _testdata.registered("nat-jpg/"))
    ]


@pytest.fixture(scope="session")
def d70_four_tiles(natural_photos, camera_fingerprints) -> tuple[np.ndarray, np.ndarray]:
    """A real off-centre 96×96 crop of a Nikon D70 photo (four 64-pixel tiles, overlap 32) and
    its fingerprint."""
    cam, _, photo = next(p for p in natural_photos if p[0] == "Nikon_D70_0")
    K = camera_fingerprints[cam].K
    return photo[100:196, 200:296].copy(), K[100:196, 200:296].copy()


@pytest.fixture(scope="session")
def four_tile_config():
    """Factory of the tiny network's ``AnonymizeConfig`` for :func:`d70_four_tiles` (64-pixel
    tiles, overlap 32, one torch thread), with the given changes."""
    from dippas_core.config import AnonymizeConfig

    def make(**changes):
        base = dict(tile_size=64, overlap=32, max_iter=25, lr=1e-2, record_psnr=12.0,
                    stop_psnr=40.0, B=32, L=3, seed=0, torch_threads=1)
        return AnonymizeConfig.preset("tiny", **{**base, **changes})

    return make


@pytest.fixture
def injected_probe_timings(monkeypatch):
    """Replace the probes of the ``tiles_per_step="auto"`` measurement by injected timings.

    ``install(seconds)`` makes a step of N tiles take ``seconds[N]`` (no clock) and returns the
    list of the N measured, in order.
    """

    def install(seconds: dict[int, float]) -> list[int]:
        calls: list[int] = []

        class FakeProbe:
            def __init__(self, n, *args):
                calls.append(n)
                self.n = n

            def step_seconds(self):
                return seconds[self.n]

            def release(self):
                pass

        # patched where the measurement and the cost estimate look it up
        monkeypatch.setattr("dippas_core.dip.batched._auto.make_probe", FakeProbe)
        monkeypatch.setattr("dippas_core.dip.batched.make_probe", FakeProbe)
        return calls

    return install
