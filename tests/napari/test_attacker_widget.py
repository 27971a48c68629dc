"""The attribution widget's optional learned-attacker line (a model from train-attacker)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")


def _untrained_model(path, cameras):
    from dippas_core.attacker import AttackerConfig, AttackerModel, _network

    config = AttackerConfig(patch=32, stride=32, score_stride=32, width=4)
    return AttackerModel(_network(len(cameras), config.width), cameras, config).save(path)


def test_attribution_shows_the_learned_attackers_probabilities(viewer, qtbot, sample, tmp_path):
    from napari_dippas._widgets import AttributionWidget

    viewer.open_sample("napari-dippas", "dresden")
    widget = AttributionWidget(viewer)
    widget.start()  # no model: no learned line
    qtbot.waitUntil(lambda: widget.result is not None and widget.run_button.isEnabled(),
                    timeout=60_000)
    assert widget.learned.text() == ""

    cameras = ["cam_a", "cam_b", "cam_c"]
    widget.set_attacker(_untrained_model(tmp_path / "m.pt", cameras))
    assert "m.pt" in widget.attacker_button.text()
    widget.start()
    qtbot.waitUntil(lambda: widget.learned.text() != "", timeout=60_000)
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=10_000)
    text = widget.learned.text()
    assert text.startswith("learned attacker:") and all(c in text for c in cameras)
    probs = [float(t) for t in text.split(":", 1)[1].split()[1::2]]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 0.02

    (tmp_path / "bad.pt").write_text("not a model")
    widget.set_attacker(tmp_path / "bad.pt")
    widget.start()
    qtbot.waitUntil(lambda: "not a readable attacker model" in widget.verdict.text(),
                    timeout=60_000)
