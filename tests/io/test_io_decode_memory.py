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
from oldphoto.io import buffers, jp2 as jp2_module, raster_read, reader

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
    no_cgroup = tmp_path / "root"  # no /proc/self/cgroup there: this machine's cgroup limit, if any, not read
    assert buffers.available_memory(info, no_cgroup) == 2_500_000 * 1024
    info.write_text("MemTotal:       16000000 kB\nMemFree:          100000 kB\n")  # a kernel older than 3.14
    assert buffers.available_memory(info, no_cgroup) is None
    assert buffers.available_memory(tmp_path / "missing", no_cgroup) is None  # not Linux: nothing can be said
    assert buffers.available_memory(tmp_path, no_cgroup) is None  # unreadable (a folder here): no scan refused


def _cgroup(root, own: str, folder: str, files: dict[str, str]) -> None:
    """A fake /proc/self/cgroup under `root` naming `own`, and the cgroup files `files` in `folder` under it."""
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    (root / "proc/self/cgroup").write_text(own)
    (root / folder).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / folder / name).write_text(text)


def _meminfo(tmp_path, available_kb: int):
    info = tmp_path / "meminfo"
    info.write_text(f"MemTotal: 64000000 kB\nMemAvailable: {available_kb} kB\nSwapFree: 0 kB\n")
    return info


def test_a_cgroup_v2_limit_bounds_the_memory_available(tmp_path):
    info, root = _meminfo(tmp_path, 32_000_000), tmp_path / "root"
    stat = "anon 100\nfile 900\nactive_file 400\ninactive_file 500\n"
    _cgroup(root, "0::/user.slice/job\n", "sys/fs/cgroup/user.slice/job",
            {"memory.max": "4000\n", "memory.current": "3000\n", "memory.stat": stat})
    assert buffers.available_memory(info, root) == 4000 - 3000 + 500  # page cache is reclaimed before an OOM kill
    _cgroup(root, "0::/user.slice/job\n", "sys/fs/cgroup/user.slice", {"memory.max": "3000\n",
                                                                          "memory.current": "2900\n",
                                                                          "memory.stat": stat})
    assert buffers.available_memory(info, root) == 3000 - 2900 + 500  # a tighter limit above it counts too
    for name, text in (("memory.max", "max\n"), ("memory.current", "oops\n"), ("memory.stat", "anon 1\n")):
        kept = (root / "sys/fs/cgroup/user.slice" / name).read_text()
        (root / "sys/fs/cgroup/user.slice" / name).write_text(text)
        assert buffers.available_memory(info, root) == 1500  # no limit, or unparsable: no bound from that one
        (root / "sys/fs/cgroup/user.slice" / name).write_text(kept)
    assert buffers.available_memory(info, root) == 600
    for folder in ("user.slice", "user.slice/job"):
        (root / "sys/fs/cgroup" / folder / "memory.max").write_text("max\n")
    assert buffers.available_memory(info, root) == 32_000_000 * 1024  # no limit anywhere: /proc/meminfo's
    assert buffers.available_memory(tmp_path / "missing", root) is None


def test_a_cgroup_v1_limit_bounds_the_memory_available(tmp_path):
    info, root = _meminfo(tmp_path, 32_000_000), tmp_path / "root"
    own = "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n"
    stat = "cache 800\ninactive_file 100\ntotal_inactive_file 700\n"
    # in a container the hierarchy's root is its own cgroup: /docker/abc is not there
    _cgroup(root, own, "sys/fs/cgroup/memory", {"memory.limit_in_bytes": "8000\n",
                                                "memory.usage_in_bytes": "5000\n", "memory.stat": stat})
    assert buffers.available_memory(info, root) == 8000 - 5000 + 700
    (root / "sys/fs/cgroup/memory/memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")  # unlimited
    assert buffers.available_memory(info, root) == 32_000_000 * 1024
    _cgroup(root, own, "sys/fs/cgroup/memory/docker/abc", {"memory.limit_in_bytes": "6000\n",
                                                           "memory.usage_in_bytes": "1000\n",
                                                           "memory.stat": "inactive_file 10\n"})
    assert buffers.available_memory(info, root) == 6000 - 1000 + 10  # the process's own cgroup, seen from the host
    (root / "sys/fs/cgroup/memory/docker/abc/memory.stat").unlink()
    assert buffers.available_memory(info, root) == 32_000_000 * 1024  # a file missing: no bound, nothing refused


def test_without_proc_self_cgroup_or_its_files_nothing_is_bounded(tmp_path):
    info, root = _meminfo(tmp_path, 1000), tmp_path / "root"
    assert buffers.available_memory(info, root) == 1000 * 1024
    _cgroup(root, "garbage\n4:memory:/x\n0::/y\n", "sys/fs/cgroup", {})
    assert buffers.available_memory(info, root) == 1000 * 1024
    (root / "sys/fs/cgroup/memory.max").mkdir()  # unreadable (a folder)
    assert buffers.available_memory(info, root) == 1000 * 1024
    _cgroup(root, "0::/\n", "sys/fs/cgroup", {"memory.current": "1\n", "memory.stat": "inactive_file 0\n"})
    assert buffers.available_memory(tmp_path / "missing", root) is None


