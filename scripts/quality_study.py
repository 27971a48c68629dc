"""Fidelity and trace of DIPPAS outputs on real crops: the table of docs/eval/ quality logs.

Anonymizes a set of real Dresden crops with one setting (a preset plus changes) and measures
every output: PSNR and the fidelity measures (``dippas_core.fidelity``), and the trace — NCC and
PCE of the output against its camera's fingerprint from the flat fields the anonymizer never saw
(it gets the other half of them), beside the mean |NCC| the five other cameras give (their
level).  Usage::

    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python scripts/quality_study.py \\
        --data ../shared/data/prnu-python-testdata --fingerprints FP_DIR --out OUT \\
        --set test128 --name cpu [--preset cpu] [--change lr=5e-3 ...]

``--set``: ``test128`` (the evaluation's cpu-preset crops: each camera's first photo, 128×128
centre), ``heldout128`` / ``heldout256`` (the other ten photos' centre crops), ``special`` (the
crops issue 22 names: flat skies, a texture, an off-centre Nikon D70 crop with a trace), ``demo``
(the demo's 64×64 sample with its own fingerprint) or a comma list of them.  Fingerprints are
estimated once per camera and role into ``FP_DIR``.  Each output lands in
``OUT/NAME/CROP/`` (``anonymized.png``, ``scores.json``): a second call skips finished crops, so
runs resume and several processes can share a set (``--order reverse``).  ``--table`` prints the
table of every crop finished under the given names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: crop name -> (photo file, top, left, size): issue 22's named crops (found by
#: ``--find-special``: the flattest 128×128 windows of the D200 photos, the most textured one,
#: and the off-centre Nikon D70 crop whose NCC with its camera stands out most).
SPECIAL: dict[str, tuple[str, int, int, int]] = {}
SPECIAL_FILE = Path(__file__).with_name("quality_crops.json")


def _cameras(data: Path) -> dict[str, list[Path]]:
    from dippas_core.evaluation import camera_label

    by: dict[str, list[Path]] = {}
    for p in sorted((data / "ff-jpg").glob("*.JPG")):
        by.setdefault(camera_label(p), []).append(p)
    return by


def fingerprint(data: Path, cache: Path, camera: str, role: str) -> np.ndarray:
    """Full-frame K of ``camera`` from all its flat fields, the 1st/3rd/… (``attack``: what the
    anonymizer gets) or the 2nd/4th/… (``detector``: the analyst's reference)."""
    from dippas_core.fingerprint import Fingerprint, estimate_fingerprint

    path = cache / f"{camera}_{role}.npz"
    if not path.is_file():
        flats = _cameras(data)[camera]
        chosen = {"all": flats, "attack": flats[0::2], "detector": flats[1::2]}[role]
        cache.mkdir(parents=True, exist_ok=True)
        estimate_fingerprint(chosen, camera=camera).save(path)
    return np.asarray(Fingerprint.load(path).K, np.float32)


def _at_centre_offset(K: np.ndarray, photo_shape: tuple[int, int], top: int, left: int,
                      size: int) -> np.ndarray | None:
    """``K`` at the place of a crop, relative to the sensor centre (another camera's sensor may
    differ in size); ``None`` when it does not fit."""
    dy = top - (photo_shape[0] - size) // 2
    dx = left - (photo_shape[1] - size) // 2
    y, x = (K.shape[0] - size) // 2 + dy, (K.shape[1] - size) // 2 + dx
    if y < 0 or x < 0 or y + size > K.shape[0] or x + size > K.shape[1]:
        return None
    return K[y : y + size, x : x + size]


def crops_of(data: Path, names: str) -> list[tuple[str, str, int, int, int]]:
    """(crop id, photo file, top, left, size) of the named sets."""
    from dippas_core.evaluation import EvalConfig
    from dippas_core.photo_sets import list_images, select_photos

    photos = list_images(data / "nat-jpg")
    test = select_photos(photos, EvalConfig.preset("cpu").photos_per_camera)
    held = [p for p in photos if p not in test]
    out = []
    for name in names.split(","):
        if name == "demo":
            out.append(("demo", "demo", 0, 0, 64))
            continue
        if name == "special":
            spec = json.loads(SPECIAL_FILE.read_text()) if SPECIAL_FILE.is_file() else SPECIAL
            out += [(cid, f, t, l, s) for cid, (f, t, l, s) in spec.items()]
            continue
        size = int(name[-3:])
        chosen = test if name.startswith("test") else held
        for p in chosen:
            from PIL import Image

            with Image.open(p) as im:
                w, h = im.size
            out.append((f"{p.stem}@{size}", p.name, (h - size) // 2, (w - size) // 2, size))
    return out


def load_crop(data: Path, fp_dir: Path, crop: tuple) -> dict[str, Any]:
    """The crop's pixels, the anonymizer's K and the detector's K of every camera there."""
    from dippas_core.evaluation import camera_label
    from dippas_core.io import read_image

    cid, fname, top, left, size = crop
    if fname == "demo":
        from dippas_core.io import center_crop
        from dippas_core.sample import sample_data

        photo, fp = sample_data()
        K = np.asarray(fp.center_crop(size).K, np.float32)
        return {"photo": np.array(center_crop(photo, size)), "camera": fp.camera,
                "attack": K, "detector": {fp.camera: K}, "all": K}
    img = read_image(data / "nat-jpg" / fname)
    cam = camera_label(fname)
    photo = np.array(img[top : top + size, left : left + size])
    det = {}
    for other in _cameras(data):
        Kd = _at_centre_offset(fingerprint(data, fp_dir, other, "detector"), img.shape[:2],
                               top, left, size)
        if Kd is not None:
            det[other] = np.array(Kd)
    own = lambda role: np.array(fingerprint(data, fp_dir, cam, role)[top : top + size,  # noqa: E731
                                                                         left : left + size])
    return {"photo": photo, "camera": cam, "attack": own("attack"), "detector": det,
            "all": own("all")}


def trace(image: np.ndarray, crop: dict[str, Any]) -> dict[str, float]:
    """NCC/PCE with the true camera (detector half and all ten) and the others' mean |NCC|."""
    from dippas_core.attribution import attribute
    from dippas_core.residual import residual

    img = np.asarray(image, np.float32)
    w = residual(img)
    true = attribute(img, crop["detector"][crop["camera"]], residual=w)
    full = attribute(img, crop["all"], residual=w, pce=False)
    wrong = [attribute(img, K, residual=w, pce=False).ncc
             for cam, K in crop["detector"].items() if cam != crop["camera"]]
    return {"ncc": float(true.ncc), "pce": float(true.pce), "ncc_all": float(full.ncc),
            "wrong_mean_abs": float(np.mean(np.abs(wrong))) if wrong else float("nan")}


def run_one(crop: dict[str, Any], preset: str, changes: dict[str, Any], seed: int,
            run_dir: Path | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    from dippas_core.config import AnonymizeConfig
    from dippas_core.fidelity import fidelity
    from dippas_core.pipeline import anonymize

    config = AnonymizeConfig.preset(preset, seed=seed, **changes)
    t0 = time.perf_counter()
    result = anonymize(crop["photo"], crop["attack"], config, run_dir=run_dir, force=True)
    wall = time.perf_counter() - t0
    rep = result.report
    inv = rep["inversion"]
    tiles = rep.get("tiles", [])
    boxes = [(t["y"], t["x"], t["h"], t["w"]) for t in tiles] if len(tiles) > 1 else None
    fid = fidelity(crop["photo"], result.image, block=int(config.assembly.B), tiles=boxes)
    return result.image, {
        "block": int(config.assembly.B),
        "tiles": boxes,
        "wall_s": wall,
        "iterations": inv["n_iterations"],
        "n_snapshots": inv["n_snapshots"],
        "stop_reason": inv["stop_reason"],
        "best_psnr": inv["best_psnr"],
        "below_tau": bool(rep.get("below_tau")),
        "fidelity": fid.to_dict(),
        "failures": fid.failures(),
    }


def reassemble(args: argparse.Namespace) -> int:
    """Every kept run of ``--name`` assembled again with ``--reassemble`` B, L, tau, rule."""
    from dippas_core.assembly import AssemblyParams, assemble
    from dippas_core.fidelity import fidelity
    from dippas_core.io import write_image

    b, l_, tau, rule = args.reassemble.split(",")
    params = AssemblyParams(int(b), int(l_), None if tau == "none" else float(tau), rule)
    name = args.name or args.preset
    target = args.out / f"{name}+{args.reassemble}"
    crops = {c[0]: c for c in crops_of(args.data, args.set)}
    for run_dir in sorted((args.out / name).glob("*/run")):
        cid = run_dir.parent.name
        if cid not in crops or (target / cid / "scores.json").is_file():
            continue
        scores = json.loads((run_dir.parent / "scores.json").read_text())
        data = load_crop(args.data, args.fingerprints, crops[cid])
        t0 = time.perf_counter()
        asm = assemble(run_dir, params)
        scores["wall_s"] = scores["wall_s"] + time.perf_counter() - t0
        fid = fidelity(data["photo"], asm.image, block=params.B)
        scores.update(fidelity=fid.to_dict(), failures=fid.failures(), after=trace(asm.image, data),
                      assembly=asm.params, block=params.B)
        (target / cid).mkdir(parents=True, exist_ok=True)
        write_image(target / cid / "anonymized.png", asm.image)
        write_image(target / cid / "original.png", data["photo"])
        (target / cid / "scores.json").write_text(json.dumps(scores, indent=1))
        print(f"{target.name} {cid}: PSNR {fid.psnr:.2f} max {fid.max_abs:.0f} shift "
              f"{fid.colour_shift:.2f} seam {fid.seam_ratio} NCC {scores['after']['ncc']:+.4f}",
              flush=True)
    return 0


def _claimed(marker: Path) -> bool:
    """Another live process works on this crop (its pid in the marker)."""
    try:
        os.kill(int(marker.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


COLUMNS = ("PSNR", "SSIM", "max|Δ|", ">20 %", "shift", "seam", "checker", "NCC before",
           "NCC after", "wrong", "PCE after", "its", "s")


def table(out: Path, names: list[str]) -> str:
    """One markdown row per finished crop; the fidelity measured again from the saved PNGs (so
    that a changed measure applies to older outputs too)."""
    from dippas_core.fidelity import fidelity
    from dippas_core.io import read_image

    rows = []
    for name in names:
        for f in sorted((out / name).glob("*/scores.json")):
            s = json.loads(f.read_text())
            fd = fidelity(read_image(f.parent / "original.png"),
                          read_image(f.parent / "anonymized.png"),
                          block=s.get("block", 64), tiles=s.get("tiles")).to_dict()
            seam = "—" if fd["seam_ratio"] is None else f"{fd['seam_ratio']:.2f}"
            rows.append(
                f"| {name} | {f.parent.name} | {fd['psnr']:.2f} | {fd['ssim']:.3f} | "
                f"{fd['max_abs']:.0f} | {100 * fd['share_off']:.3f} | {fd['colour_shift']:.2f} | "
                f"{seam} | {fd['checkerboard']:.2f} | {s['before']['ncc']:+.4f} | "
                f"{s['after']['ncc']:+.4f} | {s['after']['wrong_mean_abs']:.4f} | "
                f"{s['after']['pce']:.1f} | {s['iterations']} | {s['wall_s']:.0f} |"
            )
    head = "| setting | crop | " + " | ".join(COLUMNS) + " |"
    return "\n".join([head, "|" + "---|" * (len(COLUMNS) + 2), *rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--fingerprints", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", default="test128")
    p.add_argument("--name", default=None, help="folder of this setting (default: the preset)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--change", action="append", default=[], metavar="FIELD=JSON",
                   help="a field of the preset to change (value as JSON), repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--order", choices=("forward", "reverse"), default="forward")
    p.add_argument("--only", default=None, help="comma list of crop ids to run")
    p.add_argument("--table", default=None, help="print the table of these comma-listed names")
    p.add_argument("--keep-runs", action="store_true",
                   help="keep each crop's run folder (OUT/NAME/CROP/run) for --reassemble")
    p.add_argument("--reassemble", default=None, metavar="B,L,TAU,RULE",
                   help="re-assemble the kept runs of --name with these assembly parameters "
                   "into NAME+B,L,TAU,RULE (no inversion)")
    args = p.parse_args(argv)
    if args.table:
        print(table(args.out, args.table.split(",")))
        return 0
    if args.reassemble:
        return reassemble(args)
    changes = {}
    for item in args.change:
        key, _, value = item.partition("=")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    name = args.name or args.preset
    crops = crops_of(args.data, args.set)
    if args.only:
        keep = set(args.only.split(","))
        crops = [c for c in crops if c[0] in keep]
    if args.order == "reverse":
        crops = crops[::-1]
    from dippas_core.io import write_image

    for crop in crops:
        folder = args.out / name / crop[0]
        if (folder / "scores.json").is_file() or _claimed(folder / "running"):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "running").write_text(str(os.getpid()))
        data = load_crop(args.data, args.fingerprints, crop)
        image, scores = run_one(data, args.preset, changes, args.seed,
                                folder / "run" if args.keep_runs else None)
        scores.update(
            crop=list(crop), preset=args.preset, changes=changes, seed=args.seed,
            before=trace(data["photo"], data), after=trace(image, data),
        )
        write_image(folder / "anonymized.png", image)
        write_image(folder / "original.png", data["photo"])
        (folder / "scores.json").write_text(json.dumps(scores, indent=1))
        (folder / "running").unlink()
        fd = scores["fidelity"]
        print(f"{name} {crop[0]}: PSNR {fd['psnr']:.2f} max {fd['max_abs']:.0f} shift "
              f"{fd['colour_shift']:.2f} seam {fd['seam_ratio']} NCC "
              f"{scores['before']['ncc']:+.4f} -> {scores['after']['ncc']:+.4f} (wrong "
              f"{scores['after']['wrong_mean_abs']:.4f}) {scores['iterations']} its "
              f"{scores['wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
