"""Hostile files, careless paths, broken runs (issue 16): nothing lost, nothing leaked, memory
bounded.

One section per class of the issue:

1. data loss: every ``--force`` (and every file written beside an output) is tried on folders
   holding a user's files; the folder is hashed before and after;
2. memory bombs: small files declaring huge images/arrays, read in a subprocess whose peak RSS
   is measured (``ru_maxrss``);
3. checks done late: bad arguments and output locations are refused before any work;
4. damaged runs and absurd numbers give messages, never tracebacks, crashes or blank results;
5. privacy: the JSON beside a published image carries nothing about the source; temporary runs
   do not outlive their process;
6. silent changes (animated GIF, EXIF orientation, tau above every snapshot) are said or refused;
7. small ones: ``score --crop 0``/``--threshold nan``; no message ever suggests pickles.

Every bomb is built cheaply (a deflate stream of zeros made by repeating one flushed block,
zstd tiles, header-only .npy members), so the file runs in well under a minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dippas_core.cli import main
from dippas_core.errors import DippasError, ImageReadError, InputError
from dippas_core.fingerprint import Fingerprint
from dippas_core.io import read_image
from dippas_core.run import MARKER, DamagedRunError, RunDirectory

REPO = Path(__file__).resolve().parents[1]
N = 64
RNG = np.random.default_rng(16)
PHOTO = RNG.integers(30, 220, (N, N, 3), dtype=np.uint8)
K = RNG.normal(0, 0.02, (N, N)).astype(np.float32)
#: Peak resident memory a bomb may cost the process that reads it (imports included).
RSS_LIMIT_MB = 600


# ------------------------------------------------------------------------------------------------
# helpers


def folder_hash(folder: Path) -> str:
    """One digest of every file (hidden ones too) under ``folder``: names and contents."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``dippas ARGV`` (argparse's refusals exit via SystemExit)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def png_bytes(w: int, h: int, depth: int, colour: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def zeros_deflate(n_mib: int) -> bytes:
    """A valid zlib stream inflating to ``n_mib`` MiB of zeros, about 1 KB per MiB, made in
    milliseconds: one fully flushed (self-contained) block repeated, an empty final block, and
    the Adler-32 of n zero bytes ((n mod 65521) << 16 | 1)."""
    c = zlib.compressobj(9)
    first = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    n = n_mib << 20
    return first[:2] + first[2:] * n_mib + b"\x03\x00" + struct.pack(">I", (n % 65521) << 16 | 1)


def write_zip(path: Path, members: dict[str, tuple[bytes, int]]) -> None:
    """A deflated zip whose members are ``head`` followed by ``n_zeros`` zero bytes, written by
    hand in milliseconds: the zeros are one flushed deflate block of 1 MiB repeated (raw deflate,
    as zip stores it), the CRC-32 computed over them."""
    zero = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zero_block = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    local, central = b"", b""
    for name, (head, n_zeros) in members.items():
        assert n_zeros % len(zero) == 0
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
        data += zero_block * (n_zeros // len(zero)) + b"\x03\x00"
        crc = zlib.crc32(head)
        for _ in range(n_zeros // len(zero)):
            crc = zlib.crc32(zero, crc)
        size = len(head) + n_zeros
        fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 0x21, crc, len(data), size)
        offset = len(local)
        local += b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name.encode() + data
        central += (b"PK\x01\x02" + struct.pack("<H", 20) + fields
                    + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, offset) + name.encode())
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(members), len(members),
                                        len(central), len(local), 0)
    path.write_bytes(local + central + end)


def npy_header_only(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """The header of a ``.npy`` file declaring ``shape``, with no data after it."""
    import io as _io

    from numpy.lib import format as npformat

    buf = _io.BytesIO()
    npformat.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


#: The child's own peak: VmHWM belongs to the memory of the program exec'd, while ru_maxrss
#: also carries the peak of the (forked) parent, e.g. a pytest process grown to 1 GB.
_PRINT_PEAK = """
import re, resource
try:
    with open("/proc/self/status") as fh:
        peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", fh.read()).group(1))
except OSError:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_MB", peak_kb / 1024)
"""


def run_measured(code: str, tmp_path: Path) -> tuple[str, float]:
    """Run ``code`` in a fresh Python; return its stdout and its peak RSS in MB."""
    script = tmp_path / "measure.py"
    script.write_text(textwrap.dedent(code) + _PRINT_PEAK)
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(tmp_path))}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    peak = float(out.rsplit("PEAK_MB", 1)[1])
    return out, peak


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    Image.fromarray(PHOTO).save(d / "photo.png")
    Fingerprint(K=K, camera="Nikon_D70s_0", n_images=3).save(d / "k.npz")
    return {"dir": d, "photo": d / "photo.png", "k": d / "k.npz"}


