"""Many small scans: how full the device batches get, and the throughput, for --jobs 1, 2, 4.

A folder of N small 8-bit RGB JPEG scans (photo-like content with scratches, like a box of prints scanned at
low resolution) is restored by the real CLI with the shipped weights, once per --jobs value, each run into a
fresh output folder; the report's `batches` gives device calls, tiles per call and the calls that held tiles
of more than one photo (cross-image batching), `wall_seconds` the time.

    python benchmarks/bench_small_files.py --count 24 --size 640x480 --jobs 1 2 4 --batch 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def make_scans(folder: Path, count: int, width: int, height: int, seed: int = 0) -> None:
    """Write `count` JPEGs of smooth content, grain and a few bright scratches."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        fx, fy = rng.uniform(2, 8, size=2)
        base = 0.45 + 0.25 * np.sin(xx / width * fx * np.pi + i) * np.cos(yy / height * fy * np.pi)
        img = base[..., None] * np.array([1.0, 0.93, 0.8], dtype=np.float32)
        img = img + rng.normal(0, 0.02, size=img.shape).astype(np.float32)
        for x in rng.integers(0, width, size=3):
            img[:, x: x + 2] = 0.97
        Image.fromarray(np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"scan{i:03d}.jpg",
                                                                                  quality=92)


def run(scans: Path, out: Path, jobs: int, batch: int, tile: int) -> dict:
    cmd = [sys.executable, "-m", "oldphoto", "restore", str(scans), "--out", str(out), "--jobs", str(jobs),
           "--batch-size", str(batch), "--tile", str(tile), "--device", "cpu", "--quiet"]
    subprocess.run(cmd, check=True)
    report = json.loads((out / "report.json").read_text())
    return {"jobs": jobs, "wall_s": round(report["wall_seconds"], 1),
            "mp_per_s": report["totals"]["megapixels_per_second"], **report["batches"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of each scan")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="oldphoto-small-") as tmp:
        scans = Path(tmp) / "scans"
        make_scans(scans, args.count, width, height)
        rows = [run(scans, Path(tmp) / f"out{j}", j, args.batch, args.tile) for j in args.jobs]
    print(f"{args.count} scans of {width}x{height}, tile {args.tile}, batch {args.batch}")
    print("| --jobs | wall s | MP/s | device calls | tiles per call | calls shared by photos |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['jobs']} | {r['wall_s']} | {r['mp_per_s']} | {r['calls']} | {r['tiles_per_call']} | "
              f"{r['shared_calls']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
