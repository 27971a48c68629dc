"""The evented run state (no viewer, no Qt): tiles and job fed by a run's callbacks."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.tiling import plan_tiles
from napari_dippas._models import StepSummary
from napari_dippas._run_state import (
    RunState,
    TileFinished,
    TilePrediction,
    TileStarted,
    TraceCheck,
    job_key,
    resumable_run,
)


def _step(i: int, psnr: float, kept: bool = False) -> StepSummary:
    return StepSummary(i, 0.1, psnr, 0.01, kept)


def test_tile_states_follow_the_reported_events_in_order():
    state = RunState()
    seen = []
    state.tiles.events.states.connect(lambda states: seen.append(states))
    state.tiles.set_plan(plan_tiles((96, 96), 64, 32), offset=(64, 96))
    assert state.tiles.rects == ((0, 0, 64, 64), (0, 32, 64, 64), (32, 0, 64, 64),
                                 (32, 32, 64, 64))
    assert state.tiles.offset == (64.0, 96.0) and seen[-1] == ("waiting",) * 4
    checks = []
    state.trace_checked.connect(checks.append)
    steps = state.apply([
        TraceCheck(120.0, 96 * 96),
        TileFinished(0, resumed=True),  # read back from a stopped run
        TileStarted(1), _step(1, 10.0), _step(2, 21.0, kept=True),
        TileFinished(1, below_tau_db=1.5),
        TileStarted(2), _step(1, 12.0),
    ])
    assert [s.iteration for s in steps] == [1, 2, 1]
    assert checks == [TraceCheck(120.0, 96 * 96)] and state.trace.pce == 120.0
    assert state.tiles.states == ("done", "fell short", "running", "waiting")
    # every state change was an event, in the order the run reported them
    assert seen[1:] == [
        ("done", "waiting", "waiting", "waiting"),
        ("done", "running", "waiting", "waiting"),
        ("done", "fell short", "waiting", "waiting"),
        ("done", "fell short", "running", "waiting"),
    ]
    assert state.tiles.n_started == 2 and state.tiles.n_resumed == 1
    # the job follows the tile now running: its iteration, its best PSNR; snapshots add up
    assert state.job.iteration == 1 and state.job.best_psnr == 12.0
    assert state.job.n_snapshots == 1
    assert state.tiles.describe() == (
        "tiles: 2 of 4 finished (1 read back from the stopped run), 1 fell short of tau, "
        "1 running"
    )
    state.tiles.run_ended()  # stopped: the running tile waits for a resume
    assert state.tiles.states == ("done", "fell short", "waiting", "waiting")


def test_a_tile_outside_the_plan_is_refused():
    state = RunState()
    state.tiles.set_plan(plan_tiles((96, 96), 64, 32))
    with pytest.raises(IndexError, match="tile 4 is not in the plan of 4 tiles"):
        state.apply([TileStarted(4)])


def test_core_tile_stats_map_to_states():
    assert TileFinished.from_stats(3, {"below_tau_db": 0.0}) == TileFinished(3, 0.0, False)
    assert TileFinished.from_stats(2, {"below_tau_db": 2.5, "resumed": True}) == TileFinished(
        2, 2.5, True
    )


def test_the_eta_follows_the_tiles_content_at_the_pace_of_the_finished_ones():
    """The viewer's ETA is the command line's (PhotoProgress): the predicted work left, scaled by
    the finished tiles' real seconds over their predicted ones; nothing before a tile finished."""
    state = RunState()
    state.tiles.set_plan(plan_tiles((96, 96), 64, 32))
    assert state.eta_text() == ""  # no prediction reported yet
    state.apply([TilePrediction(4, {0: 10, 1: 10, 2: 30, 3: 50}), TileStarted(0),
                 StepSummary(1, 0.1, 30.0, 0.0, False, tile=0)])
    assert state.eta_text() == ""  # nothing finished: no pace yet
    state.apply([TileFinished.from_stats(0, {"elapsed_s": 20.0, "iterations": 10})])
    # 2 s per predicted unit × (10 + 30 + 50) units left, one tile at a time
    assert state.progress.eta_s() == pytest.approx(180.0)
    assert state.eta_text() == " · about 3 min left"
    state.apply([TileFinished(1, resumed=True)])  # read back: no time of this run, not left
    assert state.progress.eta_s() == pytest.approx(160.0)


def test_fed_by_a_real_tiled_run_then_its_resume(sample, tmp_path):
    """The core's callbacks drive the model: a stopped run, then its resume, on a real crop."""
    from dippas_core.cancel import CancelToken
    from dippas_core.config import AnonymizeConfig
    from dippas_core.pipeline import anonymize
    from napari_dippas._models import write_provenance

    photo, fp = sample
    crop = np.ascontiguousarray(photo[64:160, 96:192])
    K = np.ascontiguousarray(fp.K[64:160, 96:192])
    # (the paper's B, L 10 and tau before: the tiny preset's B 32 is kept, L 3 asked for)
    config = AnonymizeConfig.preset(
        "tiny", seed=1, record_psnr=20.0, stop_psnr=40.0, max_iter=30, lr=1e-2, device="cpu",
        tile_size=64, overlap=32, B=32, L=3, torch_threads=None,
    )
    plan = plan_tiles(crop.shape, 64, 32)

    def run(state: RunState, cancel: CancelToken | None = None):
        events: list = []

        def done(tile, stats):
            events.append(TileFinished.from_stats(tile.index, stats))
            if cancel is not None:
                cancel.cancel()  # stop once the first tile is finished

        result = anonymize(
            crop, K, config, run_dir=tmp_path / "run", cancel=cancel,
            on_step=lambda step: events.append(StepSummary.from_step(step)),
            on_tile=lambda tile, _plan: events.append(TileStarted(tile.index)),
            on_tile_done=done,
        )
        state.apply(events)
        state.tiles.run_ended()
        return result

    first = RunState()
    first.tiles.set_plan(plan)
    stopped = run(first, CancelToken())
    assert stopped.report["partial"]
    assert first.tiles.n_finished == 1 and first.tiles.states[1:] == ("waiting",) * 3
    # the stopped run is found again by its job: same pixels, fingerprint, region, settings
    region = {"y": 64, "x": 96, "h": 96, "w": 96}
    key = job_key(crop, K, region, "aware", config.to_dict())
    write_provenance(tmp_path / "run", {"job_key": key})
    assert resumable_run(tmp_path, key, len(plan)) == tmp_path / "run"
    other = [
        job_key(crop, K, {**region, "y": 66}, "aware", config.to_dict()),
        job_key(crop, None, region, "blind", config.to_dict()),
        job_key(crop[::-1], K, region, "aware", config.to_dict()),
        job_key(crop, K, region, "aware", {**config.to_dict(), "overlap": 64}),
    ]
    assert len({key, *other}) == 5
    assert all(resumable_run(tmp_path, k, len(plan)) is None for k in other)
    second = RunState()
    second.tiles.set_plan(plan)
    result = run(second)
    assert not result.report["partial"] and second.tiles.n_finished == 4
    # the finished tile was read back, not inverted again
    assert second.tiles.n_resumed == 1 and second.tiles.n_started == 3
    assert result.report["resumed_tiles"] == [0]
    assert resumable_run(tmp_path, key, len(plan)) is None  # finished: nothing to resume