def make_run(folder: Path, n: int = 6, *, psnr0: float = 30.0) -> RunDirectory:
    """A recorded run of synthetic snapshots (no DIP) in ``folder``."""
    from dippas_core.dip.inversion import Step
    from dippas_core.run import record

    rng = np.random.default_rng(3)

    def steps():
        for i in range(1, n + 1):
            snap = PHOTO + rng.normal(0, 2, PHOTO.shape)
            yield Step(i, 0.01, psnr0 + i, 0.01, np.clip(snap, 0, 255).astype(np.float32))

    run = RunDirectory.create(
        folder, PHOTO, K, mode="aware", dip_config={"seed": 0, "tau_psnr": psnr0},
        extra={"fingerprint": {"camera": "Nikon_D70s_0"}, "source": "alice_at_home.png"},
    )
    record(run, steps())
    return run


@pytest.fixture
def run_dir(tmp_path) -> Path:
    # a folder name that names a person: it must never reach a published file
    path = tmp_path / "alice-smith-private"
    make_run(path)
    return path


# ------------------------------------------------------------------------------------------------
# 1. data loss


def _user_folder(tmp_path: Path, *, config: bool) -> Path:
    """A folder of someone's files that happens to hold a config.json."""
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    (folder / "figures").mkdir()
    (folder / "figures" / "plot.png").write_bytes(b"not really a png")
    if config:
        (folder / "config.json").write_text(json.dumps({"format": "dippas-run", "mode": "aware"}))
    return folder


@pytest.mark.parametrize("config", [True, False], ids=["with-config.json", "plain"])
@pytest.mark.parametrize("command", ["invert", "anonymize", "api"])
def test_force_never_deletes_a_folder_dippas_did_not_make(files, tmp_path, capsys, command, config):
    folder = _user_folder(tmp_path, config=config)
    before = folder_hash(folder)
    if command == "api":
        with pytest.raises(InputError, match="not a dippas run folder"):
            RunDirectory.create(folder, PHOTO, K, mode="aware", force=True)
    else:
        target = ["--out", folder] if command == "invert" else [
            "--run-dir", folder, "--out", tmp_path / "anon.png"
        ]
        code, err = cli(
            [command, files["photo"], "--fingerprint", files["k"], *target, "--force",
             "--preset", "tiny", "--max-iter", "2"],
            capsys,
        )
        assert code == 2 and "not a dippas run folder" in err
        assert not (tmp_path / "anon.png").exists()
    assert folder_hash(folder) == before


def test_force_replaces_only_a_runs_own_files(tmp_path):
    run = make_run(tmp_path / "run")
    run.close()
    (run.path / "notes.txt").write_text("mine")
    (run.path / "B32.png").write_bytes(b"an assembly the user kept")
    keep = {p: p.read_bytes() for p in (run.path / "notes.txt", run.path / "B32.png")}
    new = RunDirectory.create(run.path, PHOTO[:32, :32], K[:32, :32], mode="blind", force=True)
    new.close()
    assert {p: p.read_bytes() for p in keep} == keep  # the user's files are untouched
    assert RunDirectory.open(run.path).shape == (32, 32) and (run.path / MARKER).is_file()
    assert len(RunDirectory.open(run.path).snapshots) == 0  # the old snapshots went


@pytest.mark.parametrize("name", ["config", "snapshots", "tilesums", "forensic-record", "assembly"])
def test_assemble_never_writes_over_a_runs_own_files(run_dir, capsys, name):
    before = folder_hash(run_dir)
    code, err = cli(["assemble", run_dir, "-B", "32", "--out", run_dir / f"{name}.png",
                     "--force"], capsys)
    assert code == 2 and "run folder's own files" in err
    assert folder_hash(run_dir) == before
    RunDirectory.open(run_dir)  # still a usable run


