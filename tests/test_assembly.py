"""Assembly (method §5) from tile sums against the literal implementation, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.assembly import (
    NoSnapshotsError,
    assemble,
    assemble_direct,
    measure_block_ncc,
    rank_snapshots,
)
from dippas_core.dip.inversion import Step
from dippas_core.errors import InputError
from dippas_core.run import RunDirectory, record


def test_ranking_rule_of_spec_section_5():
    # negatives by increasing |NCC|, then NCC >= 0 by increasing NCC; ties: earlier iteration
    ncc = np.array([-0.3, 0.1, -0.05, 0.0, 0.1, -0.3, -0.0])
    iterations = np.array([10, 11, 12, 13, 14, 9, 15])
    order = rank_snapshots(ncc, iterations)
    assert order.tolist() == [2, 5, 0, 3, 6, 1, 4]
    # the same rule along the last axis of a block map
    maps = np.stack([ncc, -ncc])
    assert rank_snapshots(maps, iterations)[0].tolist() == order.tolist()
    assert rank_snapshots(maps, iterations)[1].tolist() == [1, 4, 3, 6, 2, 5, 0]


def test_partial_ranking_equals_the_full_sort_with_many_ties(rng):
    # the fast path for L << n (partition, then sort the few) must keep method §5's tie rule exactly
    for _ in range(100):
        n = int(rng.integers(5, 300))
        first = int(rng.integers(1, n + 1))
        ncc = np.round(rng.normal(0, 0.01, (3, 4, n)), 3)  # rounded: plenty of exact ties
        ncc[rng.random(ncc.shape) < 0.1] = 0.0
        ncc[rng.random(ncc.shape) < 0.05] = -0.0
        iterations = rng.permutation(n) + 1
        full = rank_snapshots(ncc, iterations)[..., :first]
        np.testing.assert_array_equal(rank_snapshots(ncc, iterations, first), full)


@pytest.mark.parametrize(
    ("shape", "B", "L", "tau"),
    [
        ((96, 80), 32, 1, 30.0),
        ((96, 80), 32, 4, 30.5),
        ((96, 80), 64, 3, 31.0),
        ((96, 80), 96, 2, 30.0),  # whole image: one block
        ((64, 64), 64, 100, 30.0),  # L larger than the number of snapshots
    ],
)
def test_assemble_equals_the_direct_implementation(synthetic_run, shape, B, L, tau):
    run = synthetic_run(n=14, shape=shape, seed=B + L)
    fast = assemble(run, B, L, tau)
    slow = assemble_direct(run, B, L, tau)
    assert fast.params["n_candidates"] == slow.params["n_candidates"]
    np.testing.assert_array_equal(fast.choice, slow.choice)
    np.testing.assert_allclose(fast.choice_ncc, slow.choice_ncc, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(fast.image, slow.image)
    assert fast.image.dtype == np.uint8 and fast.image.shape == (*shape, 3)
    # and the float output is the same mean before rounding
    f32 = assemble(run, B, L, tau, dtype="float32")
    assert f32.image.dtype == np.float32
    np.testing.assert_array_equal(np.rint(f32.image).astype(np.uint8), fast.image)


def test_choices_differ_between_blocks_and_come_from_one_snapshot(synthetic_run):
    run = synthetic_run(n=10, shape=(96, 96), seed=3)
    res = assemble(run, B=32, L=1, tau=30.0)
    assert res.choice.shape == (3, 3, 1)
    assert len(np.unique(res.choice)) > 1  # blocks pick different snapshots
    # L = 1: each block is exactly the chosen snapshot's pixels, all three channels
    for by in range(3):
        for bx in range(3):
            snap = run.snapshots.read(int(res.choice[by, bx, 0]))
            sl = np.s_[by * 32 : (by + 1) * 32, bx * 32 : (bx + 1) * 32]
            np.testing.assert_array_equal(res.image[sl], np.rint(snap[sl]).astype(np.uint8))


def test_B_equal_H_and_L_1_is_the_smallest_ranked_full_image_ncc(synthetic_run):
    from dippas_core.correlation import ncc
    from dippas_core.residual import residual

    run = synthetic_run(n=9, shape=(64, 64), seed=5)
    scores = []
    for i in range(len(run.snapshots)):
        img = run.snapshots.read(i)
        scores.append(ncc(residual(img), img, run.reference))
    scores = np.array(scores)
    # the rule of method §5 written out: the negative closest to 0, else the smallest non-negative
    neg = np.flatnonzero(scores < 0)
    best = neg[np.argmin(-scores[neg])] if neg.size else int(np.argmin(scores))
    res = assemble(run, B=64, L=1, tau=30.0)
    assert res.choice.shape == (1, 1, 1) and res.choice[0, 0, 0] == best
    np.testing.assert_array_equal(res.image, np.rint(run.snapshots.read(best)).astype(np.uint8))


def test_ties_go_to_the_earlier_iteration_and_L_beyond_n_averages_all(tmp_path, rng):
    h = w = 32
    photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    K = rng.normal(0, 0.02, (h, w)).astype(np.float32)
    a = np.clip(photo * (1 + 0.5 * K[..., None]), 0, 255).astype(np.float32)
    b = np.clip(photo * (1 - 0.5 * K[..., None]) + 3, 0, 255).astype(np.float32)
    # iterations 5..9 carry a, b, a, a, b: identical snapshots have identical NCCs (ties)
    frames = {5: a, 6: b, 7: a, 8: a, 9: b}
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware")
    record(run, (Step(i, 0.1, 40.0, 0.0, s) for i, s in frames.items()))
    res = assemble(run, B=32, L=2, tau=38.0)
    first = res.choice[0, 0].tolist()
    # whichever of a/b ranks first, its two earliest copies are taken
    assert first in ([0, 2], [1, 4])
    everything = assemble(run, B=32, L=50, tau=38.0, dtype="float32")
    assert everything.params["n_averaged"] == 5
    mean = np.mean([run.snapshots.frames[i] / 257.0 for i in range(5)], axis=0)
    np.testing.assert_allclose(everything.image, mean, atol=1e-4)


def test_tau_keeps_psnr_at_least_min_tau_best(synthetic_run):
    run = synthetic_run(n=10, shape=(64, 64), tau=30.0)  # PSNRs 30.1 .. 31.0
    assert assemble(run, 32, 100, 30.55).params["n_candidates"] == 5
    top = assemble(run, 32, 100, 45.0)  # above the best: only the best snapshot(s)
    assert top.params["psnr_threshold"] == pytest.approx(31.0)
    assert top.params["n_candidates"] == 1
    np.testing.assert_array_equal(top.choice, np.full((2, 2, 1), 9))


def test_bad_parameters_are_input_errors(synthetic_run):
    run = synthetic_run(n=3, shape=(64, 64))
    with pytest.raises(InputError, match="multiple of the run's tile 32"):
        assemble(run, B=48)
    with pytest.raises(InputError, match="multiple"):
        assemble(run, B=16)
    with pytest.raises(InputError, match="L"):
        assemble(run, B=32, L=0)
    with pytest.raises(InputError, match="integer"):
        assemble(run, B=32.0)
    with pytest.raises(InputError, match="finite"):
        assemble(run, B=32, tau=float("nan"))
    with pytest.raises(InputError, match="dtype"):
        assemble(run, B=32, dtype="uint16")


def test_empty_run_says_why(tmp_path, rng):
    photo = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    K = np.zeros((32, 32), np.float32)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware", dip_config={"tau_psnr": 38.0})
    record(run, (Step(i, 0.1, 30.0 + i, 0.0, None) for i in range(1, 4)))
    with pytest.raises(NoSnapshotsError, match=r"33\.00 dB, below .* 38"):
        assemble(run)


def test_ncc_map_is_measured_on_the_result(synthetic_run):
    from dippas_core.correlation import block_ncc
    from dippas_core.residual import residual

    run = synthetic_run(n=8, shape=(96, 80), seed=2)
    res = assemble(run, B=32, L=3, tau=30.0)
    assert "ncc_map_s" not in res.params  # lazy: not computed until asked
    expect = block_ncc(residual(res.image), res.image, run.reference, 32)
    np.testing.assert_allclose(res.ncc_map, expect, rtol=1e-4, atol=1e-7)
    assert res.params["ncc_map_s"] >= 0
    assert measure_block_ncc(res.image, run.reference, 32).shape == (3, 3)


def _run_with_an_artefact_block(tmp_path, rng, psnr=31.0):
    """A run whose snapshot 3 carries a checkerboard on block (0, 0) and almost no camera there.

    The checkerboard's residual energy makes that block's NCC tiny (the NCC divides by the
    residual's norm), so the paper's rule ranks it first on that block; everywhere else every
    snapshot carries the camera (positive NCC).
    """
    h = w = 64
    yy, xx = np.mgrid[0:h, 0:w]
    photo = np.clip(120 + 30 * np.sin(xx / 7.0)[..., None] + rng.normal(0, 2, (h, w, 3)), 0, 255)
    photo = np.rint(photo).astype(np.uint8)
    K = rng.normal(0, 0.05, (h, w)).astype(np.float32)
    board = np.zeros((h, w, 3))
    board[:32, :32] = (60.0 * (-1.0) ** (xx + yy))[:32, :32, None]

    def steps():
        for i in range(1, 7):
            a = -0.02 if i == 3 else 0.6
            snap = photo * (1 + a * K[..., None]) + rng.normal(0, 0.8, (h, w, 3))
            if i == 3:
                snap = snap + board
            yield Step(i, 0.01, psnr + 0.1 * i, 0.01, np.clip(snap, 0, 255).astype(np.float32))

    run = RunDirectory.create(tmp_path / "run", photo, K, mode="aware",
                              dip_config={"seed": 0, "tau_psnr": 20.0})
    record(run, steps())
    return run, photo


def test_bounded_rule_refuses_the_artefact_block_the_paper_rule_picks(tmp_path, rng):
    from dippas_core.config import MAX_DEVIATION, AssemblyParams

    run, photo = _run_with_an_artefact_block(tmp_path, rng)
    paper = assemble(run, AssemblyParams(32, 1, 20.0, "paper"))
    assert paper.choice[0, 0, 0] == 2  # store index of iteration 3: the checkerboard
    dev_paper = np.abs(paper.image[:32, :32].astype(float) - photo[:32, :32]).max()
    assert dev_paper > MAX_DEVIATION

    bounded = assemble(run, AssemblyParams(32, 1, 20.0, "bounded"))
    assert bounded.choice[0, 0, 0] != 2
    dev = np.abs(bounded.image.astype(float) - photo).max()
    assert dev <= MAX_DEVIATION
    assert bounded.params["rule"] == "bounded" and bounded.params["blocks_outside_bound"] == 0


def test_bounded_rule_ranks_by_projection_within_the_bound(synthetic_run):
    from dippas_core.config import AssemblyParams
    from dippas_core.snapshots import block_projection_from_sums

    run = synthetic_run(n=12, shape=(64, 64), tau=30.0)  # all within the bound
    res = assemble(run, AssemblyParams(32, 3, 30.0, "bounded"))
    proj = block_projection_from_sums(run.tile_sums.array(), 1)  # n×Bh×Bw, 32-px tiles
    for by in range(2):
        for bx in range(2):
            v = proj[:, by, bx]
            expected = sorted(range(len(v)), key=lambda j: (v[j] >= 0, abs(v[j]), j))[:3]
            assert res.choice[by, bx].tolist() == expected


def test_bounded_rule_falls_back_to_the_best_block_when_none_keeps_the_bound(tmp_path, rng):
    from dippas_core.config import AssemblyParams

    # recorded PSNRs above what any block really has: no block keeps the bound, every block
    # takes its best snapshot by block PSNR
    run, photo = _run_with_an_artefact_block(tmp_path, rng, psnr=70.0)
    res = assemble(run, AssemblyParams(32, 2, 70.0, "bounded"))
    assert res.params["blocks_outside_bound"] == 4
    assert (res.choice[..., 1] == -1).all() and (res.choice[..., 0] >= 0).all()
    assert res.choice[0, 0, 0] != 2  # the far pixels rule the checkerboard out first
