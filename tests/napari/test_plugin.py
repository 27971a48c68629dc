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
    assert saved["psnr"] == 41.5 and saved["image"] == out.name


def test_writer_refuses_what_it_cannot_write(tmp_path):
    from dippas_core.errors import InputError
    from napari_dippas._writer import write_image_layer

    with pytest.raises(InputError, match="jpg"):
        write_image_layer(str(tmp_path / "x.jpg"), np.zeros((8, 8, 3), np.uint8), {})
    with pytest.raises(InputError, match=r"\(4, 8, 8, 3\)"):
        write_image_layer(str(tmp_path / "x.png"), np.zeros((4, 8, 8, 3), np.uint16), {})
    assert not list(tmp_path.iterdir())  # nothing half-written
