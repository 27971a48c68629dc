"""Peak memory of reading hostile files (issues 16 and 26), each in a fresh process, beside a
control.

Each bomb is a small file declaring a huge image or array (built as in tests/test_hostile.py and
tests/test_hostile_runs.py); the numbers are the peak resident memory (``VmHWM``) of a fresh
Python that imports dippas_core and tries to read it.  Issue 26 added a photo run whose plan
declares a 100000×100000 photo and one whose finished tile's record inflates to 1 GiB (both
through ``dippas assemble``), and attacker model files declaring a network of width 10^6 and
holding a deflated storage that inflates to 2 GiB.  The controls: a real 6000×4000 RGB PNG,
decoded, and the valid model file the hostile ones were made from, loaded.  Memory figures do not
depend on the machine's load.

Run: ``.venv/bin/python benchmarks/bench_bomb_memory.py``
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_hostile as th  # noqa: E402 - the bomb builders of the tests
import test_hostile_runs as thr  # noqa: E402

READ = """
from dippas_core.io import read_image
try:
    print("READ", read_image({path!r}).shape)
except Exception as exc:
    print("REFUSED", exc)
"""


ASSEMBLE = """
from dippas_core.cli import main
print("EXIT", main(["assemble", {run!r}, "--out", {out!r}]))
"""

LOAD_MODEL = """
from dippas_core.attacker import AttackerModel
try:
    AttackerModel.load({path!r})
    print("LOADED")
except Exception as exc:
    print("REFUSED", exc)
"""


def _valid_model(path: Path) -> Path:
    """The smallest valid attacker model file (two Dresden cameras)."""
    from dippas_core.attacker import AttackerConfig, AttackerModel
    from dippas_core.attacker.model import _network

    config = AttackerConfig(patch=32, stride=32, score_stride=32, region=0, width=4)
    return AttackerModel(_network(2, 4), ["Nikon_D200_0", "Nikon_D70_0"], config).save(path)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-bombs-"))
    try:
        (tmp / "p16.png").write_bytes(th.png_bytes(15000, 12000, 16, 2, th.zeros_deflate(1024)))
        (tmp / "small.png").write_bytes(th.png_bytes(500, 400, 16, 2, th.zeros_deflate(1024)))
        tile = np.zeros((2048, 2048, 3), np.uint8)
        tifffile.imwrite(tmp / "t.tif", (tile for _ in range(64)), shape=(16384, 16384, 3),
                         dtype=np.uint8, tile=(2048, 2048), photometric="rgb",
                         compression="zstd")
        side = 20480
        th.write_zip(tmp / "k.npz", {"K.npy": (th.npy_header_only((side, side)), side * side * 4),
                                     "metadata.npy": (th._npy_of(np.array("{}")), 0)})
        (tmp / "huge.png").write_bytes(th.png_bytes(50000, 50000, 8, 2, th.zeros_deflate(4)))
        Image.fromarray(np.zeros((4000, 6000, 3), np.uint8)).save(tmp / "legit.png")
        plan_bomb = thr.photo_run_bomb(tmp / "plan-bomb", "plan")
        record_bomb = thr.photo_run_bomb(tmp / "record-bomb", "record")
        model = _valid_model(tmp / "attacker.pt")
        wide = thr._with_config(model, tmp / "wide.pt", width=10**6)
        deflated = thr._deflated_bomb(model, tmp / "deflated.pt")
        cases = {
            "PNG 16-bit RGB declaring 15000x12000, IDAT 1 GiB": READ.format(
                path=str(tmp / "p16.png")
            ),
            "PNG 500x400 16-bit, IDAT 1 GiB (decoded)": READ.format(path=str(tmp / "small.png")),
            "tiled TIFF 16384x16384 via `dippas fingerprint`": (
                "from dippas_core.cli import main\n"
                f"print('EXIT', main(['fingerprint', {str(tmp / 't.tif')!r}, "
                f"'--out', {str(tmp / 'o.npz')!r}]))"
            ),
            ".npz K 20480x20480 (1.6 GB) via Fingerprint.load": (
                "from dippas_core.fingerprint import Fingerprint\ntry:\n"
                f"    Fingerprint.load({str(tmp / 'k.npz')!r})\n"
                "except Exception as exc:\n    print('REFUSED', exc)"
            ),
            "batch check, PNG header 50000x50000": (
                "from dippas_core.batch import BatchSettings, _refuse_oversized_file\ntry:\n"
                f"    _refuse_oversized_file({str(tmp / 'huge.png')!r}, BatchSettings(), 'x')\n"
                "except Exception as exc:\n    print('REFUSED', exc)"
            ),
            "photo run, plan declaring 100000x100000 (assemble)": ASSEMBLE.format(
                run=str(plan_bomb), out=str(tmp / "a.png")
            ),
            "photo run, done/0000.npz inflating to 1 GiB (assemble)": ASSEMBLE.format(
                run=str(record_bomb), out=str(tmp / "b.png")
            ),
            "attacker model declaring width 10^6": LOAD_MODEL.format(path=str(wide)),
            "attacker model, deflated storage of 2 GiB": LOAD_MODEL.format(path=str(deflated)),
            "control: the valid attacker model, loaded": LOAD_MODEL.format(path=str(model)),
            "baseline: imports only": "import dippas_core.cli, dippas_core.io\nprint('IMPORTED')",
            "control: real 6000x4000 RGB PNG (decoded)": READ.format(path=str(tmp / "legit.png")),
        }
        print(f"{'case':56s} {'peak RSS':>9s}  outcome")
        for label, code in cases.items():
            out, peak = th.run_measured(code, tmp)
            print(f"{label:56s} {peak:6.1f} MB  {out.splitlines()[0][:60]}")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
