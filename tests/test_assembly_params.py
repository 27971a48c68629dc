"""AssemblyParams (B, L, tau): validation, the names it accepts, its use by assemble, configs and
run folders, and run folders written before it existed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dippas_core.assembly import assemble
from dippas_core.config import PRESETS, AnonymizeConfig, AssemblyParams
from dippas_core.errors import InputError
from dippas_core.run import RunDirectory


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"B": 0}, r"block size B must be an integer >= 1, got B=0"),
        ({"B": 32.0}, r"block size B must be an integer >= 1, got B=32\.0"),
        ({"B": True}, r"block size B must be an integer >= 1, got B=True"),
        ({"L": 0}, r"L \(snapshots averaged per block\) must be an integer >= 1, got L=0"),
        ({"L": "3"}, r"L .*integer >= 1, got L='3'"),
        ({"tau": float("nan")}, r"tau \(PSNR threshold, dB\) must be finite, got nan"),
        ({"tau": -np.inf}, r"tau .*must be finite"),
        ({"tau": "high"}, r"tau .*must be a number, got 'high'"),
        ({"tau": True}, r"tau .*must be a number, got True"),
    ],
)
def test_bad_values_are_refused_with_the_parameter_named(fields, match):
    with pytest.raises(InputError, match=match):
        AssemblyParams(**fields)


def test_values_are_normalised_and_frozen():
    p = AssemblyParams(np.int64(64), np.int32(3), np.float32(31.5))
    assert (type(p.B), type(p.L), type(p.tau)) == (int, int, float)
    assert p == AssemblyParams(64, 3, 31.5)
    assert p.to_dict() == {"B": 64, "L": 3, "tau": 31.5, "rule": "paper"}
    assert AssemblyParams.from_dict(p.to_dict()) == p
    assert AssemblyParams(tau=None).tau is None  # the run's recording threshold
    with pytest.raises(AttributeError):
        p.B = 32  # frozen: one value everywhere it is passed


def test_from_dict_reads_the_older_names_and_refuses_unknown_or_conflicting_ones():
    old = AssemblyParams.from_dict({"block": 128, "top_l": 2, "tau": 38.0})  # evaluation's
    viewer = AssemblyParams.from_dict({"block_size": 128, "n_average": 2, "tau": 38.0})
    assert old == viewer == AssemblyParams(128, 2, 38.0)
    with pytest.raises(InputError, match="unknown assembly parameter.*'tau_psnr'"):
        AssemblyParams.from_dict({"B": 64, "tau_psnr": 38.0})  # the recording threshold
    with pytest.raises(InputError, match="B given twice"):
        AssemblyParams.from_dict({"B": 64, "block": 32})
    with pytest.raises(InputError, match="mapping"):
        AssemblyParams.from_dict([64, 10, 38.0])


def test_fitted_checks_b_against_the_photo_and_the_tile():
    p = AssemblyParams(48, 5, None)
    with pytest.raises(InputError, match="B=48 must be a multiple of the run's tile 32"):
        p.fitted((96, 80), 32, 30.0)
    # B beyond the photo is its one block (rounded up to the tile); tau None: the recording's
    fitted = AssemblyParams(10**9, 5, None).fitted((96, 80), 32, 30.0)
    assert fitted == AssemblyParams(96, 5, 30.0)
    with pytest.raises(InputError, match="tau .*finite"):
        AssemblyParams(64, 5, None).fitted((96, 80), 32, -np.inf)  # a run that kept everything


def test_assemble_takes_params_or_b_l_tau_alike(synthetic_run):
    run = synthetic_run(n=10, shape=(64, 64), tau=30.0)  # PSNRs 30.1 .. 31.0
    by_name = assemble(run, B=32, L=3, tau=30.55)
    by_params = assemble(run, AssemblyParams(32, 3, 30.55))
    np.testing.assert_array_equal(by_params.image, by_name.image)
    np.testing.assert_array_equal(by_params.choice, by_name.choice)
    # tau None: the recording threshold, so every recorded snapshot is a candidate
    everything = assemble(run, AssemblyParams(32, 3, None))
    assert everything.params["tau"] == run.record_psnr == 30.0
    assert everything.params["n_candidates"] == len(run.snapshots) == 10


def test_anonymize_config_gives_its_assembly_params():
    config = AnonymizeConfig.preset("tiny", record_psnr=31.0)
    assert config.assembly == AssemblyParams(32, 5, None)  # tau None: the recording threshold
    assert config.assembly_tau == 31.0
    cpu = PRESETS["cpu"]["assembly"]
    assert AnonymizeConfig.preset("cpu").assembly == AssemblyParams(**cpu)
    with pytest.raises(InputError, match="L .*>= 1"):
        AnonymizeConfig.preset("paper", L=0)


def test_the_run_owns_its_assembly_file(synthetic_run):
    run = synthetic_run(n=4, shape=(64, 64), tau=30.0)
    assert run.read_assembly() == AssemblyParams(64, 10, 30.0)  # nothing saved: the defaults
    run.write_assembly(AssemblyParams(32, 3, 30.2))
    assert RunDirectory.open(run.path).read_assembly() == AssemblyParams(32, 3, 30.2)
    assert json.loads((run.path / RunDirectory.ASSEMBLY).read_text()) == {
        "B": 32, "L": 3, "tau": 30.2, "rule": "paper"}
    # a garbled field falls back to its own default, the others are kept
    (run.path / RunDirectory.ASSEMBLY).write_text(json.dumps({"B": "wide", "L": 2, "tau": "nan"}))
    assert run.read_assembly() == AssemblyParams(64, 2, 30.0)
    with pytest.raises(InputError, match="L .*>= 1"):
        run.write_assembly({"B": 32, "L": 0, "tau": 30.0})


def test_a_run_folder_written_before_assembly_params_opens_and_assembles(synthetic_run, tmp_path):
    """A run folder as the format was before this change: no ``gamma_star`` history column, the
    config.json fields of format version 1, an ``assembly.json`` written by the viewer."""
    new = synthetic_run(n=6, shape=(64, 64), tau=30.0, name="new")
    old_path = tmp_path / "old"
    shutil.copytree(new.path, old_path, ignore=shutil.ignore_patterns(".lock"))
    config = {
        "format": "dippas-run",
        "format_version": 1,
        "created": "2026-01-05T10:00:00+00:00",
        "status": "finished",
        "mode": "aware",
        "reference": "fingerprint K",
        "photo": {"height": 64, "width": 64, "channels": 3, "dtype": "uint8"},
        "tile": 32,
        "sigma": 5.0,
        "snapshot_storage": {"dtype": "uint16", "scale": 257},
        "dip_config": {"seed": 0, "tau_psnr": 30.0},
        "seed": 0,
        "device": "cpu",
        "versions": {"python": "3.11.9", "numpy": "2.1.0"},
        "result": {"n_iterations": 6, "n_snapshots": 6, "stop_reason": "ended"},
    }
    (old_path / "config.json").write_text(json.dumps(config, indent=1))
    history = new.history()
    rows = [
        f"{i},{float(loss)!r},{float(psnr)!r},{float(gamma)!r},{int(kept)}"
        for i, loss, psnr, gamma, kept in zip(
            history["iteration"], history["loss"], history["psnr"], history["gamma"],
            history["kept"], strict=True,
        )
    ]
    (old_path / "history.csv").write_text("iteration,loss,psnr,gamma,kept\n" + "\n".join(rows)
                                          + "\n")
    (old_path / "assembly.json").write_text(json.dumps({"B": 32, "L": 2, "tau": 30.3}, indent=1))

    old = RunDirectory.open(old_path)
    assert old.status == "finished" and old.record_psnr == 30.0
    assert old.read_assembly() == AssemblyParams(32, 2, 30.3)
    assert np.isnan(old.history()["gamma_star"]).all()
    np.testing.assert_array_equal(old.history()["psnr"], history["psnr"])
    got = assemble(old, old.read_assembly())
    want = assemble(new, B=32, L=2, tau=30.3)
    np.testing.assert_array_equal(got.image, want.image)
    assert got.params["n_candidates"] == want.params["n_candidates"] == 4  # PSNR 30.3 .. 30.6