def test_anonymize_output_inside_its_new_run_folder_is_refused_before_work(files, tmp_path, capsys):
    run = tmp_path / "newrun"
    code, err = cli(["anonymize", files["photo"], "--fingerprint", files["k"], "--run-dir", run,
                     "--out", run / "config.png", "--preset", "tiny"], capsys)
    assert code == 2 and "run folder's own files" in err and not run.exists()


def test_demo_force_replaces_only_a_previous_demo(tmp_path, capsys):
    folder = _user_folder(tmp_path, config=False)
    before = folder_hash(folder)
    code, err = cli(["demo", "--out", folder, "--force", "--max-iter", "2"], capsys)
    assert code == 2 and "does not hold a previous demo" in err
    assert folder_hash(folder) == before


def test_writer_never_replaces_a_json_it_did_not_write(tmp_path):
    from napari_dippas._writer import CannotSaveLayer, write_image_layer

    meta = {"metadata": {"dippas": {"kind": "anonymized", "report": {"psnr": 40.0, "seed": 1}}}}
    (tmp_path / "holiday.json").write_text('{"my": "itinerary"}')
    before = folder_hash(tmp_path)
    with pytest.raises(CannotSaveLayer, match="holiday.json already exists"):
        write_image_layer(str(tmp_path / "holiday.png"), PHOTO, meta)
    assert folder_hash(tmp_path) == before  # not even the image was written
    # its own sidecar from an earlier export is replaced, as the image napari asked about
    written = write_image_layer(str(tmp_path / "anon.png"), PHOTO, meta)
    again = write_image_layer(str(tmp_path / "anon.png"), PHOTO[::-1], meta)
    assert written == again and np.array_equal(read_image(tmp_path / "anon.png"), PHOTO[::-1])


def test_writer_never_writes_over_a_runs_own_files(run_dir):
    from napari_dippas._writer import CannotSaveLayer, write_image_layer

    meta = {"metadata": {"dippas": {"kind": "anonymized", "report": {"psnr": 40.0}}}}
    before = folder_hash(run_dir)
    with pytest.raises(CannotSaveLayer, match="run folder's own files"):
        write_image_layer(str(run_dir / "config.png"), PHOTO, meta)
    assert folder_hash(run_dir) == before


# ------------------------------------------------------------------------------------------------
# 2. memory bombs (peak RSS of a fresh process)


def _assert_refused_within_memory(code: str, tmp_path: Path, expect: str) -> float:
    out, peak = run_measured(code, tmp_path)
    assert expect in out, out
    assert peak < RSS_LIMIT_MB, f"peak RSS {peak:.0f} MB"
    return peak


def _assert_read_refused_within_memory(path: Path, tmp_path: Path) -> float:
    """``read_image(path)`` in a fresh process raises ImageReadError within the memory bound."""
    return _assert_refused_within_memory(
        f"""
        from dippas_core.io import read_image
        from dippas_core.errors import ImageReadError
        try:
            read_image({str(path)!r})
        except ImageReadError as exc:
            print("REFUSED", exc)
        """,
        tmp_path,
        "REFUSED",
    )


@pytest.mark.parametrize(
    "w, h, depth, colour",
    [(15000, 12000, 16, 2), (15000, 12000, 8, 2), (50000, 50000, 8, 0)],
    ids=["16-bit-rgb", "8-bit-rgb", "8-bit-gray-2.5GP"],
)
def test_png_bomb_is_refused_by_its_declared_size(tmp_path, w, h, depth, colour):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(w, h, depth, colour, zeros_deflate(1024)))  # inflates to 1 GiB
    assert bomb.stat().st_size < 2 << 20
    _assert_read_refused_within_memory(bomb, tmp_path)


def test_jpeg_declaring_a_huge_size_is_refused_from_its_header(tmp_path):
    import io as _io

    buf = _io.BytesIO()
    Image.fromarray(PHOTO).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(bytes(data))
    _assert_read_refused_within_memory(bomb, tmp_path)


def test_png_whose_data_inflates_past_its_size_is_decoded_within_memory(tmp_path):
    """A small declared size with 1 GiB of compressed zeros behind it: only the rows the size
    needs are inflated."""
    bomb = tmp_path / "small.png"
    bomb.write_bytes(png_bytes(500, 400, 16, 2, zeros_deflate(1024)))
    out, peak = run_measured(
        f"""
        from dippas_core.io import read_image
        a = read_image({str(bomb)!r})
        print("SHAPE", a.shape, a.dtype, int(a.max()))
        """,
        tmp_path,
    )
    assert "SHAPE (400, 500, 3) uint16 0" in out and peak < RSS_LIMIT_MB


