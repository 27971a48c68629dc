"""The fidelity measures said where PSNR is said: one line from a report's fidelity section
(``dippas_core.fidelity.describe``), printed by the CLI's summaries."""

from __future__ import annotations

import io

import numpy as np
import pytest

from dippas_core.fidelity import OFF_LEVELS, bar_names, describe, fidelity


@pytest.fixture(scope="module")
def real_crop(natural_photos) -> np.ndarray:
    """A real 128×128 crop of a Dresden photo, 0..255 floats."""
    return natural_photos[0][2][:128, :128].astype(np.float32)


def _section(photo, output, block=64) -> dict:
    """A report's fidelity section, as ``report.measure`` makes it."""
    f = fidelity(photo, output, block=block)
    return {**f.to_dict(), "bars_failed": f.failures()}


def test_a_faithful_output_meets_every_bar_and_says_so(real_crop, rng):
    out = np.clip(np.rint(real_crop + rng.normal(0, 1.0, real_crop.shape)), 0, 255)
    section = _section(real_crop, out)
    assert section["bars_failed"] == []  # light noise: every bar met
    line = describe(section)
    assert line.endswith("; all fidelity bars met")
    assert f"SSIM {section['ssim']:.4f}" in line
    assert f"max |Δ| {section['max_abs']:.0f} levels" in line
    assert f"{100 * section['share_off']:.3g} % of pixels off by > {OFF_LEVELS:g} levels" in line
    assert f"colour shift {section['colour_shift']:.2f} levels" in line
    assert f"seam ratio {section['seam_ratio']:.2f}" in line
    assert f"checkerboard {section['checkerboard']:.2f}" in line


def test_an_output_with_artefacts_names_the_bars_it_breaks(real_crop):
    out = real_crop.copy()
    out[10:12, 20:22, 2] = 255.0  # stuck pixels
    out[64:, :64] += 3.0  # a tinted block
    section = _section(real_crop, np.clip(out, 0, 255))
    line = describe(section, " · ", " · ")
    assert "all fidelity bars met" not in line
    assert line.endswith(" · bars broken: " + ", ".join(section["bars_failed"]))
    assert {"max_abs", "colour_shift", "seam_ratio"} <= set(bar_names(section["bars_failed"])
                                                              .split(","))


def test_no_section_no_line_and_no_edge_no_seam_ratio(real_crop):
    from dippas_core.cli.assemble import say_fidelity

    assert describe(None) == describe({}) == ""
    stream = io.StringIO()
    say_fidelity({"psnr": 40.0}, stream)  # a report made before fidelity was measured
    assert stream.getvalue() == ""
    section = _section(real_crop, real_crop + 1.0, block=None)  # one block: no seam line
    assert section["seam_ratio"] is None
    assert "seam ratio n/a (no block edge)" in describe(section)
    say_fidelity({"fidelity": section}, stream)
    assert stream.getvalue() == f"fidelity: {describe(section)}\n"
