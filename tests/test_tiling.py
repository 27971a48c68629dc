"""Tile plans, feathered stitching and the tiling/region checks (no network involved)."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.errors import InputError
from dippas_core.tiling import (
    axis_weights,
    check_region,
    feather_weights,
    parse_region,
    plan_tiles,
    stitch,
)

SHAPES = [(96, 160), (97, 161), (300, 300), (2000, 3008), (64, 64), (150, 70), (451, 200)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("tile", "overlap"), [(64, 32), (128, 32), (256, 64), (512, 64)])
def test_plan_covers_the_photo_with_even_origins_and_overlaps(shape, tile, overlap):
    plan = plan_tiles(shape, tile, overlap)
    cover = np.zeros(shape, np.int32)
    for t in plan.tiles:
        assert t.y % 2 == 0 and t.x % 2 == 0  # the colour-filter phase of every tile
        assert t.h <= max(tile, 1) or t.h == shape[0]
        assert 0 <= t.y and t.y + t.h <= shape[0] and t.x + t.w <= shape[1]
        cover[t.slices] += 1
    assert cover.min() >= 1
    for starts, size in ((plan.ys, shape[0]), (plan.xs, shape[1])):
        ends = [min(s + tile, size) if len(starts) > 1 else size for s in starts]
        assert ends[-1] == size
        for i in range(1, len(starts)):
            assert ends[i - 1] - starts[i] >= overlap  # neighbours overlap by at least O
            assert starts[i] > starts[i - 1]
    if max(shape) <= tile:
        assert len(plan) == 1 and plan.tiles[0].h == shape[0] and plan.tiles[0].w == shape[1]


def test_a_24_megapixel_photo_gets_the_expected_grid():
    plan = plan_tiles((4000, 6000), 256, 64)
    # stride 192: rows end on 4000 after ceil((4000-256)/192)+1 origins
    assert plan.grid == (21, 31)
    assert len(plan.tiles) == 21 * 31


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("tile", "overlap"), [(64, 32), (128, 64), (256, 64)])
def test_feather_weights_sum_to_one_everywhere(shape, tile, overlap):
    plan = plan_tiles(shape, tile, overlap)
    total = np.zeros(shape)
    for t, w in zip(plan.tiles, feather_weights(plan), strict=True):
        assert w.shape == (t.h, t.w)
        assert w.min() > 0
        total[t.slices] += w
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)


def test_weights_ramp_linearly_across_a_two_tile_overlap():
    # 160 = tiles at 0 and 96 (64-pixel tiles, 32 overlap): the overlap is [96, 128)... of x
    plan = plan_tiles((64, 160), 64, 32)
    assert plan.xs == (0, 32, 64, 96)
    wx = axis_weights(plan.xs, 160, 64)
    # in the overlap [32, 64) of tiles 0 and 1 the first falls and the second rises, linearly
    falling, rising = wx[0][32:64], wx[1][0:32]
    np.testing.assert_allclose(falling + rising, 1.0)
    steps = np.diff(rising)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    assert steps[0] > 0
    np.testing.assert_allclose(wx[0][:32], 1.0)  # alone at the photo's left edge


def test_stitching_tiles_of_a_real_photo_gives_it_back(natural_photos):
    photo = natural_photos[0][2][7:204, 13:290]  # odd size, off-centre
    plan = plan_tiles(photo.shape, 64, 32)
    tiles = {t.index: photo[t.slices] for t in plan.tiles}
    np.testing.assert_array_equal(stitch(plan, tiles), photo)
    # a missing tile takes the fill's pixels
    half = {i: v for i, v in tiles.items() if i % 2}
    np.testing.assert_array_equal(stitch(plan, half, fill=photo.astype(np.float32)), photo)
    with pytest.raises(InputError, match="tile 0 has no image"):
        stitch(plan, half)


@pytest.mark.parametrize(
    ("tile", "overlap", "message"),
    [
        (100, 32, "multiple of 32"),
        (32, 32, "at least 64"),
        (128, 16, "overlap .* at least 32"),
        (128, 48, "multiple of 32"),
        (128, 96, "at most half"),
        (128.0, 32, "integer"),
        (True, 32, "integer"),
    ],
)
def test_bad_tile_or_overlap_is_named(tile, overlap, message):
    with pytest.raises(InputError, match=message):
        plan_tiles((500, 500), tile, overlap)


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ((0, 0, 600, 100), "does not lie inside"),
        ((-2, 0, 100, 100), "does not lie inside"),
        ((1, 0, 100, 100), "must be even"),
        ((0, 0, 32, 100), "at least 64"),
        ((0, 0, 100), r"\(y, x, h, w\)"),
    ],
)
def test_bad_region_is_named(region, message):
    with pytest.raises(InputError, match=message):
        check_region(region, (500, 400))


def test_parse_region():
    assert parse_region("10, 20,30,40") == (10, 20, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "1,2,3,4,5", ""):
        with pytest.raises(InputError, match="four integers"):
            parse_region(bad)
