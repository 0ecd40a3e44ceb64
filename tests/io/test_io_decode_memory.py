"""A scan whose decoder would hold more RAM than the machine can give now is refused from its header, before it is
decoded: the file fails alone instead of the OOM killer ending the run."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from jp2_samples import jp2, top_boxes
from PIL import Image, ImageFile

from oldphoto.errors import ImageError
from oldphoto.io import buffers, jp2 as jp2_module, reader

_RGB = np.random.default_rng(7).integers(0, 250, (40, 50, 3), dtype=np.uint8)


def _available(monkeypatch, n: int | None) -> None:
    monkeypatch.setattr(buffers, "available_memory", lambda meminfo=None: n)


def _no_decoding(monkeypatch) -> None:
    """Any pixel decoded by OpenJPEG or Pillow fails the test."""
    def called(*args, **kwargs):
        raise AssertionError("the decoder was called")

    monkeypatch.setattr(jp2_module.imagecodecs, "jpeg2k_decode", called)
    monkeypatch.setattr(ImageFile.ImageFile, "load", called)


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _codestream_bytes(data: bytes) -> int:
    return next(len(c) for k, c in top_boxes(data) if k == b"jp2c")


def test_meminfo_gives_available_memory_and_swap(tmp_path):
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       16000000 kB\nMemFree:          100000 kB\nMemAvailable:    2000000 kB\n"
                    "SwapTotal:       1000000 kB\nSwapFree:         500000 kB\n")
    assert buffers.available_memory(info) == 2_500_000 * 1024
    info.write_text("MemTotal:       16000000 kB\nMemFree:          100000 kB\n")  # a kernel older than 3.14
    assert buffers.available_memory(info) is None
    assert buffers.available_memory(tmp_path / "missing") is None  # not Linux: nothing can be said
    assert buffers.available_memory(tmp_path) is None  # unreadable (a folder here): no scan refused for it


def test_a_jp2_whose_planes_do_not_fit_is_refused_before_decoding(tmp_path, monkeypatch):
    data = jp2(_RGB)
    path = tmp_path / "big.jp2"
    path.write_bytes(data)
    _available(monkeypatch, 1000)
    _no_decoding(monkeypatch)
    with pytest.raises(ImageError) as e:
        reader.read(path, 400_000_000)
    need = 4 * _RGB.size + _codestream_bytes(data) + _RGB.size  # planes, codestream, the output buffer in RAM
    assert e.value.reason == (f"needs about {need / 1024:.1f} KiB of memory to decode (JPEG 2000 decoding holds "
                              "32-bit planes in RAM); 1000 bytes available now: not read")
    assert str(path) in str(e.value)


def test_a_jp2_output_buffer_on_disk_is_not_counted(tmp_path, monkeypatch):
    data = jp2(_RGB)
    path = tmp_path / "big.jp2"
    path.write_bytes(data)
    monkeypatch.setattr(buffers, "DISK_THRESHOLD", 1000)  # the output buffer is memory-mapped
    _available(monkeypatch, 1000)
    with pytest.raises(ImageError, match=rf"needs about {(4 * _RGB.size + _codestream_bytes(data)) / 1024:.1f} KiB"):
        reader.read(path, 400_000_000)


def test_a_jpeg_whose_decoded_image_does_not_fit_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    path.write_bytes(_jpeg(_RGB))
    _available(monkeypatch, 1000)
    _no_decoding(monkeypatch)
    with pytest.raises(ImageError) as e:
        reader.read(path, 400_000_000)
    need = 40 * 50 * 4 + _RGB.size  # Pillow keeps RGB in 4 bytes a pixel, then our copy
    assert e.value.reason == (f"needs about {need / 1024:.1f} KiB of memory to decode (Pillow holds the whole "
                              "decoded JPEG in RAM); 1000 bytes available now: not read")


def test_with_memory_enough_or_unknown_scans_are_read(tmp_path, monkeypatch):
    jp2_path, jpg_path = tmp_path / "a.jp2", tmp_path / "a.jpg"
    jp2_path.write_bytes(jp2(_RGB))
    jpg_path.write_bytes(_jpeg(_RGB))
    need = 4 * _RGB.size + len(jp2_path.read_bytes()) + _RGB.size
    _available(monkeypatch, need)  # exactly what it needs: no margin is asked for
    assert np.array_equal(reader.read(jp2_path, 400_000_000).pixels, _RGB)
    assert reader.read(jpg_path, 400_000_000).pixels.shape == (40, 50, 3)
    monkeypatch.undo()
    monkeypatch.setattr(buffers, "MEMINFO", str(tmp_path / "no-meminfo"))  # macOS: not checked
    assert buffers.available_memory() is None
    assert np.array_equal(reader.read(jp2_path, 400_000_000).pixels, _RGB)


def test_tiff_and_16_bit_png_decode_into_disk_buffers_and_are_not_checked(tmp_path, monkeypatch):
    tif, png = tmp_path / "a.tif", tmp_path / "a.png"
    tifffile.imwrite(tif, _RGB)
    Image.fromarray(np.full((30, 20), 40000, np.uint16)).save(png)
    _available(monkeypatch, 1)
    assert np.array_equal(reader.read(tif, 400_000_000).pixels, _RGB)
    assert reader.read(png, 400_000_000).pixels.dtype == np.uint16


def test_in_a_run_the_scans_that_do_not_fit_fail_alone_and_the_next_run_reads_them(tmp_path, monkeypatch):
    from restore_samples import put, report_of, run, stand_in_models

    stand_in_models(monkeypatch)
    root, out = tmp_path / "scans", tmp_path / "out"
    put(root / "a.jp2", jp2(_RGB))
    put(root / "b.jpg", _jpeg(_RGB))
    tifffile.imwrite(root / "c.tif", _RGB)
    before = {p: p.read_bytes() for p in root.iterdir()}
    opts = ("--out", out, "--tile", 128, "--overlap", 16, "--device", "cpu", "--jobs", 1, "-q")
    with monkeypatch.context() as m:
        _available(m, 1000)
        _no_decoding(m)
        r = run("restore", root, *opts)
    assert r.exit_code == 1, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    for line, name, why in zip(lines, ("a.jp2", "b.jpg"), ("JPEG 2000 decoding", "Pillow holds")):
        assert line.startswith(f"error: {root / name}: needs about "), line
        assert why in line, line
        assert line.endswith("; 1000 bytes available now: not read"), line
    files = {f["relative"]: f["status"] for f in report_of(out)["files"]}
    assert files == {"a.jp2": "failed", "b.jpg": "failed", "c.tif": "done"}
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".tif", ".jpg")) == ["c.tif"]
    assert {p: p.read_bytes() for p in root.iterdir()} == before
    r = run("restore", root, *opts)  # memory enough now: nothing was recorded of the failures
    assert r.exit_code == 0, r.output
    files = {f["relative"]: f["status"] for f in report_of(out)["files"]}
    assert files == {"a.jp2": "done", "b.jpg": "done", "c.tif": "skipped"}
