"""No output of dippas carries its source's metadata (issue 7).

Sources are built WITH rich metadata: a JPEG with EXIF (Make/Model/Artist, a GPS IFD, a maker
note), an ICC profile, XMP, a comment, an IPTC block and a JFXX thumbnail; a PNG with eXIf, iCCP
and text/XMP chunks; a TIFF with Make/Model/Artist/Software/Copyright/description, ICC and XMP tags.
Every exporter (``io.write_image``, ``dippas anonymize``, ``dippas batch``, the napari writer) is
run on them and its files are read back with Pillow and tifffile, and grepped byte by byte.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _png import png_chunks
from PIL import Image, ImageCms, PngImagePlugin

from dippas_core.io import read_image, write_image

#: Strings planted in the sources; none may appear in any output byte.
SECRETS = (
    b"LeakyCam",
    b"SpyModel 3000",
    b"Jane Secret",
    b"GPS-SECRET-PLACE",
    b"MAKERNOTE-SECRET",
    b"XMP-SECRET",
    b"COMMENT-SECRET",
    b"IPTC-SECRET-CAPTION",
    b"THUMB-SECRET",
    b"TIFF-DESCRIPTION-SECRET",
    b"(c) Secret Owner",
    b"2019:04:01 12:34:56",
    b"acsp",  # the signature of every ICC profile
)
#: TIFF tags that carry metadata rather than pixels.
METADATA_TAGS = {
    270: "ImageDescription",
    271: "Make",
    272: "Model",
    305: "Software",
    306: "DateTime",
    315: "Artist",
    700: "XMP",
    33432: "Copyright",
    33723: "IPTC",
    34377: "Photoshop",
    34665: "ExifIFD",
    34675: "ICCProfile",
    34853: "GPSIFD",
}
#: Pillow ``info`` keys that would mean metadata came through.
METADATA_INFO_KEYS = {
    "exif",
    "icc_profile",
    "xmp",
    "XML:com.adobe.xmp",
    "comment",
    "photoshop",
    "iptc",
    "Author",
    "Description",
    "Copyright",
    "Software",
    "thumbnail",
    "jfif",
}

N = 64


def _pixels(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:N, 0:N]
    base = np.stack(
        [100 + 60 * np.sin(xx / 7), 110 + 50 * np.cos(yy / 9), 90 + 40 * np.sin((xx + yy) / 11)], -1
    )
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "LeakyCam"
    exif[0x0110] = "SpyModel 3000"
    exif[0x013B] = "Jane Secret"
    exif[0x0132] = "2019:04:01 12:34:56"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.5), "E", (13.0, 24.0, 0.0)
    gps[0x1C] = b"ASCII\0\0\0GPS-SECRET-PLACE"
    exif.get_ifd(0x8769)[0x927C] = b"MAKERNOTE-SECRET"
    return exif


def _icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _rich_jpeg(path: Path) -> None:
    """JPEG with EXIF+GPS+maker note, ICC, XMP, comment, IPTC (APP13) and a JFXX thumbnail."""
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(
        buf,
        "JPEG",
        quality=95,
        exif=_exif(),
        icc_profile=_icc(),
        xmp=b"<x:xmpmeta>XMP-SECRET</x:xmpmeta>",
        comment=b"COMMENT-SECRET",
    )
    thumb = io.BytesIO()
    Image.fromarray(_pixels()[::8, ::8]).save(thumb, "JPEG", comment=b"THUMB-SECRET")
    caption = b"IPTC-SECRET-CAPTION"
    iptc = b"\x1c\x02\x78" + struct.pack(">H", len(caption)) + caption
    app13 = b"Photoshop 3.0\0" + b"8BIM\x04\x04\0\0" + struct.pack(">I", len(iptc)) + iptc
    jfxx = b"JFXX\0\x10" + thumb.getvalue()
    data = buf.getvalue()
    path.write_bytes(data[:2] + _segment(0xE0, jfxx) + _segment(0xED, app13) + data[2:])


def _rich_png(path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Secret")
    info.add_text("Copyright", "(c) Secret Owner")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>XMP-SECRET</x:xmpmeta>")
    info.add_text("Comment", "COMMENT-SECRET", zip=True)
    Image.fromarray(_pixels(4)).save(path, pnginfo=info, exif=_exif(), icc_profile=_icc())


def _rich_tiff(path: Path) -> None:
    icc, xmp = _icc(), b"<x:xmpmeta>XMP-SECRET</x:xmpmeta>"
    tifffile.imwrite(
        path,
        _pixels(5),
        photometric="rgb",
        description="TIFF-DESCRIPTION-SECRET",
        software="LeakyCam firmware",
        datetime="2019:04:01 12:34:56",
        extratags=[
            (271, "s", 0, "LeakyCam", True),
            (272, "s", 0, "SpyModel 3000", True),
            (315, "s", 0, "Jane Secret", True),
            (33432, "s", 0, "(c) Secret Owner", True),
            (34675, "B", len(icc), icc, True),
            (700, "B", len(xmp), xmp, True),
        ],
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """A private folder (its name is a secret too) with three metadata-rich photos."""
    folder = tmp_path_factory.mktemp("jane-secret-folder") / "Whistleblower_Documents"
    folder.mkdir()
    _rich_jpeg(folder / "DSC_0042.jpg")
    _rich_png(folder / "IMG_2001.png")
    _rich_tiff(folder / "SCAN_7.tif")
    return folder


def test_the_sources_really_carry_the_metadata(sources):
    """Guard: if the planted metadata were not there, the checks below would prove nothing."""
    jpg, png, tif = (sources / n for n in ("DSC_0042.jpg", "IMG_2001.png", "SCAN_7.tif"))
    with Image.open(jpg) as im:
        exif = im.getexif()
        assert exif[0x010F] == "LeakyCam" and exif.get_ifd(0x8825)[1] == "N"
        assert {"icc_profile", "xmp", "comment"} <= set(im.info)
        assert any(name == "APP13" for name, _ in im.applist)
        assert any(name == "APP0" and data.startswith(b"JFXX") for name, data in im.applist)
    with Image.open(png) as im:
        assert {"icc_profile", "exif", "Author"} <= set(im.info)
    with tifffile.TiffFile(tif) as t:
        assert {271, 272, 305, 34675, 700} <= {tag.code for tag in t.pages[0].tags}
    for path in (jpg, png, tif):
        assert b"LeakyCam" in path.read_bytes()
    for path in (jpg, tif):  # (PNG compresses its ICC profile: checked by chunk type instead)
        assert b"acsp" in path.read_bytes()


# ------------------------------------------------------------------------------------------------
# the checks



def assert_clean_image(path: Path) -> None:
    """``path`` (PNG or TIFF) holds pixels and nothing from any source."""
    data = path.read_bytes()
    for secret in SECRETS:
        assert secret not in data, f"{path.name} contains {secret!r}"
    with Image.open(path) as im:
        assert not set(im.info) & METADATA_INFO_KEYS, f"{path.name}: {sorted(im.info)}"
        exif = im.getexif()  # for TIFF: the IFD's own tags, so only metadata tags are banned
        banned = set(exif) & set(METADATA_TAGS) if path.suffix.lower() != ".png" else set(exif)
        assert not banned, f"{path.name} has EXIF tags {sorted(banned)}"
        assert getattr(im, "applist", []) == []
    if path.suffix.lower() == ".png":
        assert set(png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND"}, png_chunks(data)
    else:
        with tifffile.TiffFile(path) as t:
            assert len(t.pages) == 1
            codes = {tag.code for tag in t.pages[0].tags}
            assert not codes & set(METADATA_TAGS), {
                METADATA_TAGS[c] for c in codes & set(METADATA_TAGS)
            }


def assert_clean_text(path: Path, sources: Path) -> None:
    """A JSON report or summary: no planted metadata, no source folder."""
    text = path.read_text()
    json.loads(text)
    for secret in SECRETS:
        assert secret.decode() not in text, f"{path.name} contains {secret!r}"
    assert "Whistleblower_Documents" not in text and "jane-secret-folder" not in text, path.name


# ------------------------------------------------------------------------------------------------
# the exporters


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("bit_depth", [8, 16])
def test_write_image_writes_pixels_only(sources, tmp_path, suffix, bit_depth):
    for src in sorted(sources.iterdir()):
        pixels = read_image(src)
        out = write_image(tmp_path / f"{src.stem}{suffix}", pixels, bit_depth=bit_depth)
        assert_clean_image(out)
        back = read_image(out)
        expected = pixels if bit_depth == 8 else pixels.astype(np.uint16) * 257
        np.testing.assert_array_equal(back, expected)  # pixels survive, exactly


TINY = ["--preset", "tiny", "--max-iter", "3", "--record-psnr", "0", "--seed", "1"]


def test_cli_anonymize_output_and_report_are_clean(sources, tmp_path):
    from dippas_core.cli import main

    for src in sorted(sources.iterdir()):
        out = tmp_path / f"out-{src.suffix[1:]}.png"
        assert main(["anonymize", str(src), "--out", str(out), *TINY]) == 0
        assert_clean_image(out)
        report = out.with_suffix(".json")
        text = report.read_text()
        for secret in SECRETS:
            assert secret.decode() not in text, f"{report.name} contains {secret!r}"


def test_cli_anonymize_report_does_not_name_the_source_folder(sources, tmp_path):
    """The report travels with the anonymized image: it must not say where the original lives."""
    from dippas_core.cli import main

    src = sources / "DSC_0042.jpg"
    out = tmp_path / "shared.png"
    assert main(["anonymize", str(src), "--out", str(out), *TINY]) == 0
    assert_clean_text(out.with_suffix(".json"), sources)


@pytest.fixture(scope="module")
def threaded_scheduler():
    """An in-process Dask cluster (threads): enough to run the real batch path cheaply."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, scheduler_kwargs={"dashboard": False}
    )
    yield cluster.scheduler_address
    cluster.close()


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_cli_batch_outputs_names_and_reports_are_clean(sources, tmp_path, threaded_scheduler, fmt):
    from dippas_core.cli import main

    out = tmp_path / "shared"
    argv = ["batch", str(sources), "--blind", "--out", str(out), "--format", fmt, *TINY]
    assert main([*argv, "--scheduler", threaded_scheduler]) == 0
    images = sorted(p for p in out.iterdir() if p.suffix in (".png", ".tif"))
    assert len(images) == 3
    for image in images:
        assert_clean_image(image)
        # names: opaque, nothing of the source name or folder
        assert image.name.startswith("anon-")
        assert not any(stem in image.name for stem in ("DSC", "IMG", "SCAN", "0042", "2001"))
        assert_clean_text(image.with_suffix(".json"), sources)
    for ledger in ("summary.json",):
        assert_clean_text(out / ledger, sources)
    summary = (out / "summary.csv").read_text()
    assert "Whistleblower_Documents" not in summary and "LeakyCam firmware" not in summary


