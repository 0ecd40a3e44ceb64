"""A scan truncated in place while a run reads it (`cp new.tif scans/a.tif`, software saving over the same name):
the run used to map uncompressed TIFF pages and a 16-bit PNG's chunks from the source, and touching a page past the
new end raised SIGBUS, killing the whole batch (exit 135, no report, lock and temp files left). Sources are read now,
never mapped: that file fails with one line, the others are restored. In a subprocess, so that a SIGBUS cannot kill
pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from oldphoto.errors import ImageError
from oldphoto.io import png, read, tiff_read
from oldphoto.lock import LOCK_NAME
from oldphoto.state import STATE_NAME

# Runs `oldphoto restore ARGS...` with stand-in models; the scan named cut.* is truncated to half its size in place
# (same inode, as cp does) at the step named by argv[1]: once the TIFF page or the PNG chunks libpng decodes were
# mapped (the old reader: touching them then raised SIGBUS) or read (the file then fails as changed while it was
# read), or before Pillow reads an 8-bit PNG's pixels.
_DRIVER = r"""
import os, sys
from pathlib import Path

from oldphoto import pipeline
from oldphoto.cli import main
from oldphoto.io import png, raster_read, tiff_read
from restore_samples import IdentityRestorer, WhiteDetector


def cut_first(owner, name, big):  # owner.name cuts the scan to half its size, in place, when called on it
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        if big(*args) and os.stat(cut_path).st_size == size:  # the other scan is small
            os.truncate(cut_path, size // 2)
        return real(*args, **kwargs)

    setattr(owner, name, wrapped)


step, scans = sys.argv[1], sys.argv[2]
cut_path = next(str(p) for p in Path(scans).iterdir() if p.name.startswith("cut"))
size = os.stat(cut_path).st_size
if step == "tiff":  # the page mapped (the old reader), or read
    cut_first(tiff_read, "_split", lambda arr, alpha: arr.shape[0] >= 1000)
elif step == "png16":  # the chunks mapped (the old reader) or read, and handed to libpng
    cut_first(png, "decode16", lambda data, header, trns, out: header.height >= 1000)
else:  # an 8-bit PNG, before Pillow reads its pixels
    cut_first(raster_read.RasterPlan, "_decode_pillow", lambda plan, *args: plan.height >= 1000)
pipeline.load_models = lambda cfg, device: pipeline.Models(detector=WhiteDetector(), restorer=IdentityRestorer())
sys.argv = ["oldphoto", "restore", scans, *sys.argv[3:]]
main()
"""


def _cut_scan(path: Path, step: str) -> None:
    """About 6 MB of noise (so that the PNGs stay large once compressed): many pages past the half the run keeps."""
    rng = np.random.default_rng(7)
    if step == "tiff":
        tifffile.imwrite(path, rng.integers(0, 65535, (1000, 1000, 3), dtype=np.uint16), photometric="rgb")
    elif step == "png16":
        with open(path, "wb") as f:
            png.write_png(f, rng.integers(0, 65535, (1000, 1000, 3), dtype=np.uint16), None, [], level=1)
    else:
        Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8), "RGB").save(path, compress_level=1)


@pytest.mark.parametrize("step,name", [("tiff", "cut.tif"), ("png16", "cut.png"), ("png8", "cut.png")])
def test_a_scan_truncated_in_place_during_the_run_fails_alone(tmp_path, step, name):
    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    tifffile.imwrite(root / "a_good.tif", np.full((20, 30, 3), 1000, np.uint16), photometric="rgb")
    _cut_scan(root / name, step)
    size = (root / name).stat().st_size
    tests = Path(__file__).resolve().parents[1]
    paths = [str(tests.parent), str(tests), os.environ.get("PYTHONPATH", "")]  # oldphoto, restore_samples
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, "-c", _DRIVER, step, str(root), "--out", str(out), "--jobs", "1",
                           "--tile", "128", "--overlap", "16", "--quiet"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode not in (-signal.SIGBUS, 128 + signal.SIGBUS), f"killed by SIGBUS: {done.stderr}"
    assert (root / name).stat().st_size == size // 2  # it was cut, during the run
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and errors[0].startswith(f"error: {root / name}: "), done.stderr
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(["a_good.tif", "report.json", STATE_NAME])
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------ in process
# A file cut short between the check of its size and the read of its pixels says so, rather than being decoded from
# what is left (or from zeros).

def test_an_uncompressed_tiff_cut_short_before_its_pixels_are_read_says_so(tmp_path, monkeypatch):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.arange(300 * 200 * 3, dtype=np.uint16).reshape(300, 200, 3), photometric="rgb")
    real = tiff_read._check_data_in_file

    def check_then_cut(page, size):
        real(page, size)
        os.truncate(path, size // 2)

    monkeypatch.setattr(tiff_read, "_check_data_in_file", check_then_cut)
    with pytest.raises(ImageError, match=r": cannot read TIFF: truncated: the file ends at byte \d+, its pixel data "
                                         r"at byte \d+ \(changed while it was read\)$"):
        read(path, 10**6)


def test_a_16_bit_png_cut_short_before_its_chunks_are_read_says_so(tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    with open(path, "wb") as f:
        png.write_png(f, np.random.default_rng(3).integers(0, 65535, (200, 300, 3), dtype=np.uint16), None, [])
    size = path.stat().st_size
    real = png.allocate

    def cut_then_allocate(*args, **kwargs):  # the file's size was checked: what comes next is the read
        os.truncate(path, size // 2)
        return real(*args, **kwargs)

    monkeypatch.setattr(png, "allocate", cut_then_allocate)
    with pytest.raises(ImageError, match=r": cannot read PNG: truncated: the file ends at byte \d+, its chunks end "
                                         r"at byte \d+ \(changed while it was read\)$"):
        read(path, 10**6)
