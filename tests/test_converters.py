"""The one JSON converter and the one 8-bit converter (issue 11): every caller's cases."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dippas_core.errors import InputError
from dippas_core.io import as_rgb, drop_alpha, to_float255, to_uint8
from dippas_core.jsonio import jsonable


@dataclass
class _Settings:
    lr: float

    def to_dict(self):
        return {"lr": self.lr}


def test_jsonable_keeps_arrays_and_numbers_for_the_run_files():
    value = {1: (np.float32(0.5), np.arange(3)), "p": Path("/a/b"), "cfg": _Settings(1e-2)}
    assert jsonable(value) == {"1": [0.5, [0, 1, 2]], "p": "/a/b", "cfg": {"lr": 0.01}}
    assert np.isnan(jsonable(np.float64("nan")))  # a run file may hold NaN (allow_nan)


def test_jsonable_strict_is_valid_json_and_drops_arrays_when_asked():
    report = {
        "psnr": np.float64(np.inf),
        "ncc": {"before": np.float32(0.25), "map": np.ones((2, 2))},
        "rows": [1, np.zeros(3), float("nan")],
        "odd": object(),
    }
    out = jsonable(report, strict=True, arrays=False)
    json.dumps(out, allow_nan=False)  # raises on NaN, inf or an unknown object
    assert out["psnr"] is None and out["ncc"] == {"before": 0.25}
    assert out["rows"] == [1, None] and out["odd"].startswith("<object")
    assert jsonable(report, strict=True)["ncc"]["map"] == [[1.0, 1.0], [1.0, 1.0]]


def test_to_uint8_rounds_clips_and_scales_16_bit():
    values = np.array([-3.0, 0.49, 0.5, 1.5, 2.5, 254.6, 300.0], np.float32)
    # round half to even, then clip: the independent formula, one value at a time
    expected = [min(255, max(0, round(float(v)))) for v in values]
    assert to_uint8(values).tolist() == expected
    assert to_uint8(values).dtype == np.uint8
    u8 = np.arange(256, dtype=np.uint8)
    assert to_uint8(u8) is u8  # 8-bit input is already the answer
    u16 = np.array([0, 257, 65535, 32896], np.uint16)
    assert to_uint8(u16).tolist() == [0, 1, 255, 128]
    assert to_float255(u16)[1] == pytest.approx(1.0)


def test_as_rgb_drops_alpha_and_repeats_gray():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = as_rgb(gray)
    assert rgb.shape == (3, 4, 3) and all(np.array_equal(rgb[..., c], gray) for c in range(3))
    rgba = np.dstack([rgb, np.full((3, 4), 7, np.uint8)])
    assert np.array_equal(as_rgb(rgba), rgb)
    assert np.array_equal(drop_alpha(np.dstack([gray, gray * 0])), gray)
    assert np.array_equal(as_rgb(gray[..., None]), rgb)
    with pytest.raises(InputError, match="photo.jpg: unsupported image shape"):
        as_rgb(np.zeros((3, 4, 5)), "photo.jpg")