def test_tiled_tiff_bomb_is_refused_by_read_and_by_the_fingerprint_command(tmp_path):
    import tifffile

    bomb = tmp_path / "bomb.tif"
    tile = np.zeros((2048, 2048, 3), np.uint8)
    tifffile.imwrite(bomb, (tile for _ in range(64)), shape=(16384, 16384, 3), dtype=np.uint8,
                     tile=(2048, 2048), photometric="rgb", compression="zstd")
    assert bomb.stat().st_size < 1 << 20  # declares 768 MiB of pixels
    peak = _assert_refused_within_memory(
        f"""
        from dippas_core.cli import main
        code = main(["fingerprint", {str(bomb)!r}, {str(bomb)!r},
                     "--out", {str(tmp_path / "k.npz")!r}])
        print("EXIT", code)
        """,
        tmp_path,
        "EXIT 2",
    )
    print(f"tiled TIFF 16384x16384 through dippas fingerprint: peak RSS {peak:.0f} MB")


def test_npz_holding_a_huge_array_is_refused_before_its_data_is_read(tmp_path, files):
    bomb = tmp_path / "bomb.npz"
    side = 20480  # K: 1.6 GB of float32 zeros in a 1.6 MB archive
    write_zip(bomb, {
        "K.npy": (npy_header_only((side, side)), side * side * 4),
        "metadata.npy": (_npy_of(np.array(json.dumps({"camera": "x"}))), 0),
    })
    with zipfile.ZipFile(bomb) as zf:  # a valid archive, as numpy would see it
        assert zf.getinfo("K.npy").file_size == 128 + side * side * 4
    assert bomb.stat().st_size < 4 << 20
    peak = _assert_refused_within_memory(
        f"""
        from dippas_core.fingerprint import Fingerprint
        from dippas_core.errors import InputError
        try:
            Fingerprint.load({str(bomb)!r})
        except InputError as exc:
            print("REFUSED", exc)
        """,
        tmp_path,
        "REFUSED",
    )
    print(f".npz 20480x20480: peak RSS {peak:.0f} MB")


def _npy_of(array: np.ndarray) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_fingerprint_of_the_wrong_size_is_refused_from_its_header(files, tmp_path, capsys):
    """The header says 5000×5000 (no data follows): refused by size, never read."""
    fake = tmp_path / "k5000.npz"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("K.npy", npy_header_only((5000, 5000)))
        zf.writestr("metadata.npy", _npy_of(np.array("{}")))
    code, err = cli(["anonymize", files["photo"], "--fingerprint", fake,
                     "--out", tmp_path / "a.png", "--preset", "tiny"], capsys)
    assert code == 2 and "64×64" in err and "5000×5000" in err


def test_batch_refuses_a_huge_declared_header(tmp_path):
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(png_bytes(50000, 50000, 8, 2, zeros_deflate(4)))  # 2.5 gigapixels
    _assert_refused_within_memory(
        f"""
        from dippas_core.batch import BatchSettings, _refuse_oversized_file
        from dippas_core.errors import InputError
        try:
            _refuse_oversized_file({str(bomb)!r}, BatchSettings(max_pixels=16_000_000), "huge.png")
        except InputError as exc:
            print("REFUSED", exc)
        """,
        tmp_path,
        "REFUSED huge.png is 50000×50000",
    )


def test_pixel_limit_is_one_setting(tmp_path, monkeypatch):
    import dippas_core.io as io

    Image.fromarray(PHOTO).save(tmp_path / "p.jpg")
    Image.fromarray(PHOTO).save(tmp_path / "p.png")
    import tifffile

    tifffile.imwrite(tmp_path / "p.tif", PHOTO)
    monkeypatch.setattr(io.limits, "MAX_PIXELS", N * N - 1)
    for name in ("p.jpg", "p.png", "p.tif"):
        with pytest.raises(ImageReadError, match="over the limit"):
            read_image(tmp_path / name)
        assert read_image(tmp_path / name, max_pixels=N * N).shape == (N, N, 3)