def test_batch_keep_names_keeps_only_the_sanitised_stem(sources, tmp_path, threaded_scheduler):
    from dippas_core.cli import main

    out = tmp_path / "named"
    argv = ["batch", str(sources), "--blind", "--out", str(out), "--keep-names", *TINY]
    assert main([*argv, "--scheduler", threaded_scheduler]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["DSC_0042.png", "IMG_2001.png", "SCAN_7.png"]  # no folder, no suffix
    for name in names:
        assert_clean_image(out / name)


def test_napari_writer_exports_pixels_and_the_report_only(sources, tmp_path):
    writer = pytest.importorskip("napari_dippas._writer")
    src = sources / "DSC_0042.jpg"
    pixels = read_image(src)
    # a layer whose metadata holds the source's EXIF next to the DIPPAS report
    with Image.open(src) as im:
        exif = {str(k): str(v) for k, v in im.getexif().items()}
    meta = {
        "name": "anonymized",
        "metadata": {"exif": exif, "source": str(src), "dippas": {"report": {"psnr": 41.0}}},
    }
    for suffix in (".png", ".tif"):
        written = writer.write_image_layer(str(tmp_path / f"layer{suffix}"), pixels, meta)
        assert_clean_image(Path(written[0]))
        np.testing.assert_array_equal(read_image(written[0]), pixels)
        assert len(written) == 2
        assert json.loads(Path(written[1]).read_text())["psnr"] == 41.0
        assert_clean_text(Path(written[1]), sources)
