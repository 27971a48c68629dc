"""What ``dippas`` says happened: warnings before the work, exit statuses, file names, flags.

On the bundled Dresden sample (a real Nikon D70s crop and its camera's fingerprint) and real
Dresden photos, tiny network, a few iterations: these tests check what is announced.
"""

from __future__ import annotations

import pytest

from dippas_core.cli import main
from dippas_core.io import write_image
from dippas_core.sample import sample_data

# fast, low thresholds: the announcements are under test, not the quality
FAST = ["--preset", "tiny", "--record-psnr", "8", "--stop-psnr", "99", "--torch-threads", "1"]


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample")
    photo, fingerprint = sample_data()
    write_image(d / "photo.png", photo)
    fingerprint.save(d / "K.npz")
    return d / "photo.png", d / "K.npz"


def test_no_trace_is_said_before_the_work_starts(sample_files, tmp_path, capsys):
    """A 64×64 crop of the sample carries no detectable trace (aligned PCE ≈ 4 < 60): the
    command line says so before its first iteration, as the viewer does."""
    photo, K = sample_files
    for command, out in (("anonymize", tmp_path / "a.png"), ("invert", tmp_path / "run")):
        code = main([command, str(photo), "--fingerprint", str(K), "--crop", "64", "--out",
                     str(out), *FAST, "--max-iter", "2", "-B", "32", "-L", "1", "--quiet"]
                    if command == "anonymize" else
                    [command, str(photo), "--fingerprint", str(K), "--crop", "64", "--out",
                     str(out), *FAST, "--max-iter", "2"])
        err = capsys.readouterr().err
        warning = (f"dippas {command}: warning: This photo (4,096 pixels) carries no detectable "
                   "trace")
        assert warning in err and "PCE (aligned) 4.2 < decision level 60" in err, err
        assert err.count("no detectable trace") == 1
        if command == "anonymize":
            assert code == 0
            assert err.index("no detectable trace") < err.index("estimate:")  # before the work


def test_no_warning_where_the_trace_is(natural_photos, camera_fingerprints, capsys):
    """A real 512×512 Dresden crop scored with its own camera's fingerprint: no warning; the
    same crop with another camera's fingerprint: the warning, with the region's size."""
    from dippas_core.cli.invert import warn_without_trace

    # this photo's centre carries its camera's trace clearly (aligned PCE 161)
    cam, _, photo = next(p for p in natural_photos if p[1] == "Nikon_D70s_0_21853.JPG")
    pce = warn_without_trace("anonymize", photo, camera_fingerprints[cam], 5.0)
    assert pce > 60 and capsys.readouterr().err == ""
    other = camera_fingerprints["Nikon_D200_0"]
    pce = warn_without_trace("anonymize", photo, other, 5.0, (64, 128, 256, 256))
    err = capsys.readouterr().err
    assert pce < 60 and "This region (65,536 pixels) carries no detectable trace" in err
