"""The plugin as napari sees it: manifest, Plugins menu, sample data, reader and writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
WIDGETS = ["Fingerprint", "Residual & attribution", "Anonymize", "Assemble & export"]


def test_one_manifest_reachable_from_the_root_and_the_package():
    import napari_dippas

    root = REPO / "napari.yaml"
    packaged = Path(napari_dippas.__file__).parent / "napari.yaml"
    assert root.is_symlink() and root.resolve() == packaged.resolve()
    assert not packaged.is_symlink()  # the package file is the single source of truth


def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).parent / "npe2"
    out = subprocess.run(
        [str(npe2), "validate", "napari-dippas", "--imports"], capture_output=True, text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout.lower()


def test_contributions_found_through_the_plugin_manager():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-dippas")
    contrib = manifest.contributions
    assert sorted(w.display_name for w in contrib.widgets) == sorted(WIDGETS)
    assert [s.key for s in contrib.sample_data] == ["dresden"]
    assert {".png", ".tif", ".tiff"} <= set(contrib.writers[0].filename_extensions)
    assert contrib.readers[0].accepts_directories


def _menu_titles(menu) -> list[str]:
    """Every action text of a Qt menu and its submenus (Qt shows "&&" as "&")."""
    titles = []
    for action in menu.actions():
        titles.append(action.text().replace("&&", "&"))
        if action.menu() is not None:
            titles += _menu_titles(action.menu())
    return titles


def test_widgets_open_from_the_plugins_menu(viewer):
    titles = _menu_titles(viewer.window.plugins_menu)
    assert "DIPPAS" in titles
    for name in WIDGETS:
        assert name in titles, (name, titles)
        dock, widget = viewer.window.add_plugin_dock_widget("napari-dippas", name)
        # napari hands plugins a proxy of the viewer
        assert getattr(widget.viewer, "__wrapped__", widget.viewer) is viewer
    assert len(viewer.window.dock_widgets) >= 4


def test_sample_data_one_click(viewer):
    viewer.open_sample("napari-dippas", "dresden")
    photo, fp = viewer.layers["photo"], viewer.layers["fingerprint"]
    assert photo.rgb and photo.data.shape == (256, 256, 3) and photo.data.dtype == np.uint8
    assert fp.data.shape == (256, 256) and fp.colormap.name == "RdBu_r"
    lo, hi = fp.contrast_limits
    assert lo == pytest.approx(-hi)
    assert fp.metadata["dippas"]["camera"] == "Nikon_D70s_0"


def test_reader_opens_a_fingerprint_file(viewer, small, tmp_path):
    _, fp = small
    path = fp.save(tmp_path / "camera.npz")
    from napari_dippas._reader import get_reader

    assert get_reader(str(tmp_path / "other.npz")) is None  # not ours (does not even exist)
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    assert get_reader(str(tmp_path / "plain.npz")) is None  # an npz without K
    assert get_reader(str(tmp_path)) is None  # a folder that is not a run
    layers = viewer.open(str(path), plugin="napari-dippas")
    assert len(layers) == 1
    np.testing.assert_array_equal(layers[0].data, fp.K)
    assert layers[0].metadata["dippas"]["kind"] == "fingerprint"


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_writer_is_bit_exact_without_metadata(viewer, sample, tmp_path, suffix):
    from PIL import Image

    from dippas_core.io import read_image

    photo, _ = sample
    report = {"psnr": 41.5, "seed": 3, "before": {"ncc": 0.02}}
    layer = viewer.add_image(photo, rgb=True, name="anonymized",
                             metadata={"dippas": {"kind": "anonymized", "report": report}})
    out = tmp_path / f"anon{suffix}"
    written = layer.save(str(out), plugin="napari-dippas")
    assert sorted(Path(p).name for p in written) == sorted([out.name, "anon.json"])
    np.testing.assert_array_equal(read_image(out), photo)
    if suffix == ".png":
        with Image.open(out) as im:
            assert "exif" not in im.info and not im.getexif()
            assert not {"icc_profile", "dpi", "XML:com.adobe.xmp"} & set(im.info)
    else:  # only the tags that describe the pixel layout
        import tifffile

        with tifffile.TiffFile(out) as tif:
            names = {tag.name for tag in tif.pages[0].tags}
        assert not names & {"ImageDescription", "Make", "Model", "Software", "DateTime",
                            "Artist", "ExifTag", "GPSTag", "XMP", "InterColorProfile"}
    saved = json.loads((tmp_path / "anon.json").read_text())
    assert saved["psnr"] == 41.5 and saved["output"] == out.name and "before" not in saved


def test_writer_refuses_what_it_cannot_write(tmp_path):
    from napari_dippas._writer import CannotSaveLayer, write_image_layer

    with pytest.raises(CannotSaveLayer, match="jpg"):
        write_image_layer(str(tmp_path / "x.jpg"), np.zeros((8, 8, 3), np.uint8), {})
    with pytest.raises(CannotSaveLayer, match=r"\(4, 8, 8, 3\)"):
        write_image_layer(str(tmp_path / "x.png"), np.zeros((4, 8, 8, 3), np.uint16), {})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_plain_images_open_without_a_reader_choice(viewer, sample, small, tmp_path):
    """The reader claims .npz files and run folders only: napari opens a PNG with its own reader
    (no "choose a reader" dialog, no MultipleReaderError) and a fingerprint still comes to us."""
    from napari.plugins._npe2 import get_readers

    from dippas_core.io import write_image

    photo, _ = sample
    png = write_image(tmp_path / "holiday.png", photo)
    assert "napari-dippas" not in get_readers(str(png))
    # plugin=None is what File > Open does: with two candidate readers this raises
    # MultipleReaderError (the GUI's "choose a reader" dialog)
    layers = viewer.open(str(png), plugin=None)
    assert len(layers) == 1 and dippas_kind(layers[0].metadata) is None
    np.testing.assert_array_equal(np.asarray(layers[0].data), photo)

    _, fp = small
    npz = fp.save(tmp_path / "camera.npz")
    assert "napari-dippas" in get_readers(str(npz))
    (layer,) = viewer.open(str(npz), plugin="napari-dippas")
    assert dippas_kind(layer.metadata) == "fingerprint"
    np.testing.assert_array_equal(layer.data, fp.K)


def test_reader_needs_k_and_metadata_in_the_npz(tmp_path):
    from napari_dippas._reader import get_reader

    np.savez(tmp_path / "only_k.npz", K=np.zeros((4, 4), np.float32))
    assert get_reader(str(tmp_path / "only_k.npz")) is None  # Fingerprint.load would fail


def dippas_kind(metadata):
    from napari_dippas._layers import dippas_kind as kind

    return kind(metadata)


@pytest.mark.parametrize("make", ["fingerprint", "residual", "block_ncc"])
def test_writer_refuses_measurement_layers(viewer, small, tmp_path, make):
    """Fingerprints, residuals and block maps are small signed values: as 8-bit they are black."""
    from napari_dippas._layers import block_heatmap_layer, fingerprint_layer, residual_layer
    from napari_dippas._writer import CannotSaveLayer

    _, fp = small
    data, kwargs, _ = {
        "fingerprint": lambda: fingerprint_layer(fp.K),
        "residual": lambda: residual_layer(fp.K, sigma=5.0),
        "block_ncc": lambda: block_heatmap_layer(np.full((2, 2), 0.01), 32),
    }[make]()
    layer = viewer.add_image(data, **kwargs)
    # through napari's save, as File > Save Selected Layer(s) does: the error reaches the user
    with pytest.raises(CannotSaveLayer, match=make):
        layer.save(str(tmp_path / "map.png"), plugin="napari-dippas")
    assert not list(tmp_path.iterdir())


def test_writer_keeps_no_run_folder_name(tmp_path):
    from napari_dippas._writer import write_image_layer

    run_dir = tmp_path / "alice-smith-photos" / "run-1"
    meta = {"metadata": {"dippas": {"kind": "anonymized", "report": {"run_dir": str(run_dir)}}}}
    write_image_layer(str(tmp_path / "out.png"), np.zeros((8, 8, 3), np.uint8), meta)
    text = (tmp_path / "out.json").read_text()
    assert "run_dir" not in json.loads(text) and "alice-smith" not in text and "run-1" not in text


def test_a_garbled_assembly_file_falls_back_to_defaults(viewer, synthetic_run):
    from napari_dippas._models import RunSession
    from napari_dippas._reader import ASSEMBLY_FILE, last_assembly_params

    path, photo, _ = synthetic_run("garbled")
    (path / ASSEMBLY_FILE).write_text(json.dumps({"B": "sixty-four", "L": None, "tau": "nan"}))
    params = last_assembly_params(RunSession(path))
    assert (params.B, params.L, params.tau) == (64, 10, 30.0)
    (path / ASSEMBLY_FILE).write_text("{not json")
    assert last_assembly_params(RunSession(path)).L == 10
    layers = viewer.open(str(path), plugin="napari-dippas")  # the run still opens, whole
    names = {layer.name for layer in layers}
    # named by the run (a run made outside the viewer: its folder), never numbered
    assert {f"{name} — garbled" for name in (
        "photo", "fingerprint", "snapshots", "anonymized", "NCC after")} <= names
    np.testing.assert_array_equal(viewer.layers["photo — garbled"].data, photo)


def test_a_16_bit_run_is_scored_on_the_8_bit_scale_and_saved_16_bit(
    viewer, synthetic_run, tmp_path
):
    """A uint16 photo (×257) gives the scores of its 8-bit twin, and a 16-bit anonymized file."""
    from dippas_core.io import read_image
    from napari_dippas._models import AssemblySettings, RunSession

    path8, photo, _ = synthetic_run("eight", bits=8)
    path16, _, _ = synthetic_run("sixteen", bits=16)
    settings = AssemblySettings(block_size=32, n_average=3, record_psnr=30.0)
    out8 = RunSession(path8).assemble(settings)
    out16 = RunSession(path16).assemble(settings)
    assert out8.image.dtype == np.uint8 and out8.bit_depth == 8
    assert out16.image.dtype == np.float32 and out16.bit_depth == 16
    np.testing.assert_allclose(out16.image, out8.image, atol=0.5)  # same choice, unrounded
    assert out16.before.ncc == pytest.approx(out8.before.ncc, rel=1e-3)
    assert out16.after.ncc == pytest.approx(out8.after.ncc, rel=1e-2, abs=1e-4)
    assert out16.psnr == pytest.approx(out8.psnr, abs=0.3) and out16.psnr > 20

    layers = viewer.open(str(path16), plugin="napari-dippas")
    (anon,) = [layer for layer in layers if dippas_kind(layer.metadata) == "anonymized"]
    assert anon.metadata["dippas"]["bit_depth"] == 16
    written = anon.save(str(tmp_path / "anon16.png"), plugin="napari-dippas")
    assert [Path(p).name for p in written] == ["anon16.png", "anon16.json"]
    saved = read_image(tmp_path / "anon16.png")
    assert saved.dtype == np.uint16
    np.testing.assert_allclose(saved / 257.0, anon.data, atol=0.01)
    assert "sixteen" not in (tmp_path / "anon16.json").read_text()  # the run folder's name
    record = json.loads((Path(anon.metadata["dippas"]["run_dir"]) / "forensic-record.json")
                        .read_text())
    assert record["run_dir"] == "sixteen" and "before" in record["ncc"]