# ------------------------------------------------------------------------------------------------
# 3. checks done before any work


@pytest.mark.parametrize(
    "args, match",
    [
        (["--sigma", "0"], "--sigma"),
        (["--sigma", "-1"], "--sigma"),
        (["--sigma", "nan"], "--sigma"),
        (["--sigma", "inf"], "--sigma"),
        (["--seed", str(2**64)], "--seed"),
        (["--seed", "-1"], "--seed"),
        (["--torch-threads", "100000"], "--torch-threads"),
        (["--tau", "nan"], "--tau"),
        (["-B", str(10**12)], "-B"),
        (["-L", "0"], "-L"),
        (["--crop", "0"], "--crop"),
        (["--max-iter", "0"], "--max-iter"),
        (["--out", "{tmp}/folder.png"], "is a folder"),
        (["--out", "{tmp}/file.txt/a.png"], "is a file, not a folder"),
    ],
)
def test_anonymize_refuses_bad_arguments_before_any_work(files, tmp_path, capsys, args, match):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file.txt").write_text("x")
    args = [a.format(tmp=tmp_path) for a in args]
    out = [] if "--out" in args else ["--out", tmp_path / "a.png"]
    run = tmp_path / "run"
    code, err = cli(["anonymize", files["photo"], "--fingerprint", files["k"], *out,
                     "--run-dir", run, "--preset", "tiny", "--quiet", *args], capsys)
    assert code == 2 and match in err, err
    assert not run.exists() and not (tmp_path / "a.png").exists()


@pytest.mark.parametrize(
    "args, match",
    [(["--tile", "0"], "--tile"), (["--tile", "100000"], "--tile 100000 is larger"),
     (["--sigma", "nan"], "--sigma"), (["--seed", str(2**70)], "--seed")],
)
def test_invert_refuses_bad_arguments_before_any_work(files, tmp_path, capsys, args, match):
    code, err = cli(["invert", files["photo"], "--blind", "--out", tmp_path / "run",
                     "--preset", "tiny", *args], capsys)
    assert code == 2 and match in err and not (tmp_path / "run").exists()


def test_fingerprint_out_must_be_a_file_in_a_writable_place(files, tmp_path, capsys):
    (tmp_path / "k.npz").mkdir()
    (tmp_path / "file").write_text("x")
    for out, match in ((tmp_path / "k.npz", "is a folder"),
                       (tmp_path / "file" / "k.npz", "is a file, not a folder")):
        code, err = cli(["fingerprint", files["photo"], "--out", out], capsys)
        assert code == 2 and match in err


def test_a_late_failure_keeps_the_run_and_says_how_to_assemble(files, tmp_path, capsys,
                                                              monkeypatch):
    """The inversion is done, then writing the image fails: the work is kept."""
    import dippas_core.io as io

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "write_image", disk_full)
    out = tmp_path / "a.png"
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(PHOTO).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    code, err = cli(["anonymize", tmp_path / "turned.jpg", "--fingerprint", files["k"],
                     "--crop", "32",
                     "--out", out, "-B", "32", "-L", "2", "--preset", "tiny", "--record-psnr", "0",
                     "--max-iter", "4", "--quiet"], capsys)
    assert code == 2 and "No space left" in err and "dippas assemble" in err
    # the command says, in one line, that the output will display turned (class 6)
    assert "dippas anonymize: warning: " in err and "rotated 90° left" in err
    kept = Path(err.split("the run is kept in ")[1].split(":")[0])
    try:
        assert len(RunDirectory.open(kept).snapshots) > 0
        assert kept.name.startswith("dippas-kept-run-")  # the stale-run cleaning leaves it
    finally:
        import shutil

        shutil.rmtree(kept)


# ------------------------------------------------------------------------------------------------
# 4. damaged runs and absurd numbers: messages, no tracebacks, nothing blank


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