def test_on_this_machine_the_cgroup_changes_nothing_unless_it_sets_a_limit():
    """The default root is "/": where this process's cgroup sets no memory limit (this machine's), the answer is
    /proc/meminfo's alone."""
    from pathlib import Path

    bound = buffers._cgroup_available(Path("/"))
    alone = buffers.available_memory(root="/nonexistent-root")
    both = buffers.available_memory()
    if bound is None:
        assert (both is None) == (alone is None)
        if both is not None:  # MemAvailable moves between the reads: the same within 64 MiB
            assert abs(both - alone) < 64 << 20
    else:
        assert both <= bound


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
    need = 40 * 50 * 4 + _RGB.size + 3 * 40 * 50 * 4  # Pillow keeps RGB in 4 bytes a pixel, our copy, a band's scratch
    assert e.value.reason == (f"needs about {need / 1024:.1f} KiB of memory to decode (Pillow holds the whole "
                              "decoded JPEG in RAM); 1000 bytes available now: not read")


def test_with_memory_enough_or_unknown_scans_are_read(tmp_path, monkeypatch):
    jp2_path, jpg_path = tmp_path / "a.jp2", tmp_path / "a.jpg"
    jp2_path.write_bytes(jp2(_RGB))
    jpg_path.write_bytes(_jpeg(_RGB))
    need = 4 * _RGB.size + len(jp2_path.read_bytes()) + _RGB.size
    _available(monkeypatch, need)  # exactly what it needs: no margin is asked for
    assert np.array_equal(reader.read(jp2_path, 400_000_000).pixels, _RGB)
    _available(monkeypatch, 40 * 50 * 4 + _RGB.size + 3 * 40 * 50 * 4)
    assert reader.read(jpg_path, 400_000_000).pixels.shape == (40, 50, 3)
    monkeypatch.undo()
    monkeypatch.setattr(buffers, "MEMINFO", str(tmp_path / "no-meminfo"))  # macOS: not checked
    assert buffers.available_memory(root=tmp_path) is None
    assert np.array_equal(reader.read(jp2_path, 400_000_000).pixels, _RGB)


def _progressive_jpeg(pixels: np.ndarray, subsampling: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90, progressive=True, subsampling=subsampling)
    return buf.getvalue()


@pytest.mark.parametrize("subsampling, blocks", [(0, 25 * 20 * 3), (2, 13 * 10 * 6)])
def test_a_progressive_jpeg_counts_its_dct_coefficients(tmp_path, subsampling, blocks):
    """libjpeg holds a progressive JPEG's coefficients whole (2 bytes each, 64 a block, padded to whole MCUs) while
    Pillow decodes it; a big one (here 4:4:4: 6 bytes a pixel) needs more than our copies of it."""
    pixels = np.repeat(np.repeat(_RGB, 4, 0), 4, 1)  # 160 x 200: 4:4:4 25 x 20 blocks each; 4:2:0 13 x 10 MCUs
    path = tmp_path / "p.jpg"
    path.write_bytes(_progressive_jpeg(pixels, subsampling))
    area = 160 * 200
    with reader._opened(path) as (fh, fmt):
        pl = reader._plan(fh, fmt, path, None)
        assert raster_read._coefficient_bytes(pl.image) == blocks * 128
        ours = 3 * area + 3 * area * 4  # our copy, a band's scratch (the whole image here)
        assert pl.decoder_memory()[0] == 4 * area + max(ours, blocks * 128)
    assert reader.read(path, 400_000_000).pixels.shape == (160, 200, 3)


def test_a_webp_counts_libwebps_canvas_and_the_frames_bytes(tmp_path):
    path = tmp_path / "a.webp"
    Image.fromarray(_RGB).save(path, "WEBP", quality=90)
    with reader._opened(path) as (fh, fmt):
        pl = reader._plan(fh, fmt, path, None)
        area = 40 * 50
        assert pl.decoder_memory()[0] == 4 * area + 3 * area + 3 * area * 4 + 8 * area


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


def test_probe_and_read_metadata_decode_no_pixels_and_are_never_refused_for_memory(tmp_path, monkeypatch):
    jp2_path, jpg_path, webp_path = tmp_path / "a.jp2", tmp_path / "a.jpg", tmp_path / "a.webp"
    jp2_path.write_bytes(jp2(_RGB))
    jpg_path.write_bytes(_progressive_jpeg(_RGB, 0))
    Image.fromarray(_RGB).save(webp_path, "WEBP")
    _available(monkeypatch, 1)
    _no_decoding(monkeypatch)
    for path in (jp2_path, jpg_path, webp_path):
        assert reader.probe(path).width == 50
        assert reader.read_metadata(path)[0].height == 40
        with pytest.raises(ImageError, match="of memory to decode"):
            reader.read(path, 400_000_000)
