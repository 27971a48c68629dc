"""Images in and out: pixels as stored, clear errors, atomic writes without metadata."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from _png import png_chunks
from PIL import Image, ImageOps

from dippas_core.errors import ImageReadError, InputError
from dippas_core.io import center_crop, crop_at, read_image, to_float255, write_image


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("shape", [(9, 14), (9, 14, 3)])
def test_round_trip_is_exact(tmp_path, rng, suffix, bits, shape):
    dtype = np.uint8 if bits == 8 else np.uint16
    image = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    path = write_image(tmp_path / f"x{suffix}", image, bit_depth=bits)
    back = read_image(path)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, image)


def test_float_is_rounded_not_truncated(tmp_path):
    values = np.array([[0.4, 0.6, 1.5, 2.5, 254.6, 300.0, -3.0, 127.49]], dtype=np.float32)
    back = read_image(write_image(tmp_path / "r.png", values))
    np.testing.assert_array_equal(back, [[0, 1, 2, 2, 255, 255, 0, 127]])
    back16 = read_image(write_image(tmp_path / "r16.png", values, bit_depth=16))
    np.testing.assert_array_equal(back16, np.clip(np.rint(values * (65535 / 255)), 0, 65535))


def test_written_files_carry_no_metadata(tmp_path, testdata):
    # a real camera JPEG has EXIF; what we write from its pixels must have none
    photo = center_crop(read_image(testdata / "nat-jpg" / "Nikon_D70s_0_21853.JPG"), 64)
    for bits in (8, 16):
        png = write_image(tmp_path / f"p{bits}.png", photo, bit_depth=bits)
        assert png_chunks(png.read_bytes()) == [b"IHDR", b"IDAT", b"IEND"]
        with Image.open(png) as im:
            assert not im.getexif() and "icc_profile" not in im.info
    import tifffile

    tif = write_image(tmp_path / "p.tif", photo)
    with tifffile.TiffFile(tif) as t:
        tags = {tag.code for tag in t.pages[0].tags}
    # ImageDescription, Software, DateTime, Artist, XMP, EXIF IFD, GPS IFD, ICC profile
    assert not tags & {270, 305, 306, 315, 700, 34665, 34853, 34675}


def test_write_is_atomic_and_keeps_the_old_file_on_error(tmp_path):
    target = write_image(tmp_path / "keep.png", np.full((4, 4), 7, np.uint8))
    before = target.read_bytes()
    with pytest.raises(InputError, match="NaN"):
        write_image(target, np.full((4, 4), np.nan))
    with pytest.raises(InputError, match="H×W or H×W×3"):
        write_image(target, np.zeros((4, 4, 2)))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]
    with pytest.raises(InputError, match=".jpg"):
        write_image(tmp_path / "x.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="bit_depth"):
        write_image(tmp_path / "x.png", np.zeros((4, 4), np.uint8), bit_depth=12)


def test_reads_real_camera_jpeg_as_stored(testdata):
    image = read_image(testdata / "nat-jpg" / "Nikon_D70_0_19445.JPG")
    assert image.dtype == np.uint8 and image.shape == (2000, 3008, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_ignored_by_default_and_applied_on_request(tmp_path, rng, orientation):
    pixels = rng.integers(0, 256, (6, 10, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(pixels).save(path, exif=exif)
    np.testing.assert_array_equal(read_image(path), pixels)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(read_image(path, apply_orientation=True), expected)


def test_colour_modes_become_rgb_or_gray(tmp_path, rng):
    rgba = rng.integers(0, 256, (5, 7, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])
    pal = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))
    Image.fromarray(rgba[..., :2], "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), rgba[..., 0])
    Image.fromarray(rgba[..., 0] > 128).save(tmp_path / "b.png")
    assert set(np.unique(read_image(tmp_path / "b.png"))) <= {0, 255}


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _png16_with_filters(path: Path, image: np.ndarray, alpha: bool) -> None:
    """Independent encoder: a 16-bit RGB(A) PNG whose rows cycle through all five filter types."""
    h, w, ch = image.shape
    raw = image.astype(">u2").reshape(h, -1).view(np.uint8).astype(np.int32)
    bpp = ch * 2
    out = []
    for y in range(h):
        x = raw[y]
        up = raw[y - 1] if y else np.zeros_like(x)
        left = np.r_[np.zeros(bpp, np.int32), x[:-bpp]]
        ul = np.r_[np.zeros(bpp, np.int32), up[:-bpp]]
        ftype = y % 5
        pred = [0 * x, left, up, (left + up) // 2, _paeth(left, up, ul)][ftype]
        out.append(np.r_[ftype, (x - pred) % 256].astype(np.uint8))
    body = zlib.compress(np.concatenate(out).tobytes())

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 6 if alpha else 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("alpha", [False, True])
def test_16bit_colour_png_keeps_all_16_bits(tmp_path, rng, alpha):
    image = rng.integers(0, 65536, (11, 9, 4 if alpha else 3)).astype(np.uint16)
    path = tmp_path / "c16.png"
    _png16_with_filters(path, image, alpha)
    back = read_image(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, image[..., :3])


def test_unreadable_files_raise_image_read_error_naming_the_file(tmp_path, rng):
    good = tmp_path / "good.jpg"
    Image.fromarray(rng.integers(0, 256, (200, 200, 3)).astype(np.uint8)).save(good, quality=90)
    raw = good.read_bytes()
    cases = {
        "missing.png": None,
        "empty.png": b"",
        "text.jpg": b"this is not an image\n" * 10,
        "truncated.jpg": raw[: len(raw) // 2],
    }
    png16 = tmp_path / "full16.png"
    _png16_with_filters(png16, rng.integers(0, 65536, (8, 8, 3)).astype(np.uint16), False)
    cases["truncated16.png"] = png16.read_bytes()[:-30]
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        assert name in str(info.value)
        assert isinstance(info.value, OSError) and isinstance(info.value, InputError)


def test_float_tiff_is_unsupported(tmp_path):
    import tifffile

    path = tmp_path / "f.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.float32))
    with pytest.raises(ImageReadError, match="f.tif.*8- or 16-bit"):
        read_image(path)


def test_crops_and_scale():
    image = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    crop = center_crop(image, (3, 4))
    np.testing.assert_array_equal(crop, image[2:5, 3:7])
    assert np.shares_memory(crop, image)
    np.testing.assert_array_equal(center_crop(image, 7)[:, :, 0], image[:, 1:8, 0])
    np.testing.assert_array_equal(crop_at(image, 1, 2, 3, 4), image[1:4, 2:6])
    with pytest.raises(InputError, match="cannot crop 8×8 from an image of 7×10"):
        center_crop(image, 8)
    with pytest.raises(InputError, match="does not fit"):
        crop_at(image, 5, 0, 3, 3)
    assert to_float255(np.array([65535], np.uint16))[0] == pytest.approx(255.0)
    assert to_float255(np.array([7], np.uint8)).dtype == np.float32


def test_real_flat_field_with_orientation_6_stays_in_sensor_order(testdata):
    # every Nikon_D200_1 flat field says Orientation=6 over landscape pixel data (see the data
    # README); its fingerprint only matches that camera's photos in the stored order
    path = testdata / "ff-jpg" / "Nikon_D200_1_18178.JPG"
    stored = read_image(path)
    assert stored.shape == (2592, 3872, 3)
    turned = read_image(path, apply_orientation=True)
    np.testing.assert_array_equal(turned, np.rot90(stored, -1))


def test_tiff_colour_models_are_converted_not_passed_through_raw(tmp_path):
    import tifffile

    # CMYK, palette and min-is-white TIFFs hold samples that are not RGB / gray values
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    palette = Image.new("P", (2, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([0, 1, 1, 0])
    palette.save(tmp_path / "palette.tif")
    white = np.full((4, 4), 50, np.uint8)
    tifffile.imwrite(tmp_path / "white.tif", white, photometric="miniswhite")
    np.testing.assert_array_equal(read_image(tmp_path / "cmyk.tif")[0, 0], [255, 0, 0])
    pal = read_image(tmp_path / "palette.tif")
    np.testing.assert_array_equal(pal[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(pal[0, 1], [0, 0, 255])
    assert read_image(tmp_path / "white.tif")[0, 0] == 205
