"""The camera test data registry: hashes of the files the tests read, and clear errors."""

from __future__ import annotations

import hashlib
import shutil

import _testdata
import pytest


def test_every_registered_file_has_its_hash(testdata):
    # the fixture already verified; this recomputes with hashlib, independently of pooch
    for name in _testdata.registered():
        expected = _testdata.data_pooch().registry[name].removeprefix("sha256:")
        assert hashlib.sha256((testdata / name).read_bytes()).hexdigest() == expected, name


def test_the_tests_read_only_registered_files(testdata):
    on_disk = {
        str(p.relative_to(testdata)) for p in testdata.rglob("*") if p.is_file()
    } - {"README.md"}
    assert on_disk == set(_testdata.registered())
    # the cameras the fixtures build on: 6 × 10 flat fields, 16 natural photos
    assert len(_testdata.registered("ff-jpg/")) == 60
    assert len(_testdata.registered("nat-jpg/")) == 16


def test_damaged_and_missing_files_are_named(tmp_path, testdata):
    names = ["nat-jpg/Nikon_D70s_0_21853.JPG", "nat-jpg/Nikon_D70_0_19445.JPG", "camera.jpg"]
    for name in names[:2]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(testdata / name, tmp_path / name)
    _testdata.verify(names[:2], folder=tmp_path)  # intact copies pass

    damaged = tmp_path / names[1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the JPEG
    damaged.write_bytes(bytes(data))
    with pytest.raises(_testdata.DataFileError) as error:
        _testdata.verify(names, folder=tmp_path)
    message = str(error.value)
    assert "nat-jpg/Nikon_D70_0_19445.JPG is damaged" in message
    assert "camera.jpg is missing" in message
    assert "Nikon_D70s_0_21853" not in message  # the intact file is not blamed


def test_environment_variable_comes_first(tmp_path, monkeypatch):
    monkeypatch.setenv("DIPPAS_TESTDATA", str(tmp_path))
    assert _testdata.data_folder() == tmp_path
    monkeypatch.delenv("DIPPAS_TESTDATA")
    assert _testdata.data_folder() == _testdata.LOCAL