DAMAGE = {
    "config-not-an-object": (lambda r: (r / "config.json").write_text("[1, 2]"),
                             "not a dippas run configuration"),
    "config-without-keys": (lambda r: (r / "config.json").write_text('{"format": "dippas-run"}'),
                            "mode"),
    "tile-0": (lambda r: _edit_json(r / "config.json", lambda c: {**c, "tile": 0}), "tile"),
    "sigma-nan": (lambda r: _edit_json(r / "config.json", lambda c: {**c, "sigma": "nan"}),
                  "sigma"),
    "snapshot-height-missing": (
        lambda r: _edit_json(r / "snapshots.json", lambda m: {k: v for k, v in m.items()
                                                               if k != "height"}), "height"),
    "snapshot-width-negative": (
        lambda r: _edit_json(r / "snapshots.json", lambda m: {**m, "width": -64}), "width"),
    "tilesums-other-tile": (
        lambda r: _edit_json(r / "tilesums.json", lambda m: {**m, "tile": 16}), "tile"),
    "pickled-photo": (
        lambda r: np.save(r / "photo.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
        "Python objects"),
    "reference-wrong-shape": (lambda r: np.save(r / "reference.npy", K[:32]), "reference.npy"),
    "photo-missing": (lambda r: (r / "photo.npy").unlink(), "photo.npy is missing"),
    "nan-psnrs": (lambda r: _nan_psnrs(r), "non-finite PSNR"),
    "huge-declared-photo": (
        lambda r: _edit_json(r / "config.json", lambda c: {
            **c, "photo": {**c["photo"], "height": 10**6, "width": 10**6}}), "pixel limit"),
}


def _nan_psnrs(run: Path) -> None:
    idx = np.fromfile(run / "snapshots.idx", dtype=[("iteration", "<i8"), ("psnr", "<f8")])
    idx["psnr"] = np.nan
    idx.tofile(run / "snapshots.idx")


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_is_named_as_damaged(run_dir, tmp_path, capsys, damage):
    spoil, match = DAMAGE[damage]
    spoil(run_dir)
    out = tmp_path / "out.png"
    code, err = cli(["assemble", run_dir, "-B", "32", "--tau", "0", "--out", out], capsys)
    assert code == 2 and match in err, err
    assert "Traceback" not in err and not out.exists()  # nothing blank written as a result
    if damage != "config-not-an-object":
        assert "damaged run folder" in err


def test_a_garbled_history_is_named(run_dir):
    (run_dir / "history.csv").write_text("iteration,loss,psnr,gamma,kept\n1,x,2,3,1\n")
    with pytest.raises(DamagedRunError, match="history.csv is garbled"):
        RunDirectory.open(run_dir).history()


@pytest.mark.parametrize("damage", ["config-without-keys", "tile-0", "pickled-photo",
                                    "reference-wrong-shape", "snapshot-height-missing"])
def test_the_plugin_reader_names_a_damaged_run(run_dir, damage):
    pytest.importorskip("napari")
    from napari_dippas._reader import read_run

    DAMAGE[damage][0](run_dir)
    with pytest.raises(DippasError, match="damaged run folder"):
        read_run(str(run_dir))


@pytest.mark.parametrize(
    "content, match",
    [
        ("a,b\n1,2\n", "no column"),
        (None, "line 2: size 'big'"),
        (None, "line 2: ncc 'strong'"),
        ("\x00\xff\xfe garbage", "scores"),
    ],
)
def test_evaluate_report_only_names_the_bad_line_of_scores_csv(tmp_path, capsys, content, match):
    from dippas_core.evaluation import SCORE_FIELDS

    if content is None:
        row = dict.fromkeys(SCORE_FIELDS, "1")
        row.update(method="untouched", crop="c0", label="1")
        row["size" if "size" in match else "ncc"] = "big" if "size" in match else "strong"
        content = ",".join(SCORE_FIELDS) + "\n" + ",".join(row[f] for f in SCORE_FIELDS) + "\n"
    (tmp_path / "scores.csv").write_bytes(content.encode("latin-1"))
    code, err = cli(["evaluate", "--report-only", "--out", tmp_path], capsys)
    assert code == 2 and match in err, err


@pytest.mark.parametrize("args", [["--sizes", "0"], ["--sizes", ","], ["--crops-per-photo", "0"],
                                  ["--seed", str(2**64)], ["--block", "-3"]])
def test_evaluate_refuses_bad_numbers_while_parsing(tmp_path, capsys, args):
    code, err = cli(["evaluate", "--data", tmp_path, "--out", tmp_path / "o", *args], capsys)
    assert code == 2 and args[0] in err and not (tmp_path / "o").exists()


def test_huge_block_size_is_the_whole_image_not_a_huge_allocation(run_dir, tmp_path, capsys):
    out = tmp_path / "whole.png"
    code, err = cli(["assemble", run_dir, "-B", str(2**20), "--out", out], capsys)
    assert code == 0, err
    assert json.loads(out.with_suffix(".json").read_text())["assembly"]["grid"] == [1, 1]


# ------------------------------------------------------------------------------------------------
# 5. privacy


SECRETS = ("Nikon", "alice", "ncc", "pce", "block_ncc", "fingerprint", "run_dir", "source",
           "photo.png", "maps")


def _assert_published_is_clean(path: Path) -> dict:
    text = path.read_text()
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in the published {path.name}"
    return json.loads(text)


def test_cli_sidecar_is_clean_and_the_record_stays_in_the_run(run_dir, tmp_path, capsys):
    out = tmp_path / "published.png"
    assert cli(["assemble", run_dir, "-B", "32", "--out", out], capsys)[0] == 0
    sidecar = _assert_published_is_clean(out.with_suffix(".json"))
    assert sidecar["seed"] == 0 and sidecar["assembly"]["B"] == 32 and "versions" in sidecar
    record = json.loads((run_dir / "forensic-record.json").read_text())
    assert set(record["ncc"]) == {"before", "after"} and "block_ncc_before" in record["maps"]
    assert record["run_dir"] == str(run_dir)


def test_plugin_sidecar_is_clean_and_the_record_stays_in_the_run(run_dir, tmp_path):
    from napari_dippas._writer import write_image_layer

    report = {"psnr": 41.5, "seed": 3, "ncc": {"before": 0.02, "after": 0.001},
              "pce": {"before": 900.0}, "fingerprint": {"camera": "Nikon_D70s_0"},
              "block_ncc": {"before": [[0.03]]}, "run_dir": "alice-smith-private",
              "dip_config": {"seed": 3, "device": "cpu", "note": "/home/alice/x"},
              "versions": {"numpy": "2.0", "platform": "Linux alice-laptop"}}
    meta = {"metadata": {"dippas": {"kind": "anonymized", "report": report,
                                    "run_dir": str(run_dir)}}}
    write_image_layer(str(tmp_path / "export.png"), PHOTO, meta)
    sidecar = _assert_published_is_clean(tmp_path / "export.json")
    assert sidecar["psnr"] == 41.5 and sidecar["dip_config"] == {"seed": 3, "device": "cpu"}
    assert sidecar["versions"] == {"numpy": "2.0"}
    record = json.loads((run_dir / "forensic-record.json").read_text())
    assert record["fingerprint"]["camera"] == "Nikon_D70s_0"


def test_published_sidecar_is_an_allow_list():
    from dippas_core.report import AnonymizationReport

    report = {"psnr": 40.0, "seed": 1, "camera": "Nikon", "owner": "alice", "mode": "aware",
              "assembly": {"B": 64, "L": 10, "ncc_map": [[1.0]]}, "inversion": {"source": "x"}}
    assert AnonymizationReport.from_dict(report).sidecar("/home/alice/out.png") == {
        "format": "dippas-published-sidecar", "output": "out.png", "psnr": 40.0, "seed": 1,
        "mode": "aware", "assembly": {"B": 64, "L": 10}, "inversion": {},
        "partial": False, "below_tau": False,  # what the image is: always said
    }


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_runs_are_cleaned_when_their_owner_is_gone(tmp_path):
    from dippas_core.run import clean_stale_temporary_runs

    def fake_run(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for part in (MARKER, "photo.npy", "config.json", ".lock"):
            (folder / part).write_bytes(b"x")
        return folder

    dead = fake_run(f"dippas-run-{_dead_pid()}-abc")
    alive = fake_run(f"dippas-run-{os.getppid()}-abc")
    foreign = fake_run(f"dippas-run-{_dead_pid()}-def")
    (foreign / "not-ours.txt").write_text("keep")
    other = tmp_path / "dippas-runner-notes"
    other.mkdir()
    assert clean_stale_temporary_runs(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and other.exists()
    assert (foreign / "not-ours.txt").read_text() == "keep"


def test_anonymize_leaves_no_temporary_run_and_a_clean_sidecar(files, tmp_path, capsys):
    pattern = f"dippas-run-{os.getpid()}-*"
    out = tmp_path / "a.png"
    code, err = cli(["anonymize", files["photo"], "--fingerprint", files["k"], "--crop", "32",
                     "--out", out, "-B", "32", "-L", "2", "--preset", "tiny", "--record-psnr", "0",
                     "--max-iter", "4", "--quiet"], capsys)
    assert code == 0, err
    assert list(Path(tempfile.gettempdir()).glob(pattern)) == []
    _assert_published_is_clean(out.with_suffix(".json"))


# ------------------------------------------------------------------------------------------------
# 6. silent changes


def test_animated_gif_is_refused_naming_its_frames(tmp_path):
    frames = [Image.fromarray(PHOTO), Image.fromarray(PHOTO[::-1]), Image.fromarray(PHOTO[:, ::-1])]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="3 frames"):
        read_image(tmp_path / "a.gif")
    frames[0].save(tmp_path / "still.gif")
    assert read_image(tmp_path / "still.gif").shape == (N, N, 3)


def test_multi_page_tiff_reads_the_first_page_and_says_the_rest_are_ignored(tmp_path):
    import tifffile

    from dippas_core.io import ImageNoteWarning

    tifffile.imwrite(tmp_path / "pages.tif", np.stack([PHOTO, PHOTO[::-1]]), photometric="rgb")
    with pytest.warns(ImageNoteWarning, match="2 pages; only the first page is read"):
        image = read_image(tmp_path / "pages.tif")
    assert np.array_equal(image, PHOTO)
    tifffile.imwrite(tmp_path / "one.tif", PHOTO, photometric="rgb")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageNoteWarning)
        assert np.array_equal(read_image(tmp_path / "one.tif"), PHOTO)


def test_absurd_torch_threads_are_refused_by_the_api_too():
    from dippas_core.config import DIPConfig

    with pytest.raises(InputError, match="torch_threads must be None or 1"):
        DIPConfig(torch_threads=100_000)
    assert DIPConfig(torch_threads=os.cpu_count() or 1).torch_threads == (os.cpu_count() or 1)


def test_exif_orientation_is_said_or_applied_as_pillow_does(tmp_path):
    from PIL import ImageOps

    wide = RNG.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=100)
    from dippas_core.io import ImageNoteWarning, warn_if_turned

    assert read_image(tmp_path / "turned.jpg").shape == (24, 40, 3)  # as stored
    with pytest.warns(ImageNoteWarning, match="orientation tag .*rotated 90° right"):
        warn_if_turned(tmp_path / "turned.jpg")
    with Image.open(tmp_path / "turned.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(read_image(tmp_path / "turned.jpg", apply_orientation=True), expected)


def test_tau_above_every_snapshot_is_said(run_dir, tmp_path, capsys):
    code, err = cli(["assemble", run_dir, "-B", "32", "--tau", "1e308",
                     "--out", tmp_path / "o.png"], capsys)
    # said in a line, in the name and in the status (issue 25): below tau is not 0
    assert code == 3 and "no snapshot reaches tau 1e+308 dB" in err and "36.00 dB" in err
    assert (tmp_path / "o-below-tau.png").is_file() and not (tmp_path / "o.png").exists()


# ------------------------------------------------------------------------------------------------
# 7. small ones


@pytest.mark.parametrize("args", [["--crop", "0"], ["--threshold", "nan"], ["--crop", "-5"]])
def test_score_refuses_bad_numbers(files, capsys, args):
    code, err = cli(["score", files["photo"], "--fingerprint", files["k"], *args], capsys)
    assert code == 2 and args[0] in err


@pytest.mark.parametrize("content", ["text", "pickle", "zip-pickle"])
def test_no_message_suggests_unsafe_loading(files, tmp_path, capsys, content):
    bad = tmp_path / "k.npz"
    if content == "text":
        bad.write_text("just some notes, not an archive")
    elif content == "pickle":
        import pickle

        bad.write_bytes(pickle.dumps({"K": 1}))
    else:
        with zipfile.ZipFile(bad, "w") as zf:
            buf = __import__("io").BytesIO()
            np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
            zf.writestr("K.npy", buf.getvalue())
            zf.writestr("metadata.npy", _npy_of(np.array("{}")))
    with pytest.raises(InputError) as info:
        Fingerprint.load(bad)
    code, err = cli(["score", files["photo"], "--fingerprint", bad], capsys)
    for text in (str(info.value), err):
        assert "k.npz" in text and "allow_pickle" not in text
    assert code == 2
