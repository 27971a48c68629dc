"""Peak memory of reading hostile files (issue 16), each in a fresh process, beside a control.

Each bomb is a small file declaring a huge image or array (built as in tests/test_hostile.py);
the numbers are the peak resident memory (``ru_maxrss``) of a fresh Python that imports
dippas_core and tries to read it.  The control is a real 6000×4000 RGB PNG, decoded.  Memory
figures do not depend on the machine's load.

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

READ = """
from dippas_core.io import read_image
try:
    print("READ", read_image({path!r}).shape)
except Exception as exc:
    print("REFUSED", exc)
"""


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
            "baseline: imports only": "import dippas_core.cli, dippas_core.io\nprint('IMPORTED')",
            "control: real 6000x4000 RGB PNG (decoded)": READ.format(path=str(tmp / "legit.png")),
        }
        print(f"{'case':52s} {'peak RSS':>9s}  outcome")
        for label, code in cases.items():
            out, peak = th.run_measured(code, tmp)
            print(f"{label:52s} {peak:6.1f} MB  {out.splitlines()[0][:60]}")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
