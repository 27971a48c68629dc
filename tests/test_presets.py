"""One preset, one job: every entry point builds the same configuration from a preset name.

``dippas anonymize``, ``invert``, ``batch``, ``demo``, ``evaluate``, the viewer's settings and the
library all start from :meth:`AnonymizeConfig.preset` and change only what they were asked to.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dippas_core.cli import build_parser
from dippas_core.config import PRESETS, AnonymizeConfig, AssemblyParams, DIPConfig
from dippas_core.errors import InputError


def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


def _cli_configs(name: str, *changes: str) -> dict[str, AnonymizeConfig]:
    """The config each command builds from ``--preset name`` and the options ``changes``."""
    from dippas_core.cli import anonymize, batch, demo, evaluate, invert

    preset = ("--preset", name, *changes)
    built = {
        "anonymize": anonymize.build_config(_parse("anonymize", "p", "--out", "o.png", *preset)),
        "batch": batch.build_config(_parse("batch", "in", "--blind", "--out", "o", *preset)),
        "demo": demo.build_config(_parse("demo", "--out", "d", *preset)),
    }
    if not {"-B", "-L", "--tau"} & set(changes):  # (invert does not assemble)
        args = _parse("invert", "p", "--blind", "--out", "r", *preset)
        built["invert"] = invert.build_config(args)
    from dippas_core.evaluation.config import EVAL_PRESETS

    if name in EVAL_PRESETS:  # (the evaluation's own table names the anonymizer's presets)
        evaluation = evaluate.build_config(_parse("evaluate", "--out", "e", "--preset", name))
        built["evaluate"] = evaluation.dippas
    return built


def _viewer_config(name: str, **changes) -> AnonymizeConfig:
    pytest.importorskip("psygnal")
    from napari_dippas._models import AnonymizeSettings

    settings = AnonymizeSettings()
    settings.use_preset(name)
    settings.update(changes)
    return settings.anonymize_config()


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_entry_point_builds_the_same_config_from_a_preset(name):
    expected = AnonymizeConfig.preset(name)
    for command, config in _cli_configs(name).items():
        assert config == expected, f"dippas {command} --preset {name}"
    assert _viewer_config(name) == expected, "the viewer"
    if name == "cpu":
        from dippas_core.evaluation import EvalConfig

        assert EvalConfig.preset("cpu-full").dippas == expected
    # the preset is what the table says, and its DIP part is DIPConfig.preset
    table = PRESETS[name]
    assert expected.dip == DIPConfig.preset(name) == DIPConfig(**table["dip"])
    assert expected.assembly == AssemblyParams(**table["assembly"])
    assert (expected.tile_size, expected.overlap) == (table["tile_size"], table["overlap"])


def test_explicit_changes_are_the_only_difference():
    expected = AnonymizeConfig.preset("cpu", seed=7, max_iter=9, lr=0.02, record_psnr=30.0)
    options = ("--seed", "7", "--max-iter", "9", "--lr", "0.02", "--record-psnr", "30")
    built = _cli_configs("cpu", *options)
    built.pop("evaluate")  # (its options are the evaluation's; tested below)
    for command, config in built.items():
        assert config == expected, f"dippas {command}"
    assert _viewer_config("cpu", seed=7, max_iter=9, lr=0.02, record_psnr=30.0) == expected
    assembly = ("-B", "32", "-L", "3", "--tau", "37")
    wanted = AnonymizeConfig.preset("tiny", B=32, L=3, tau=37.0)
    for command in ("anonymize", "batch", "demo"):
        assert _cli_configs("tiny", *assembly)[command] == wanted, command
    # the name older versions took for the recording threshold still works
    old = _parse("anonymize", "p.png", "--out", "o.png", "--preset", "tiny", "--tau-psnr", "30")
    from dippas_core.cli.anonymize import build_config

    assert build_config(old) == AnonymizeConfig.preset("tiny", record_psnr=30.0)


def test_the_library_default_is_the_paper_preset():
    assert AnonymizeConfig() == AnonymizeConfig.preset("paper")


def test_config_is_frozen_and_checked():
    config = AnonymizeConfig.preset("tiny")
    with pytest.raises(AttributeError):
        config.tile_size = 64  # type: ignore[misc]
    with pytest.raises(InputError, match="unknown setting.*widht"):
        config.replace(widht=3)
    with pytest.raises(InputError, match="overlap"):
        config.replace(overlap=16)
    with pytest.raises(InputError, match="sigma"):
        config.replace(sigma=0)
    with pytest.raises(InputError, match="unknown preset"):
        AnonymizeConfig.preset("huge")
    # a change goes to the part it names
    changed = config.replace(B=64, max_iter=3, tile_size=256)
    assert (changed.assembly.B, changed.dip.max_iter, changed.tile_size) == (64, 3, 256)


def test_configs_written_by_older_versions_still_open():
    """photo-run.json and reports of older versions: B, L, tau beside the DIP settings, a seed
    outside them, the recording threshold as tau_psnr."""
    old = {
        "dip": {**DIPConfig.preset("tiny").to_dict(), "record_psnr": None},
        "B": 32, "L": 5, "tau": None, "sigma": 5.0, "tile": 32, "seed": 4, "keep_run": False,
        "tile_size": 128, "overlap": 32, "keep_tile_runs": False,
    }
    old["dip"]["tau_psnr"] = old["dip"].pop("record_psnr") or 31.0
    config = AnonymizeConfig.from_dict(json.loads(json.dumps(old)))
    assert config == AnonymizeConfig.preset("tiny", seed=4)
    # written back under the new names, read back the same
    new = config.to_dict()
    assert new["assembly"] == {"B": 32, "L": 5, "tau": None, "rule": "paper"} and "B" not in new
    assert new["dip"]["record_psnr"] == 31.0 and "tau_psnr" not in new["dip"]
    assert AnonymizeConfig.from_dict(json.loads(json.dumps(new))) == config
    # the evaluation's and the viewer's old names for B and L
    legacy = {"dip": {}, "block": 128, "top_l": 2, "tau": 38.0}
    assert AnonymizeConfig.from_dict(legacy).assembly == AssemblyParams(128, 2, 38.0)
    with pytest.raises(InputError, match="record_psnr given twice"):
        DIPConfig.from_dict({"tau_psnr": 30.0, "record_psnr": 31.0})


def test_batch_and_anonymize_give_the_same_image_on_a_real_crop(tmp_path):
    """``dippas batch --preset P`` runs what ``dippas anonymize --preset P`` runs: same seed, same
    pixels (a 96×96 crop of the sample photo in four tiles, a short tiny run)."""
    from dippas_core.cli import main
    from dippas_core.io import read_image, write_image
    from dippas_core.sample import sample_data

    photo, fingerprint = sample_data()
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "photo.png", photo)
    fingerprint.save(tmp_path / "K.npz")
    same = ["--preset", "tiny", "--seed", "5", "--max-iter", "12", "--record-psnr", "5",
            "--stop-psnr", "99", "--crop", "96", "--tile", "64", "--overlap", "32"]
    one = tmp_path / "one.png"
    assert main(["anonymize", str(src / "photo.png"), "--fingerprint", str(tmp_path / "K.npz"),
                 "--out", str(one), "--workers", "1", "--quiet", *same]) == 0
    out = tmp_path / "out"
    assert main(["batch", str(src), "--fingerprint", str(tmp_path / "K.npz"), "--out", str(out),
                 "--workers", "1", "--keep-names", *same]) == 0
    by_batch, by_anonymize = read_image(out / "photo.png"), read_image(one)
    assert by_batch.shape == (96, 96, 3)
    np.testing.assert_array_equal(by_batch, by_anonymize)
    record = json.loads((out / ".dippas-batch" / "records" / "photo.json").read_text())
    assert len(record["tiles"]) == 4  # the preset's tiling (asked: 64-px tiles), as anonymize's
