"""What ``dippas`` says happened: warnings before the work, exit statuses, file names, flags.

On the bundled Dresden sample (a real Nikon D70s crop and its camera's fingerprint) and real
Dresden photos, tiny network, a few iterations: these tests check what is announced.
"""

from __future__ import annotations

from dippas_core.cli import main

# fast, low thresholds: the announcements are under test, not the quality
FAST = ["--preset", "tiny", "--record-psnr", "8", "--stop-psnr", "99", "--torch-threads", "1"]


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


def _anonymize(photo, K, out, *extra):
    return ["anonymize", str(photo), "--fingerprint", str(K), "--out", str(out), *FAST,
            "--quiet", *extra]


def _sidecar(path):
    import json

    return json.loads(path.with_suffix(".json").read_text())


def test_complete_at_tau_is_status_0_and_out(sample_files, tmp_path, capsys):
    photo, K = sample_files
    out = tmp_path / "a.png"
    code = main(_anonymize(photo, K, out, "--crop", "64", "--max-iter", "4", "-B", "32",
                           "-L", "1"))
    err = capsys.readouterr()
    assert code == 0, err.err
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.png"]
    side = _sidecar(out)
    assert side["partial"] is False and side["below_tau"] is False
    assert "keep_run" not in side["config"]  # the run folder is this machine's, not the image's
    assert err.out.startswith(f"anonymized image: {out}")


def test_below_tau_is_status_3_and_named_so(sample_files, tmp_path, capsys):
    """A tile that never reaches tau (record at 99 dB after 3 iterations): OUT-below-tau-t0.png
    and status 3; --accept-below-tau: OUT and status 0, the sidecar still says below_tau."""
    photo, K = sample_files
    out = tmp_path / "a.png"
    args = _anonymize(photo, K, out, "--crop", "64", "--max-iter", "3", "-B", "32", "-L", "1",
                      "--record-psnr", "99", "--stop-psnr", "99.5")
    code = main(args)
    err = capsys.readouterr()
    assert code == 3, err.err
    short = tmp_path / "a-below-tau-t0.png"
    assert short.is_file() and not out.exists()
    assert _sidecar(short)["below_tau"] is True and _sidecar(short)["partial"] is False
    assert err.out.startswith(f"image BELOW TAU (not every tile reached it): {short}")
    assert "below tau (exit status 3)" in err.err and "--accept-below-tau" in err.err
    code = main([*args, "--accept-below-tau"])
    err = capsys.readouterr()
    assert code == 0, err.err
    assert out.is_file() and _sidecar(out)["below_tau"] is True
    assert "below tau, accepted" in err.err


def _stop_when_tile_starts(monkeypatch, index):
    """Press Ctrl-C (a real SIGINT to this process) as tile ``index`` of a photo run starts."""
    import os
    import signal

    import dippas_core.pipeline as pipeline

    real = pipeline.run_job  # what the command runs its prepared job with

    def run_job(*args, on_tile=None, **kwargs):
        def hook(tile, plan):
            if tile.index == index:
                os.kill(os.getpid(), signal.SIGINT)  # the command's handler cancels the run
            if on_tile is not None:
                on_tile(tile, plan)

        return real(*args, on_tile=hook, **kwargs)

    monkeypatch.setattr(pipeline, "run_job", run_job)


PHOTO_RUN = ["--crop", "96", "--tile", "64", "--overlap", "32", "--workers", "1",
             "--tiles-per-step", "1", "--max-iter", "4", "-B", "32", "-L", "1"]


def test_partial_nothing_then_resumed_to_complete(sample_files, tmp_path, capsys, monkeypatch):
    """A photo run (4 tiles): Ctrl-C before any tile finished writes nothing (status 130, no
    "-partial" copy of the photo); stopped after tile 0 it writes OUT-partial.png (status 4,
    sidecar partial); the same command resumes, writes OUT (status 0) and removes the stale
    partial files."""
    photo, K = sample_files
    out = tmp_path / "a.png"
    args = _anonymize(photo, K, out, *PHOTO_RUN)
    with monkeypatch.context() as m:
        _stop_when_tile_starts(m, 0)
        code = main(args)
    err = capsys.readouterr()
    assert code == 130, err.err
    assert "before any tile was finished: nothing was written" in err.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dippas-run"]
    with monkeypatch.context() as m:
        _stop_when_tile_starts(m, 1)
        code = main(args)
    err = capsys.readouterr()
    assert code == 4, err.err
    partial = tmp_path / "a-partial.png"
    assert partial.is_file() and not out.exists()
    assert _sidecar(partial)["partial"] is True
    assert err.out.startswith(f"PARTIAL image (some tiles not anonymized): {partial}")
    assert "partial (exit status 4)" in err.err and "resume with the same command" in err.err
    code = main(args)
    err = capsys.readouterr()
    assert code == 0, err.err
    assert "resuming: 1 tile(s) already finished" in err.err  # once the run folder took it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.png"]
    assert _sidecar(out)["partial"] is False
    assert "removed a-partial.png" in err.err


def test_a_refused_resume_never_says_resuming(sample_files, tmp_path, capsys, monkeypatch):
    """Stopped after tile 0, then run again with other settings into the same run folder: the
    run folder refuses, and nothing said "resuming" first (issue 26, class 6)."""
    photo, K = sample_files
    out = tmp_path / "a.png"
    args = _anonymize(photo, K, out, *PHOTO_RUN)
    with monkeypatch.context() as m:
        _stop_when_tile_starts(m, 1)
        assert main(args) == 4
    capsys.readouterr()
    code = main([*args, "--seed", "7"])
    err = capsys.readouterr().err
    assert code == 2 and "another photo or other settings" in err
    assert "resuming" not in err


def test_invert_and_assemble_say_below_tau(sample_files, tmp_path, capsys):
    """invert: no output reached the recording threshold, nothing to assemble (status 3, not
    "next: dippas assemble"); assemble asked for a tau no snapshot reaches: OUT-below-tau.png
    and status 3 (--accept-below-tau: OUT, 0)."""
    photo, K = sample_files
    run = tmp_path / "run"
    code = main(["invert", str(photo), "--fingerprint", str(K), "--crop", "64", "--out",
                 str(run), *FAST, "--record-psnr", "99", "--stop-psnr", "99.5", "--max-iter", "2",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 3 and "below tau (exit status 3)" in err and "next:" not in err
    run2 = tmp_path / "run2"
    assert main(["invert", str(photo), "--fingerprint", str(K), "--crop", "64", "--out",
                 str(run2), *FAST, "--max-iter", "4", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "b.png"
    argv = ["assemble", str(run2), "-B", "32", "-L", "1", "--tau", "90", "--out", str(out)]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert (tmp_path / "b-below-tau.png").is_file() and not out.exists()
    assert _sidecar(tmp_path / "b-below-tau.png")["below_tau"] is True
    assert "below tau (exit status 3)" in err
    assert main([*argv, "--accept-below-tau"]) == 0
    assert _sidecar(out)["below_tau"] is True
