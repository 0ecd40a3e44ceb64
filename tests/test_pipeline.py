"""The engine end to end on real files, with small stand-in stages (identity, nearest upscaling, a tiny random
conv net, a brightness "detector", a constant colorizer) so results can be predicted exactly."""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import tempfile
import tracemalloc
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import piexif
import pytest
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image

from oldphoto import pipeline
from oldphoto.config import RestoreConfig, TileConfig
from oldphoto.errors import ImageError, OldPhotoError
from oldphoto.io import buffers, read, read_provenance
from oldphoto.lock import FolderLost, OutputLock
from oldphoto.ops.color import rgb_to_lab
from oldphoto.ops.masks import dilate
from oldphoto.ops.tiling import merge, split
from oldphoto.passes import even_tone
from oldphoto.pipeline import Event, Models, output_paths, process_file, resolve_device
from oldphoto.registry import WeightsEntry

# ------------------------------------------------------------------------------------------ stand-in stages


class Identity:
    def __call__(self, x, mask):
        return x.clone()


class Nearest:
    def __init__(self, scale):
        self.scale = scale

    def __call__(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class BrightDetector:
    """Probability 1 where the red channel is above 0.9: a per-pixel rule, so the merged mask is exact."""

    threshold = 0.5

    def __init__(self):
        self.batches = []

    def __call__(self, x):
        self.batches.append(x.shape[0])
        return (x[:, :1] > 0.9).float()


class ConvNet:
    """A tiny random 3x3 conv net: spatial context, so tiles really differ at their borders."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(8, 3, 3, 3, generator=g) * 0.3
        self.w2 = torch.randn(3, 8, 3, 3, generator=g) * 0.3

    def __call__(self, x, mask):
        h = torch.tanh(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.w1))
        return (x + 0.2 * F.conv2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), self.w2)).clamp(0, 1)


class ConstantColour:
    work_size = 32

    def __init__(self, a=25.0, b=-15.0):
        self.ab = (a, b)
        self.seen = None

    def __call__(self, lightness):
        self.seen = tuple(lightness.shape)
        n, _, h, w = lightness.shape
        return torch.tensor(self.ab).view(1, 2, 1, 1).expand(n, 2, h, w).clone()


class Boom:
    def __call__(self, x, mask):
        raise RuntimeError("stand-in stage failed on purpose")


class OutOfMemoryAbove:
    """Identity that raises the CUDA out-of-memory error for batches above `batch` or tiles above `tile`."""

    def __init__(self, batch=99, tile=9999):
        self.batch, self.tile, self.calls = batch, tile, []

    def __call__(self, x, mask):
        self.calls.append(tuple(x.shape))
        if x.shape[0] > self.batch or x.shape[-1] > self.tile:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return x.clone()


# ------------------------------------------------------------------------------------------ helpers


def cfg(**kw) -> RestoreConfig:
    tile = kw.pop("tile", TileConfig(size=128, overlap=32, batch_size=3))
    return RestoreConfig(device="cpu", tile=tile, **kw)


def random_image(h, w, c, dtype, seed=0) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, size=(h, w, c), dtype=np.int64).astype(dtype)


def write_tiff(path: Path, pixels: np.ndarray) -> Path:
    photometric = "rgb" if pixels.shape[2] == 3 else "minisblack"
    tifffile.imwrite(path, pixels if pixels.shape[2] == 3 else pixels[..., 0], photometric=photometric)
    return path


def write_png(path: Path, pixels: np.ndarray, alpha: np.ndarray | None = None, dpi=None) -> Path:
    if alpha is not None:
        img = Image.fromarray(np.dstack([pixels, alpha]), "RGBA")
    elif pixels.shape[2] == 1:
        img = Image.fromarray(pixels[..., 0], "L")
    else:
        img = Image.fromarray(pixels, "RGB")
    img.save(path, dpi=dpi) if dpi else img.save(path)
    return path


def read_any(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        a = tifffile.imread(path)
    else:
        a = np.asarray(Image.open(path))
    return a if a.ndim == 3 else a[..., None]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------ tests


def test_identity_reproduces_uint16_rgb_exactly(tmp_path):
    img = random_image(203, 301, 3, np.uint16, seed=1)
    src = write_tiff(tmp_path / "scan.tif", img)
    out = process_file(src, tmp_path / "out" / "scan", cfg(), Models(restorer=Identity()))
    assert out.outputs == [tmp_path / "out" / "scan.tif"]
    got = read_any(out.outputs[0])
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, img)
    assert (out.width, out.height) == (301, 203)
    assert out.megapixels == pytest.approx(301 * 203 / 1e6)
    assert out.mask_coverage is None
    assert set(pipeline.STAGE_KEYS) <= set(out.seconds)


@pytest.mark.parametrize("h,w", [(1, 1), (7, 300), (90, 60)])
def test_identity_reproduces_uint8_gray_exactly(tmp_path, h, w):
    img = random_image(h, w, 1, np.uint8, seed=h + w)
    src = write_png(tmp_path / "g.png", img)
    out = process_file(src, tmp_path / "g_out", cfg(), Models(restorer=Identity()))
    got = read_any(out.outputs[0])
    assert got.shape == (h, w, 1) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, img)


def _defect_photo(h=150, w=170, seed=2):
    img = (random_image(h, w, 3, np.uint8, seed) // 2).astype(np.uint8)  # everything below 0.5 ...
    img[40, 10:160, 0] = 255  # ... except a horizontal scratch and a dot that the detector flags
    img[100:103, 80, 0] = 250
    return img


def test_only_mask_writes_mask_and_overlay_without_touching_pixels(tmp_path):
    img = _defect_photo()
    src = write_png(tmp_path / "photo.png", img, dpi=(300, 300))
    before = src.read_bytes()
    det = BrightDetector()
    out = process_file(src, tmp_path / "o" / "photo", cfg(only_mask=True, mask_dilate=1), Models(detector=det))
    mask_path, overlay_path = out.outputs
    assert (mask_path.name, overlay_path.name) == ("photo.mask.png", "photo.overlay.jpg")
    assert src.read_bytes() == before

    with Image.open(mask_path) as m:
        assert m.mode == "L" and m.size == (170, 150)
        mask = np.asarray(m)
    truth = torch.from_numpy(img[..., 0] > 0.9 * 255).float()[None, None]
    want = dilate(truth, 1)[0, 0].numpy() > 0
    np.testing.assert_array_equal(mask == 255, want)
    assert set(np.unique(mask)) == {0, 255}
    assert out.mask_coverage == pytest.approx(100 * want.mean())

    with Image.open(overlay_path) as o:
        assert o.mode == "RGB" and o.size == (170, 150)
        overlay = np.asarray(o).astype(int)
    red, other = overlay[want], overlay[~want]
    assert red[:, 0].mean() > red[:, 1].mean() + 80  # defects tinted red
    assert np.abs(other - img[~want].astype(int)).mean() < 6  # the rest is the photo (JPEG-close)


def test_upscale_with_nearest_standin_is_exact_and_keeps_alpha(tmp_path):
    img = random_image(77, 130, 3, np.uint8, seed=4)
    alpha = random_image(77, 130, 1, np.uint8, seed=5)[..., 0]
    src = write_png(tmp_path / "a.png", img, alpha, dpi=(150, 150))
    out = process_file(src, tmp_path / "a_x2", cfg(upscale=2), Models(restorer=Identity(), upscaler=Nearest(2)))
    with Image.open(out.outputs[0]) as im:
        assert im.mode == "RGBA" and im.size == (260, 154)
        dpi = im.info.get("dpi")
        got = np.asarray(im)
    up = lambda a: a.repeat(2, axis=0).repeat(2, axis=1)  # noqa: E731
    np.testing.assert_array_equal(got[..., :3], up(img))
    np.testing.assert_array_equal(got[..., 3], up(alpha))
    assert dpi is not None and round(dpi[0]) == 300


def test_upscale_keeps_a_pixel_aspect_ratio_as_it_is(tmp_path):
    # unit 1 (none): both axes grow alike, so the values stay valid; they were multiplied like a dpi, while a
    # PNG's pHYs with unit 0 (dropped then) must not be: the source's numbers are kept
    img = random_image(40, 30, 3, np.uint8, seed=4)
    tifffile.imwrite(tmp_path / "a.tif", img, photometric="rgb", resolution=((4, 1), (3, 1)), resolutionunit=1)
    out = process_file(tmp_path / "a.tif", tmp_path / "o" / "a", cfg(upscale=2, save_mask=True),
                       Models(detector=BrightDetector(), restorer=Identity(), upscaler=Nearest(2)))
    restored, mask = out.outputs
    with tifffile.TiffFile(restored) as t:
        tags = t.pages[0].tags
        assert (tags[282].value, tags[283].value, tags[296].value) == ((4, 1), (3, 1), 1)
    phys = mask.read_bytes().split(b"pHYs", 1)[1][:9]  # the mask has the scan's pixel shape too
    assert struct.unpack(">IIB", phys) == (4, 3, 0)


def test_alpha_kept_untouched_without_upscale(tmp_path):
    img = random_image(64, 40, 3, np.uint8, seed=6)
    alpha = random_image(64, 40, 1, np.uint8, seed=7)[..., 0]
    src = write_png(tmp_path / "b.png", img, alpha)
    out = process_file(src, tmp_path / "out" / "b", cfg(), Models(restorer=ConvNet()))
    got = np.asarray(Image.open(out.outputs[0]))
    np.testing.assert_array_equal(got[..., 3], alpha)


@pytest.mark.parametrize("margin", [0, 16])
def test_bands_and_batches_give_the_same_output_as_one_merge(tmp_path, margin):
    # The streamed, batched, band-by-band result equals split -> net -> merge on the whole image at once (grown by
    # the mirrored --edge-margin on every side and cropped back, when one is asked for).
    img = random_image(260, 330, 3, np.uint16, seed=8)
    src = write_tiff(tmp_path / "c.tif", img)
    net = ConvNet(seed=3)
    tile, overlap = 128, 32
    m = margin
    grown = np.pad(img, ((m, m), (m, m), (0, 0)), mode="reflect")
    x = torch.from_numpy(grown.astype(np.float32) / 65535).permute(2, 0, 1)
    tiles, boxes = split(x, tile, overlap)
    ref = merge(net(tiles, None), boxes, grown.shape[:2], tile, overlap)[:, m: m + 260, m: m + 330].clamp(0, 1)
    ref = np.rint(ref.permute(1, 2, 0).numpy() * 65535).astype(np.int64)
    outs = []
    for batch in (1, 4, 64):
        t = TileConfig(size=tile, overlap=overlap, batch_size=batch, edge_margin=margin)
        res = process_file(src, tmp_path / f"c{batch}", cfg(tile=t, tone="tile"), Models(restorer=net))
        outs.append(read_any(res.outputs[0]).astype(np.int64))
    for got in outs:
        assert np.abs(got - ref).max() <= 1  # float32 streaming vs float64 merge: at most one rounding step
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    # with one tone curve per photo (the default), the result is the merge evened out as a whole
    evened = ref.astype(np.uint16)
    even_tone(evened, img, None, 1)
    res = process_file(src, tmp_path / "c_photo", cfg(tile=TileConfig(tile, overlap, 4, edge_margin=margin)),
                       Models(restorer=net))
    got = read_any(res.outputs[0]).astype(np.int64)
    assert np.abs(got - evened).max() <= 2
    assert np.abs(got - ref).max() > 100  # the pass did change this net's output


def test_should_stop_abandons_without_output(tmp_path):
    src = write_tiff(tmp_path / "d.tif", random_image(300, 200, 3, np.uint8, seed=9))
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1  # let one band through, then ask to stop

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    events: list[Event] = []
    with pytest.raises(KeyboardInterrupt):
        # batch 1: every tile row runs before the next is read (larger batches span rows)
        process_file(src, out_dir / "d", cfg(tile=TileConfig(128, 32, 1)), Models(restorer=Identity()),
                     on_event=events.append, should_stop=stop)
    assert len(calls) == 2
    assert 0 < events[-1].done < events[-1].total  # it stopped between bands, not at the end
    assert files_in(out_dir) == []


@pytest.mark.parametrize("only_mask", [False, True])
def test_closed_commit_gate_discards_the_outputs(tmp_path, only_mask):
    src = write_tiff(tmp_path / "g.tif", random_image(60, 40, 3, np.uint8, seed=4))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    models = Models(detector=BrightDetector()) if only_mask else Models(restorer=Identity())
    gate = pipeline.CommitGate()
    done = process_file(src, out_dir / "open", cfg(only_mask=only_mask), models, commit_gate=gate)
    assert gate.passed(src) and all(p.exists() for p in done.outputs)
    gate.close()
    with pytest.raises(KeyboardInterrupt):
        process_file(src, out_dir / "closed", cfg(only_mask=only_mask), models, commit_gate=gate)
    assert files_in(out_dir) == sorted(p.name for p in done.outputs)  # nothing of the second call, no temp


def test_closing_the_commit_gate_removes_the_temp_files_of_outputs_being_written_and_waits_in_bounds(tmp_path,
                                                                                                     monkeypatch):
    """A second Ctrl-C closes the gate without waiting for the files in flight, whose threads may never return (a hung
    network share): the half-written outputs' temp files are removed by the closing, and a commit blocked in I/O
    does not hold the run for good."""
    import threading
    import time

    from oldphoto.io import writer

    src = write_tiff(tmp_path / "h.tif", random_image(30, 40, 3, np.uint8, seed=5))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    gate, writing, forever = pipeline.CommitGate(), threading.Event(), threading.Event()

    def hung_tiff(out, *args, **kwargs):
        out.write(b"II*\0 and nothing more")
        writing.set()
        forever.wait(10)  # set at the end of the test, so the thread ends with it

    monkeypatch.setattr(writer, "_write_tiff", hung_tiff)
    ended: list[BaseException] = []

    def work():
        try:
            process_file(src, out_dir / "h", cfg(), Models(restorer=Identity()), commit_gate=gate)
        except BaseException as e:  # noqa: BLE001 - what the thread ended with is the result
            ended.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert writing.wait(10) and len(files_in(out_dir)) == 1  # the temp file of h.tif
        assert gate.close(timeout=0.2) == []
        assert files_in(out_dir) == []
    finally:
        forever.set()
        thread.join(10)
    assert len(ended) == 1 and isinstance(ended[0], KeyboardInterrupt) and files_in(out_dir) == []

    stuck, entered, release = pipeline.CommitGate(), threading.Event(), threading.Event()

    def blocked_commit():
        with stuck.entry(src):
            entered.set()
            release.wait(10)  # renames on a share that does not answer

    thread = threading.Thread(target=blocked_commit)
    thread.start()
    try:
        assert entered.wait(10)
        t0 = time.monotonic()
        assert stuck.close(timeout=0.1) == []
        assert time.monotonic() - t0 < 5  # not the 10 s the commit takes
    finally:
        release.set()
        thread.join(10)
    with pytest.raises(KeyboardInterrupt):  # closed all the same: nothing after the blocked commit gets in
        with stuck.entry(src):
            pass


def test_an_output_folder_lost_during_the_model_work_is_not_made_again(tmp_path):
    """The run's output folder is deleted while the photo's tiles run (a progress callback): its outputs are not
    written, the folder and the photo's subfolder are not made again, and the gate turns every later photo away."""
    src = write_tiff(tmp_path / "g.tif", random_image(300, 200, 3, np.uint8, seed=4))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    lock = OutputLock(out_dir)
    lock.acquire()
    gate = pipeline.CommitGate(guard=lock.check_folder)

    def delete_on_tiles(event):
        if event.kind == "tiles" and out_dir.exists():
            shutil.rmtree(out_dir)

    with pytest.raises(FolderLost, match="deleted or moved away"):
        process_file(src, out_dir / "album" / "g", cfg(), Models(restorer=Identity()), on_event=delete_on_tiles,
                     commit_gate=gate)
    assert not out_dir.exists()
    out_dir.mkdir()  # another folder of that name: the gate stays closed
    with pytest.raises(KeyboardInterrupt):
        process_file(src, out_dir / "g", cfg(), Models(restorer=Identity()), commit_gate=gate)
    assert files_in(out_dir) == []


def test_an_output_folder_moved_while_the_outputs_are_written_gets_none_of_them(tmp_path, monkeypatch):
    src = write_tiff(tmp_path / "g.tif", random_image(60, 40, 3, np.uint8, seed=4))
    out_dir, moved = tmp_path / "out", tmp_path / "moved"
    out_dir.mkdir()
    lock = OutputLock(out_dir)
    lock.acquire()
    write = pipeline.oio.write

    def write_then_move(path, *args, **kwargs):
        notes = write(path, *args, **kwargs)
        out_dir.rename(moved)  # after the check before writing, before the outputs go in
        return notes

    monkeypatch.setattr(pipeline.oio, "write", write_then_move)
    with pytest.raises(FolderLost, match="deleted or moved away"):
        process_file(src, out_dir / "g", cfg(), Models(restorer=Identity()),
                     commit_gate=pipeline.CommitGate(guard=lock.check_folder))
    assert not out_dir.exists() and not (moved / "g.tif").exists()


@pytest.mark.parametrize("only_mask", [False, True])
def test_an_output_folder_deleted_while_the_first_output_is_written_is_not_made_again_for_the_next(tmp_path,
                                                                                                   monkeypatch,
                                                                                                   only_mask):
    """A photo with two outputs (--only-mask; --save-mask): the folder is deleted while the first is written. The
    second's folder was then made with its parents, the run's output folder among them, before the check as they go
    in found a folder "replaced" (by the run itself), and the empty folders stayed."""
    src = write_tiff(tmp_path / "g.tif", random_image(60, 40, 3, np.uint8, seed=4))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    lock = OutputLock(out_dir)
    lock.acquire()
    write, written = pipeline.oio.write, []

    def write_then_delete(path, *args, **kwargs):
        notes = write(path, *args, **kwargs)
        if not written:
            shutil.rmtree(out_dir)
        written.append(path)
        return notes

    monkeypatch.setattr(pipeline.oio, "write", write_then_delete)
    models = Models(detector=BrightDetector(), restorer=Identity())
    with pytest.raises(FolderLost, match="deleted or moved away"):
        process_file(src, out_dir / "album" / "g", cfg(only_mask=only_mask, save_mask=not only_mask), models,
                     commit_gate=pipeline.CommitGate(guard=lock.check_folder))
    assert len(written) == 1 and not out_dir.exists()


def test_the_output_folder_is_checked_per_photo_not_per_tile(tmp_path):
    src = write_tiff(tmp_path / "g.tif", random_image(300, 200, 3, np.uint8, seed=4))
    (tmp_path / "out").mkdir()
    checks = []
    gate = pipeline.CommitGate(guard=lambda: checks.append(1))
    events = []
    process_file(src, tmp_path / "out" / "g", cfg(), Models(restorer=Identity()), on_event=events.append,
                 commit_gate=gate)
    assert events[-1].total > 2 and len(checks) == 2  # before writing (no folder made again) and as they go in


def test_stage_error_propagates_and_leaves_nothing(tmp_path):
    src = write_tiff(tmp_path / "e.tif", random_image(50, 50, 3, np.uint8))
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="on purpose"):
        process_file(src, tmp_path / "out" / "e", cfg(), Models(restorer=Boom()))
    assert files_in(tmp_path / "out") == []


def test_a_restorer_that_returns_nan_fails_the_file_instead_of_writing_black(tmp_path):
    class NaNInOneCorner:
        def __call__(self, x, mask):
            y = x.clone()
            y[:, :, :2, :2] = float("nan")
            return y

    src = write_tiff(tmp_path / "n.tif", random_image(50, 50, 3, np.uint8))
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="restorer stage returned non-finite values"):
        process_file(src, tmp_path / "out" / "n", cfg(), Models(restorer=NaNInOneCorner()))
    assert files_in(tmp_path / "out") == []


def test_stage_with_wrong_output_shape_is_named(tmp_path):
    src = write_tiff(tmp_path / "f.tif", random_image(50, 50, 3, np.uint8))
    bad = lambda x, m: x[:, :1]  # noqa: E731
    with pytest.raises(ValueError, match=r"restorer stage returned \(1, 1, 128, 128\)"):
        process_file(src, tmp_path / "out" / "f", cfg(tile=TileConfig(128, 32, 1)), Models(restorer=bad))


def test_out_of_memory_halves_batch_then_tile(tmp_path):
    img = random_image(140, 300, 3, np.uint16, seed=10)
    src = write_tiff(tmp_path / "g.tif", img)
    stage = OutOfMemoryAbove(batch=1, tile=64)
    t = TileConfig(size=256, overlap=32, batch_size=8)
    res = process_file(src, tmp_path / "out" / "g", cfg(tile=t), Models(restorer=stage))
    np.testing.assert_array_equal(read_any(res.outputs[0]), img)
    assert any("batch size reduced to 1" in n for n in res.notes)
    assert any("tile size reduced to 128" in n for n in res.notes)
    assert any("tile size reduced to 64" in n for n in res.notes)
    assert all(b <= 1 and t <= 64 for b, _, t, _ in stage.calls[-3:])


def test_out_of_memory_at_smallest_tile_is_an_image_error(tmp_path):
    src = write_tiff(tmp_path / "h.tif", random_image(40, 40, 3, np.uint8))
    with pytest.raises(ImageError, match="h.tif"):
        process_file(src, tmp_path / "out" / "h", cfg(), Models(restorer=OutOfMemoryAbove(batch=0)))


def test_colorize_gray_keeps_lightness_and_takes_chroma(tmp_path):
    yy, xx = np.mgrid[0:90, 0:120]
    gray = ((yy + xx) * 65535 // 210).astype(np.uint16)[..., None]
    src = write_tiff(tmp_path / "bw.tif", gray)
    col = ConstantColour(25.0, -15.0)
    res = process_file(src, tmp_path / "bw_c", cfg(colorize=True), Models(restorer=Identity(), colorizer=col))
    assert col.seen == (1, 1, 24, 32)  # long side shrunk to the work size
    got = read_any(res.outputs[0])
    assert got.shape == (90, 120, 3) and got.dtype == np.uint16
    lab = rgb_to_lab(torch.from_numpy(got.astype(np.float32) / 65535).permute(2, 0, 1))
    want_l = rgb_to_lab(torch.from_numpy(np.repeat(gray, 3, 2).astype(np.float32) / 65535).permute(2, 0, 1))[0]
    inside = (want_l > 30) & (want_l < 80)  # away from black/white, where the colour is clipped by the gamut
    assert (lab[0] - want_l)[inside].abs().max() < 0.5
    assert (lab[1][inside] - 25).abs().max() < 1.0 and (lab[2][inside] + 15).abs().max() < 1.0


def test_colorize_skips_colour_photos(tmp_path):
    img = random_image(40, 50, 3, np.uint8, seed=11)
    src = write_png(tmp_path / "c.png", img)
    res = process_file(src, tmp_path / "c_out", cfg(colorize=True),
                       Models(restorer=Identity(), colorizer=ConstantColour()))
    np.testing.assert_array_equal(read_any(res.outputs[0]), img)
    assert any("colorize skipped" in n for n in res.notes)


def test_events_count_every_tile(tmp_path):
    src = write_tiff(tmp_path / "ev.tif", random_image(200, 250, 3, np.uint8))
    events: list[Event] = []
    process_file(src, tmp_path / "out" / "ev", cfg(), Models(restorer=Identity()), on_event=events.append)
    assert events[0].kind == "file_start" and events[-1].kind == "file_done"
    total = events[0].total
    assert total == 2 * 3  # tiles of 128 overlapping >= 32: 2 rows for 200 px, 3 columns for 250 px
    tiles = [e.done for e in events if e.kind == "tiles"]
    assert tiles == sorted(tiles) and tiles[-1] == total
    assert events[-1].done == total


def test_bad_input_is_an_image_error(tmp_path):
    src = tmp_path / "broken.png"
    src.write_bytes(b"this is not a png")
    with pytest.raises(ImageError, match="broken.png"):
        process_file(src, tmp_path / "x", cfg(), Models(restorer=Identity()))


def test_a_temp_folder_that_cannot_map_files_is_noted_once_or_fails_the_photo(tmp_path, monkeypatch,
                                                                              unmappable_folders):
    """Where TMPDIR's file system cannot map files, the buffers over the threshold (here all: the decoded scan, the
    output, the mask) go to the system temp folder, and the photo's notes say so once; where none can, the photo
    fails with that reason and leaves nothing."""
    named, system = tmp_path / "tmpdir", tmp_path / "system"
    named.mkdir()
    system.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(named))
    monkeypatch.setattr(buffers, "SYSTEM_TEMP", (str(system),))
    monkeypatch.setattr(buffers, "DISK_THRESHOLD", 0)
    maps = unmappable_folders(named)
    img = random_image(90, 110, 3, np.uint8, seed=3)
    src = write_png(tmp_path / "scan.png", img)
    models = Models(detector=BrightDetector(), restorer=Identity())
    out = process_file(src, tmp_path / "out" / "scan", cfg(save_mask=True), models)
    np.testing.assert_array_equal(read_any(out.outputs[0]), img)
    note = f"pixel buffers: {named} cannot memory-map files (No such device); put in {system} instead"
    assert out.notes.count(note) == 1 and len(maps.mapped) >= 3 and set(maps.mapped) == {system}
    unmappable_folders(system)
    # the PNG fails in reading, the uncompressed TIFF (mapped from its own folder, not copied) at the output buffer
    for src in (src, write_tiff(tmp_path / "scan.tif", img)):
        with pytest.raises(ImageError) as e:
            process_file(src, tmp_path / "again" / "scan", cfg(save_mask=True), models)
        assert e.value.path == src and e.value.reason == (
            f"no temp folder can hold a pixel buffer of 29700 bytes: {named} cannot memory-map files (No such device), "
            f"nor can {system} (No such device); point TMPDIR at a folder on a local disk")
        assert not (tmp_path / "again").exists()


def test_missing_models_are_refused(tmp_path):
    src = write_png(tmp_path / "m.png", random_image(10, 10, 3, np.uint8))
    with pytest.raises(OldPhotoError, match="detector"):
        process_file(src, tmp_path / "m", cfg(only_mask=True), Models())
    with pytest.raises(OldPhotoError, match="upscaler"):
        process_file(src, tmp_path / "m", cfg(upscale=2), Models(restorer=Identity()))


def test_memory_stays_bounded_by_tiles_not_image(tmp_path):
    # 1200 x 2400 gray: a float32 RGB copy of the image would be 35 MB; numpy allocations stay far below.
    h, w = 1200, 2400
    img = np.tile(np.arange(w, dtype=np.uint16)[None, :, None], (h, 1, 1))
    src = write_tiff(tmp_path / "big.tif", img)
    tracemalloc.start()
    try:
        process_file(src, tmp_path / "out" / "big", cfg(tile=TileConfig(128, 16, 4)), Models(restorer=Identity()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    image_bytes = h * w * 2
    assert peak < 3 * image_bytes + 12e6, f"peak numpy allocations {peak / 1e6:.1f} MB"


def test_output_paths():
    base = Path("/o/sub/photo.v2")
    assert output_paths(base, ".JPG", cfg()) == [Path("/o/sub/photo.v2.JPG")]
    assert output_paths(base, "TIFF", cfg()) == [Path("/o/sub/photo.v2.tif")]
    assert output_paths(base, ".tiff", cfg(format="png")) == [Path("/o/sub/photo.v2.png")]
    assert output_paths(base, ".png", cfg(format="jpeg")) == [Path("/o/sub/photo.v2.jpg")]
    assert output_paths(base, ".png", cfg(only_mask=True)) == [Path("/o/sub/photo.v2.mask.png"),
                                                               Path("/o/sub/photo.v2.overlay.jpg")]
    assert output_paths(base, ".tif", cfg(save_mask=True)) == [Path("/o/sub/photo.v2.tif"),
                                                               Path("/o/sub/photo.v2.mask.png")]
    with pytest.raises(ValueError, match="BMP"):
        output_paths(base, "BMP", cfg())


@dataclass
class _Staged:
    entry: WeightsEntry | None = None
    entries: list | None = None
    scale: int = 2


def test_describe_names_weights():
    e = lambda n: WeightsEntry(n, "x", {}, n + ".pt", n[0] * 64)  # noqa: E731
    models = Models(detector=_Staged(entry=e("detector-v1")),
                    restorer=_Staged(entries=[e("vae1-v1"), e("mapping-v1"), e("vae2-v1")]),
                    upscaler=_Staged(entry=e("upscaler-v1")))
    d = models.describe()
    assert d["detector"] == {"name": "detector-v1", "sha256": "d" * 64}
    assert d["restorer"]["name"] == "vae1-v1+mapping-v1+vae2-v1"
    assert [p["name"] for p in d["restorer"]["parts"]] == ["vae1-v1", "mapping-v1", "vae2-v1"]
    assert d["upscaler"]["scale"] == 2 and "colorizer" not in d


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(OldPhotoError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(OldPhotoError, match="not available"):
            resolve_device("cuda:0")


def test_real_stage_wrappers_run_end_to_end(tmp_path):
    # The project's own stage classes (random small networks) plugged into the engine: contracts fit.
    from oldphoto.archs import build
    from oldphoto.stages.colorize import Colorizer
    from oldphoto.stages.detect import Detector
    from oldphoto.stages.restore import Restorer
    from oldphoto.stages.upscale import Upscaler

    torch.manual_seed(0)
    det = Detector(build("unet_detector", channels=(4, 8, 8), blocks=1), 0.5)
    restorer = Restorer(build("vae_encoder", latent=8, width=16, half_width=8, blocks=1),
                        build("mapping", latent=8, width=16, blocks_pre=1, blocks_post=1),
                        build("vae_decoder", latent=8, width=16, half_width=8, blocks=1))
    upscaler = Upscaler(build("upscaler", channels=8, layers=2, scales=(2, 4)), 2)
    colorizer = Colorizer(build("colorizer_unet", channels=(4, 8, 8), blocks=1), 64)
    gray = random_image(90, 70, 1, np.uint16, seed=12)
    src = write_tiff(tmp_path / "bw.tif", gray)
    models = Models(detector=det, restorer=restorer, upscaler=upscaler, colorizer=colorizer)
    res = process_file(src, tmp_path / "out" / "bw", cfg(colorize=True, upscale=2), models)
    got = read_any(res.outputs[0])
    assert got.shape == (180, 140, 3) and got.dtype == np.uint16
    assert 0.0 <= res.mask_coverage <= 100.0
    assert res.seconds["detect"] > 0 and res.seconds["restore"] > 0 and res.seconds["upscale"] > 0
    assert res.seconds["colorize"] > 0

    res = process_file(src, tmp_path / "out" / "bw", cfg(only_mask=True), Models(detector=det))
    with Image.open(res.outputs[0]) as m:
        assert m.size == (70, 90) and m.mode == "L"


def test_never_overwrites_its_own_input(tmp_path):
    img = random_image(20, 30, 3, np.uint8)
    src = write_png(tmp_path / "same.png", img)
    before = src.read_bytes()
    with pytest.raises(ImageError, match="would overwrite the input"):
        process_file(src, tmp_path / "same", cfg(), Models(restorer=ConvNet()))
    assert src.read_bytes() == before


@pytest.mark.parametrize("packet", [b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>unclosed",
                                    b"<!DOCTYPE x [<!ENTITY a 'b'>]><x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
                                    b"<other>root</other>",
                                    b"<?xml version='1.0' encoding='bogus'?><x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
                                    b"<?xml version='1.0' encoding='shift_jis'?><x:xmpmeta xmlns:x='adobe:ns:meta/'/>"])
def test_a_source_xmp_that_cannot_be_parsed_is_carried_unchanged(tmp_path, packet):
    from oldphoto import io as oio

    src = tmp_path / "x.tif"
    tifffile.imwrite(src, random_image(30, 40, 3, np.uint8, seed=2), photometric="rgb",
                     extratags=[(700, "B", len(packet), packet, True)])
    res = process_file(src, tmp_path / "out" / "x", cfg(save_mask=True),
                       Models(detector=BrightDetector(), restorer=Identity()))
    assert oio.read(res.outputs[0], 10**6).meta.xmp == packet  # byte for byte, the photo restored
    assert sum("carried unchanged" in n for n in res.notes) == 1 and all("\n" not in n for n in res.notes)


def test_a_thumbnail_in_the_source_xmp_is_dropped_with_a_note_in_the_report(tmp_path):
    from oldphoto import io as oio

    packet = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"><xmp:Thumbnails><rdf:Alt>'
              b'<rdf:li>/9j/4AAQ</rdf:li></rdf:Alt></xmp:Thumbnails></rdf:Description></rdf:RDF></x:xmpmeta>')
    src = tmp_path / "x.tif"
    tifffile.imwrite(src, random_image(30, 40, 3, np.uint8, seed=2), photometric="rgb",
                     extratags=[(700, "B", len(packet), packet, True)])
    res = process_file(src, tmp_path / "out" / "x", cfg(save_mask=True),
                       Models(detector=BrightDetector(), restorer=Identity()))
    assert b"<xmp:Thumbnails" not in oio.read(res.outputs[0], 10**6).meta.xmp  # the note, in oldphoto:Notes, names it
    assert res.notes.count("XMP thumbnail (xmp:Thumbnails) dropped: it shows the unrestored image") == 1


def test_output_records_provenance(tmp_path):
    import hashlib

    from oldphoto import io as oio

    src = write_tiff(tmp_path / "p.tif", random_image(30, 40, 3, np.uint16, seed=13))
    res = process_file(src, tmp_path / "out" / "p", cfg(), Models(restorer=Identity()))
    xmp = oio.read(res.outputs[0], 10**6).meta.xmp.decode()
    assert hashlib.sha256(src.read_bytes()).hexdigest() in xmp
    assert "p.tif" in xmp and "oldphoto" in xmp
    assert "mask_dilate" in xmp and "Identity" in xmp  # settings and models of the run


def test_load_models_loads_what_the_config_needs(tmp_path, registry_at):
    import json

    from oldphoto import registry
    from oldphoto.archs import build
    from oldphoto.pipeline import WEIGHT_NAMES, load_models

    vae = {"latent": 8, "width": 16, "half_width": 8, "blocks": 1}
    specs = {
        WEIGHT_NAMES["detector"]: ("unet_detector", {"channels": [4, 8, 8], "blocks": 1}, {"threshold": 0.3}),
        WEIGHT_NAMES["vae1"]: ("vae", vae, {}),
        WEIGHT_NAMES["vae2"]: ("vae", vae, {}),
        WEIGHT_NAMES["mapping"]: ("mapping", {"latent": 8, "width": 16, "blocks_pre": 1, "blocks_post": 1}, {}),
        WEIGHT_NAMES["refiner"]: ("refiner", {"width": 4}, {}),
        WEIGHT_NAMES["colorizer"]: ("colorizer_unet", {"channels": [4, 8, 8], "blocks": 1}, {"work_size": 64}),
        WEIGHT_NAMES["upscaler"]: ("upscaler", {"channels": 8, "layers": 2, "scales": [2, 4]}, {}),
    }
    manifest = {"models": {}}
    for name, (arch, kwargs, meta) in specs.items():
        torch.manual_seed(0)
        f = tmp_path / f"{name}.pt"
        torch.save(build(arch, **kwargs).state_dict(), f)
        manifest["models"][name] = {"arch": arch, "arch_kwargs": kwargs, "file": f.name,
                                    "sha256": registry.sha256_file(f), "meta": meta}
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    registry_at(tmp_path)
    threads = torch.get_num_threads()
    try:
        only = load_models(cfg(only_mask=True), "cpu")
        assert only.detector.threshold == 0.3
        assert (only.restorer, only.colorizer, only.upscaler) == (None, None, None)
        full = load_models(cfg(colorize=True, upscale=4), "cpu")
        d = full.describe()
    finally:
        torch.set_num_threads(threads)
    assert full.upscaler.scale == 4 and full.colorizer.work_size == 64
    assert d["restorer"]["name"] == "+".join(WEIGHT_NAMES[k] for k in ("vae1", "mapping", "vae2", "refiner"))
    assert d["detector"]["sha256"] == manifest["models"][WEIGHT_NAMES["detector"]]["sha256"]
    src = write_png(tmp_path / "ld.png", random_image(40, 60, 1, np.uint8))
    res = process_file(src, tmp_path / "out" / "ld", cfg(colorize=True, upscale=4), full)
    assert read_any(res.outputs[0]).shape == (160, 240, 3)


def test_failed_second_output_removes_the_first(tmp_path, monkeypatch):
    from oldphoto import io as oio

    src = write_png(tmp_path / "two.png", _defect_photo())
    real_write = oio.write
    calls = []

    def failing_second(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise ImageError(path, "disk full (simulated)")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(oio, "write", failing_second)
    (tmp_path / "out").mkdir()
    with pytest.raises(ImageError, match=r"two\.overlay\.jpg: disk full"):  # names the output that failed
        process_file(src, tmp_path / "out" / "two", cfg(only_mask=True), Models(detector=BrightDetector()))
    assert [p.name for p in calls] == ["two.mask.png", "two.overlay.jpg"]
    assert files_in(tmp_path / "out") == []
    # outputs of an earlier run stay as they were, the first one included (it was never renamed into place)
    (tmp_path / "out" / "two.mask.png").write_bytes(b"earlier mask")
    (tmp_path / "out" / "two.overlay.jpg").write_bytes(b"earlier overlay")
    calls.clear()
    with pytest.raises(ImageError, match="disk full"):
        process_file(src, tmp_path / "out" / "two", cfg(only_mask=True), Models(detector=BrightDetector()))
    assert files_in(tmp_path / "out") == ["two.mask.png", "two.overlay.jpg"]
    assert (tmp_path / "out" / "two.mask.png").read_bytes() == b"earlier mask"
    assert (tmp_path / "out" / "two.overlay.jpg").read_bytes() == b"earlier overlay"


def test_batches_span_tile_rows_of_a_narrow_image(tmp_path):
    img = random_image(610, 90, 3, np.uint8, seed=12)  # one tile per row: 7 rows at tile 128, overlap 32
    src = write_tiff(tmp_path / "narrow.tif", img)
    sizes = []

    def stage(x, m):
        sizes.append(len(x))
        return x

    res = process_file(src, tmp_path / "out" / "narrow", cfg(tile=TileConfig(128, 32, 4)), Models(restorer=stage))
    np.testing.assert_array_equal(read_any(res.outputs[0]), img)
    assert sizes == [4, 3]  # not seven batches of one tile


def test_restoring_uses_the_restorers_mask_threshold_and_only_mask_the_detectors(tmp_path):
    src = write_tiff(tmp_path / "t.tif", random_image(60, 70, 3, np.uint8, seed=13))

    class HalfDetector:  # probability 0.5 everywhere
        threshold = 0.4

        def __call__(self, tiles):
            return torch.full_like(tiles[:, :1], 0.5)

    class MaskSpy:
        def __init__(self, mask_threshold):
            self.mask_threshold, self.masked = mask_threshold, []

        def __call__(self, x, mask):
            self.masked.append(float(mask.mean()))
            return x

    for preferred, want in ((None, 1.0), (0.6, 0.0)):
        spy = MaskSpy(preferred)
        res = process_file(src, tmp_path / f"r{preferred}" / "t", cfg(), Models(detector=HalfDetector(), restorer=spy))
        assert set(spy.masked) == {want} and res.mask_coverage == 100 * want
    res = process_file(src, tmp_path / "m" / "t", cfg(only_mask=True, mask_dilate=0),
                       Models(detector=HalfDetector(), restorer=MaskSpy(0.6)))
    assert res.mask_coverage == 100.0  # curators see the detector's own (F1-tuned) threshold
    d = Models(detector=HalfDetector(), restorer=MaskSpy(0.6)).describe()
    assert d["detector"]["threshold"] == 0.4 and d["restorer"]["mask_threshold"] == 0.6


def test_scope_defects_changes_only_the_masked_pixels(tmp_path):
    """--scope defects: every pixel outside the grown mask is the scan's, bit for bit (16-bit too); inside, the
    restoration, brought to the tone of the intact pixels around it."""
    img8 = _defect_photo()
    img = img8.astype(np.uint16) * 257
    src = write_tiff(tmp_path / "photo.tif", img)

    class Darken:  # a "restorer" that darkens everything: fading undone, say
        def __call__(self, x, mask):
            return (x * 0.8).clamp(0, 1)

    res = process_file(src, tmp_path / "o" / "photo", cfg(scope="defects"),
                       Models(detector=BrightDetector(), restorer=Darken()))
    out = read_any(res.outputs[0])
    assert out.dtype == np.uint16 and out.shape == img.shape
    truth = torch.from_numpy(img8[..., 0] > 0.9 * 255).float()[None, None]
    grown = dilate(truth, 1)[0, 0].numpy() > 0  # the default 1-px growth when restoring
    np.testing.assert_array_equal(out[~grown], img[~grown])
    assert res.mask_coverage == pytest.approx(100 * grown.mean())
    assert len(res.outputs) == 1
    # the fills are the restorer's (red 1.0 -> 0.8), lifted by what it took from the intact pixels around them
    # (0.2 x their mean), i.e. in the scan's tone
    scratch = out[40, 20:150, 0].astype(np.float64) / 65535
    lift = 0.2 * img[~grown][:, 0].mean() / 65535
    assert np.abs(scratch - (0.8 + lift)).mean() < 0.01 and lift > 0.04
    # the whole-photo default darkens everything
    whole = read_any(process_file(src, tmp_path / "a" / "photo", cfg(tone="tile"),
                                  Models(detector=BrightDetector(), restorer=Darken())).outputs[0])
    assert (whole[~grown] < img[~grown]).mean() > 0.9


def test_scope_defects_needs_a_detector_and_a_restorer(tmp_path):
    src = write_tiff(tmp_path / "t.tif", random_image(20, 30, 3, np.uint8))
    with pytest.raises(OldPhotoError, match="--scope defects needs a detector and a restorer"):
        process_file(src, tmp_path / "o" / "t", cfg(scope="defects"), Models(restorer=Identity()))


@pytest.mark.parametrize("kw", [{"tone": "tile"}, {"scope": "defects"}, {"upscale": 2}])
def test_save_mask_writes_the_mask_the_restoration_acted_on(tmp_path, kw):
    img = _defect_photo()
    src = write_png(tmp_path / "photo.png", img, dpi=(300, 300))
    models = Models(detector=BrightDetector(), restorer=ConvNet(), upscaler=Nearest(2) if kw.get("upscale") else None)
    res = process_file(src, tmp_path / "o" / "photo", cfg(save_mask=True, **kw), models)
    restored_path, mask_path = res.outputs
    assert mask_path.name == "photo.mask.png" and restored_path.name == "photo.png"
    with Image.open(mask_path) as m:
        assert m.mode == "L" and m.size == (170, 150) and m.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        mask = np.asarray(m)
    truth = torch.from_numpy(img[..., 0] > 0.9 * 255).float()[None, None]
    grown = dilate(truth, 1)[0, 0].numpy() > 0
    np.testing.assert_array_equal(mask == 255, grown)
    if kw.get("scope") == "defects":  # every pixel that changed is in the mask
        changed = (read_any(restored_path) != img).any(axis=2)
        assert changed.any() and not (changed & ~grown).any()


def near_gray_scan(h=90, w=120, seed=5) -> np.ndarray:
    """A black-and-white print scanned in RGB: a gray ramp whose channels differ by scanner noise of +-1 level."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = (40 + (yy + xx) * 170 // (h + w)).astype(np.int64)[..., None]
    noise = np.random.default_rng(seed).integers(-1, 2, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_rgb_scan_of_a_gray_print_comes_back_gray(tmp_path):
    scan = near_gray_scan()
    src = write_png(tmp_path / "bw_rgb.png", scan)
    res = process_file(src, tmp_path / "bw_rgb_out", cfg(), Models(restorer=ConvNet(seed=3)))
    got = read_any(res.outputs[0])
    assert got.shape == scan.shape and got.dtype == np.uint8
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()
    assert any(n.endswith("restored as grayscale") for n in res.notes)
    coloured = process_file(src, tmp_path / "bw_rgb_col", cfg(colorize=True),
                            Models(restorer=ConvNet(seed=3), colorizer=ConstantColour()))
    assert any(n.endswith("restored as grayscale, then colorized") for n in coloured.notes)
    # the stand-in tints a colour photo: the gray output is not just what it would give anyway
    tinted = read_any(process_file(write_png(tmp_path / "c.png", scan[:, :, ::-1] // 2 + np.uint8([0, 60, 120])),
                                   tmp_path / "c_out", cfg(), Models(restorer=ConvNet(seed=3))).outputs[0])
    assert np.ptp(tinted.astype(int), axis=2).max() > 10


def test_scope_defects_keeps_the_scans_pixels_of_a_gray_print_in_rgb(tmp_path):
    scan = near_gray_scan()
    scan[40:44, :] = 255  # a bright scratch the stand-in detector finds
    src = write_png(tmp_path / "bw_rgb.png", scan)
    res = process_file(src, tmp_path / "out", cfg(scope="defects", mask_dilate=0),
                       Models(restorer=ConvNet(seed=3), detector=BrightDetector()))
    got = read_any(res.outputs[0])
    np.testing.assert_array_equal(got[:40], scan[:40])  # intact pixels: the scan's own, channels not averaged
    np.testing.assert_array_equal(got[44:], scan[44:])
    assert (np.ptp(got[40:44].astype(int), axis=2) == 0).all()  # the fill is gray


class ZeroPaddedBlur:
    """A 3x3 box blur with zero padding, as a network's convolutions pad: it darkens a tile's outermost pixels."""

    def __call__(self, x, mask):
        k = torch.full((3, 1, 3, 3), 1 / 9)
        return F.conv2d(x, k, padding=1, groups=3)


@pytest.mark.parametrize("h,w", [(300, 300), (200, 130), (40, 500)])
def test_with_an_edge_margin_the_images_own_edges_are_not_tile_edges(tmp_path, h, w):
    flat = np.full((h, w, 3), 200, np.uint8)  # a blank page: any edge artefact shows
    src = write_png(tmp_path / "page.png", flat)
    margin = TileConfig(size=128, overlap=32, batch_size=3, edge_margin=16)
    res = process_file(src, tmp_path / "page_out", cfg(tone="tile", tile=margin), Models(restorer=ZeroPaddedBlur()))
    np.testing.assert_array_equal(read_any(res.outputs[0]), flat)
    res = process_file(src, tmp_path / "page_plain", cfg(tone="tile"), Models(restorer=ZeroPaddedBlur()))
    assert (read_any(res.outputs[0])[0] < 200).all()  # without: the top row is a tile edge, zero-padded


def test_a_manifest_setting_the_stages_refuse_is_a_weights_error(monkeypatch):
    from oldphoto.errors import WeightsError

    def bad_meta(name, device=None):
        raise ValueError("detector threshold must be in (0, 1), got 1.5")

    monkeypatch.setattr(pipeline.Detector, "from_registry", bad_meta)
    with pytest.raises(WeightsError, match=r"cannot be set up .*threshold must be in \(0, 1\), got 1.5"):
        pipeline.load_models(RestoreConfig(only_mask=True), "cpu")


def test_an_output_folder_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    """The output tree turned read-only mid-run: the one-line reason says which folder could not be made."""
    src = write_tiff(tmp_path / "e.tif", random_image(20, 20, 3, np.uint8))
    real_mkdir = Path.mkdir

    def read_only(self, *a, **kw):
        if self.name == "album":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(ImageError) as e:
        process_file(src, tmp_path / "out" / "album" / "e", cfg(), Models(restorer=Identity()))
    assert e.value.reason == f"cannot create the output folder {tmp_path / 'out' / 'album'}: Read-only file system"


# ------------------------------------------------------------------------------------------ EXIF in the scan's pixels
# SubjectArea, SubjectLocation, FocalPlaneX/YResolution and their XMP copies follow the orientation applied on read
# and --upscale; --only-mask's overlay carries them too

AREA, LOCATION, FPX, FPY = 0x9214, 0xA214, 0xA20E, 0xA20F
RDF, EXIF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "http://ns.adobe.com/exif/1.0/"


def _pixel_exif(path) -> dict:
    return piexif.load(read(path, 1_000_000).meta.exif)["Exif"]


def _oriented_scan(path, stored: np.ndarray, orientation: int, exif: dict, xmp: bytes | None = None) -> None:
    block = piexif.dump({"0th": {piexif.ImageIFD.Orientation: orientation}, "Exif": exif})
    kw = {"quality": 100, "subsampling": 0} if path.suffix == ".jpg" else {}
    Image.fromarray(stored).save(path, exif=block, **({"xmp": xmp} if xmp else {}), **kw)


@pytest.mark.parametrize("fmt, ext", [("keep", ".jpg"), ("png", ".png"), ("tiff", ".tif")])
def test_orientation_6_rectangle_upscaled_twice(tmp_path, fmt, ext):
    xmp = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}"><rdf:Description rdf:about="" '
           f'xmlns:exif="{EXIF_NS}" exif:FocalPlaneXResolution="4000/3"><exif:SubjectArea><rdf:Seq><rdf:li>10</rdf:li>'
           '<rdf:li>5</rdf:li><rdf:li>8</rdf:li><rdf:li>4</rdf:li></rdf:Seq></exif:SubjectArea></rdf:Description>'
           '</rdf:RDF></x:xmpmeta>').encode()
    src = tmp_path / "scan.jpg"
    _oriented_scan(src, np.tile(np.array([200, 120, 40], np.uint8), (40, 60, 1)), 6,
          {AREA: (10, 5, 8, 4), LOCATION: (3, 7), FPX: (4000, 3), FPY: (5000, 1), piexif.ExifIFD.PixelXDimension: 60,
           piexif.ExifIFD.PixelYDimension: 40}, xmp)
    out = process_file(src, tmp_path / "o" / "scan", cfg(upscale=2, format=fmt),
                       Models(restorer=Identity(), upscaler=Nearest(2)))
    (path,) = out.outputs
    assert path.suffix == ext
    exif = _pixel_exif(path)
    # stored 60 x 40, turned by 6 to 40 x 60, enlarged to 80 x 120: (x, y) -> 2 (39 - y, x); w, h -> 2 (h, w)
    assert (exif[AREA], exif[LOCATION], exif[FPX], exif[FPY]) == ((68, 20, 8, 16), (64, 6), (10000, 1), (8000, 3))
    size = (exif.get(piexif.ExifIFD.PixelXDimension), exif.get(piexif.ExifIFD.PixelYDimension))
    assert size == ((None, None) if fmt == "tiff" else (80, 120))  # a TIFF's size is its ImageWidth/Length
    packet = read(path, 1_000_000).meta.xmp.decode()
    assert "<rdf:li>68</rdf:li><rdf:li>20</rdf:li><rdf:li>8</rdf:li><rdf:li>16</rdf:li>" in packet
    assert 'exif:FocalPlaneYResolution="8000/3"' in packet and "FocalPlaneXResolution" not in packet
    assert read_provenance(path) is not None  # oldphoto's history entry is there too
    assert out.notes == ["orientation 6 applied: pixels are stored upright"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_subject_marker_lands_on_the_written_location_once_enlarged(tmp_path, orientation):
    stored = np.full((6, 9), 40, np.uint8)
    stored[1, 1:4] = 200  # a 3 x 1 subject rectangle centred on (2, 1), whose centre is brighter
    stored[1, 2] = 255
    src = tmp_path / "scan.png"
    _oriented_scan(src, stored, orientation, {AREA: (2, 1, 3, 1), LOCATION: (2, 1)})
    out = process_file(src, tmp_path / "o" / "scan", cfg(upscale=2), Models(restorer=Identity(), upscaler=Nearest(2)))
    px = np.asarray(Image.open(out.outputs[0]))
    exif = _pixel_exif(out.outputs[0])
    x, y = exif[LOCATION]
    assert px[y, x] == 255 and (px == 255).sum() == 4  # on the marker's 2 x 2 block
    cx, cy, w, h = exif[AREA]
    ys, xs = np.nonzero(px >= 200)
    assert (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (w, h)  # the subject's extent
    assert (cx, cy) == (x, y)


def test_only_mask_overlay_carries_the_values_turned(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[5, 10] = 255
    src = tmp_path / "scan.jpg"
    _oriented_scan(src, stored, 8, {AREA: (10, 5, 8, 4), FPX: (4000, 3)})
    out = process_file(src, tmp_path / "o" / "scan", cfg(only_mask=True), Models(detector=BrightDetector()))
    mask, overlay = out.outputs
    exif = _pixel_exif(overlay)
    assert exif[AREA] == (5, 49, 4, 8) and exif[FPY] == (4000, 3) and FPX not in exif  # (x, y) -> (y, 59 - x)
    assert _pixel_exif(mask) == {}  # a mask keeps only its resolution: no Exif directory


# ------------------------------------------------------------------------------------------ XMP face regions
# given in the stored image (MWG guidelines 2.0, 5.9): turned upright with the pixels and enlarged by --upscale

MWG_NS = {"rdf": RDF, "mwg-rs": "http://www.metadataworkinggroup.com/schemas/regions/",
          "stArea": "http://ns.adobe.com/xmp/sType/Area#", "stDim": "http://ns.adobe.com/xap/1.0/sType/Dimensions#"}


def test_an_mwg_face_frames_its_block_once_turned_upright_and_enlarged(tmp_path):
    stored = np.tile(np.array([40, 60, 90], np.uint8), (40, 60, 1))
    stored[8:16, 8:24] = (230, 200, 170)  # the face: 16 x 8 stored pixels from (8, 8), on JPEG's 8 x 8 blocks
    area = {"x": (8 + 8) / 60, "y": (8 + 4) / 40, "w": 16 / 60, "h": 8 / 40}  # normalized centre and size
    fields = " ".join(f'stArea:{k}="{v:.6f}"' for k, v in area.items())  # Lightroom's 6 decimals
    xmp = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}"><rdf:Description rdf:about="" '
           + " ".join(f'xmlns:{p}="{u}"' for p, u in MWG_NS.items() if p != "rdf")
           + '><mwg-rs:Regions rdf:parseType="Resource"><mwg-rs:AppliedToDimensions stDim:w="60" stDim:h="40" '
           'stDim:unit="pixel"/><mwg-rs:RegionList><rdf:Bag><rdf:li><rdf:Description mwg-rs:Name="Marie" '
           f'mwg-rs:Type="Face"><mwg-rs:Area {fields} stArea:unit="normalized"/></rdf:Description></rdf:li></rdf:Bag>'
           "</mwg-rs:RegionList></mwg-rs:Regions></rdf:Description></rdf:RDF></x:xmpmeta>").encode()
    src = tmp_path / "scan.jpg"
    _oriented_scan(src, stored, 6, {}, xmp)
    out = process_file(src, tmp_path / "o" / "scan", cfg(upscale=2), Models(restorer=Identity(), upscaler=Nearest(2)))
    (path,) = out.outputs
    written = read(path, 1_000_000)
    assert written.pixels.shape[:2] == (120, 80)  # 40 x 60 upright, x2
    root = ET.fromstring(re.sub(rb"<\?xpacket[^>]*\?>", b"", written.meta.xmp).strip())
    dims = root.find(".//mwg-rs:AppliedToDimensions", MWG_NS)
    assert (dims.get(f"{{{MWG_NS['stDim']}}}w"), dims.get(f"{{{MWG_NS['stDim']}}}h")) == ("80", "120")
    a = {k: float(v) for k, v in root.find(".//mwg-rs:Area", MWG_NS).attrib.items() if not v.isalpha()}
    x, y, w, h = (a[f"{{{MWG_NS['stArea']}}}{k}"] for k in "xywh")
    box = [round(v) for v in ((x - w / 2) * 80, (y - h / 2) * 120, (x + w / 2) * 80, (y + h / 2) * 120)]
    ys, xs = np.nonzero(written.pixels[..., 0] > 130)
    assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # the region frames the face's block
    assert box == [48, 16, 64, 48]  # stored x 8-24, y 8-16 -> x 40 - 16 .. 40 - 8, y 8 .. 24, doubled
    assert out.notes == ["orientation 6 applied: pixels are stored upright"]


# ------------------------------------------------------------------------------------------ XMP sidecars

_SIDECAR = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/" '
            'xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#" '
            'xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#">'
            '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">The mill</rdf:li></rdf:Alt></dc:title>'
            '<mwg-rs:Regions rdf:parseType="Resource"><mwg-rs:AppliedToDimensions stDim:w="40" stDim:h="30" '
            'stDim:unit="pixel"/><mwg-rs:RegionList><rdf:Bag><rdf:li><rdf:Description mwg-rs:Name="Rose">'
            '<mwg-rs:Area stArea:x="4" stArea:y="3" stArea:w="8" stArea:h="6" stArea:unit="pixel"/></rdf:Description>'
            '</rdf:li></rdf:Bag></mwg-rs:RegionList></mwg-rs:Regions></rdf:Description></rdf:RDF></x:xmpmeta>')


def _turned_jpeg(path: Path) -> Path:
    """A 40 x 30 JPEG stored turned: EXIF orientation 6 (shown 30 x 40)."""
    exif = piexif.dump({"0th": {piexif.ImageIFD.Orientation: 6}})
    Image.fromarray(random_image(30, 40, 3, np.uint8, seed=8)).save(path, exif=exif, quality=95)
    return path


def _xmp_values(data: bytes, local: str) -> list[str]:
    return re.findall(rf"<[\w-]+:{local}>([^<]*)<", data.decode("utf-8", "replace"))


def test_a_sidecar_goes_with_the_restored_photo_mapped_and_with_its_history(tmp_path):
    src = _turned_jpeg(tmp_path / "scan.jpg")
    sidecar = tmp_path / "scan.jpg.xmp"
    sidecar.write_text(_SIDECAR)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "scan.xmp").write_text("an earlier run's sidecar, in Adobe's naming")
    done = process_file(src, out_dir / "scan", cfg(upscale=2, save_mask=True, format="png"),
                        Models(detector=BrightDetector(), restorer=Identity(), upscaler=Nearest(2)),
                        sidecar=sidecar, stale=[out_dir / "scan.xmp"])
    # named after the restoration, in the scan's sidecar's style; masks get none; the stale one is gone
    assert done.outputs == [out_dir / "scan.png", out_dir / "scan.mask.png", out_dir / "scan.png.xmp"]
    assert files_in(out_dir) == ["scan.mask.png", "scan.png", "scan.png.xmp"]
    assert done.sidecar == pipeline.xmp_sidecar.SidecarId.of(sidecar, with_hash=True)
    carried = (out_dir / "scan.png.xmp").read_bytes()
    embedded = read(out_dir / "scan.png", 10**6).meta.xmp
    assert b"The mill" in carried and b"The mill" not in embedded  # never merged into the photo's own packet
    # one file, one history entry: the photo's packet and its sidecar share ids, time and settings
    for local in ("InstanceID", "DocumentID", "when", "parameters", "SourceSHA256", "SidecarSHA256"):
        assert _xmp_values(carried, local) == _xmp_values(embedded, local) != [], local
    assert read_provenance(out_dir / "scan.mask.png").sidecar_sha256 == done.sidecar.sha256
    # the face at x 0-8, y 0-6 of the stored 40 x 30 scan, turned by orientation 6, lies at x 24-30, y 0-8 of the
    # upright 30 x 40 photo; enlarged twice: centre (54, 8), 12 x 16, in a 60 x 80 restoration
    area = re.search(rb'stArea:x="([^"]+)" stArea:y="([^"]+)" stArea:w="([^"]+)" stArea:h="([^"]+)"', carried)
    assert [float(v) for v in area.groups()] == [54, 8, 12, 16] and b'stDim:w="60" stDim:h="80"' in carried


def test_a_sidecar_that_cannot_be_parsed_leaves_the_photo_restored_with_a_note(tmp_path):
    src = write_tiff(tmp_path / "scan.tif", random_image(30, 40, 3, np.uint8, seed=9))
    sidecar = tmp_path / "scan.xmp"
    sidecar.write_text("<x:xmpmeta>half written")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "scan.xmp").write_text("the sidecar of an earlier version")  # no longer goes with the photo
    done = process_file(src, out_dir / "scan", cfg(), Models(restorer=Identity()), sidecar=sidecar)
    assert done.outputs == [out_dir / "scan.tif"] and files_in(out_dir) == ["scan.tif"]
    assert done.sidecar.sha256 is not None  # recorded: not redone until it is edited
    assert [n for n in done.notes if "sidecar" in n] == [
        "XMP sidecar scan.xmp not carried: XMP packet is not well-formed XML (unbound prefix: line 1, column 0)"]
    assert read_provenance(out_dir / "scan.tif").sidecar_sha256 is None
    sidecar.unlink()  # gone since planning: restored all the same, and an earlier one goes
    (out_dir / "again.xmp").write_text("the sidecar of an earlier version")
    done = process_file(src, out_dir / "again", cfg(), Models(restorer=Identity()), sidecar=sidecar)
    assert done.sidecar is None and done.outputs == [out_dir / "again.tif"] and not (out_dir / "again.xmp").exists()
    assert "XMP sidecar scan.xmp not carried: cannot read: No such file or directory" in done.notes


def test_a_closed_gate_lets_no_sidecar_in_either(tmp_path):
    src = write_tiff(tmp_path / "g.tif", random_image(30, 40, 3, np.uint8, seed=4))
    (tmp_path / "g.tif.xmp").write_text(_SIDECAR)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    gate = pipeline.CommitGate()
    gate.close()
    with pytest.raises(KeyboardInterrupt):
        process_file(src, out_dir / "g", cfg(), Models(restorer=Identity()), commit_gate=gate,
                     sidecar=tmp_path / "g.tif.xmp")
    assert files_in(out_dir) == []


def test_only_mask_outputs_get_no_sidecar(tmp_path):
    src = write_tiff(tmp_path / "g.tif", random_image(30, 40, 3, np.uint8, seed=4))
    (tmp_path / "g.tif.xmp").write_text(_SIDECAR)
    assert output_paths(tmp_path / "o" / "g", ".tif", cfg(only_mask=True), "image") == [
        tmp_path / "o" / "g.mask.png", tmp_path / "o" / "g.overlay.jpg"]
    done = process_file(src, tmp_path / "o" / "g", cfg(only_mask=True), Models(detector=BrightDetector()),
                        sidecar=tmp_path / "g.tif.xmp")
    assert done.sidecar is None and files_in(tmp_path / "o") == ["g.mask.png", "g.overlay.jpg"]


def test_a_stale_sidecar_left_as_the_run_lets_go_is_not_counted_gone(tmp_path, monkeypatch):
    """A second Ctrl-C whose close() gave up waiting for a slow commit closes the temp files as the outputs have gone
    in: the removal of an earlier run's sidecar that no longer goes with the photo did nothing, silently, and the
    photo passed the gate, to be recorded as done with that sidecar beside it for good."""
    src = write_tiff(tmp_path / "g.tif", random_image(30, 40, 3, np.uint8, seed=4))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    stale = out_dir / "g.xmp"
    stale.write_text("the sidecar of an earlier run: the scan's own was removed since")
    gate = pipeline.CommitGate()
    commit = pipeline.oio.Staging.commit

    def commit_then_let_go(staging):
        commit(staging)
        gate._temps.close()  # as close() does once its wait for the gate's lock has timed out

    monkeypatch.setattr(pipeline.oio.Staging, "commit", commit_then_let_go)
    with pytest.raises(KeyboardInterrupt):
        process_file(src, out_dir / "g", cfg(), Models(restorer=Identity()), commit_gate=gate, stale=[stale])
    assert stale.exists() and not gate.passed(src)  # not recorded as done: the next run removes it


def _without_ids(data: bytes) -> bytes:
    """A sidecar less what differs between two runs that made it: ids and times."""
    data = re.sub(rb"xmp\.[id]id:[0-9a-f-]+", b"ID", data)
    return re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", b"TIME", data)


def test_a_sidecar_rewritten_alone_is_what_a_full_run_writes_and_describes_the_same_restoration(tmp_path):
    """Only the scan's sidecar changed: the sidecar beside the unchanged restoration is made from the scan's metadata
    alone (no pixel decoded, no model run), mapped through its orientation and --upscale as a full run maps it, with
    the restoration's own history event and ids (its pixels did not change) and a MetadataDate of now."""
    src = _turned_jpeg(tmp_path / "scan.jpg")
    sidecar = tmp_path / "scan.jpg.xmp"
    sidecar.write_text(_SIDECAR)
    models = Models(detector=BrightDetector(), restorer=Identity(), upscaler=Nearest(2))
    settings = cfg(upscale=2, format="png")
    process_file(src, tmp_path / "out" / "scan", settings, models, sidecar=sidecar)
    image = (tmp_path / "out" / "scan.png").read_bytes()
    sidecar.write_text(_SIDECAR.replace("The mill", "The mill, 1931"))  # the caption corrected
    made = read_provenance(tmp_path / "out" / "scan.png")
    calls = len(models.detector.batches)
    done = pipeline.update_sidecar(src, tmp_path / "out" / "scan", settings, made, (30, 40), sidecar=sidecar)
    assert len(models.detector.batches) == calls and (tmp_path / "out" / "scan.png").read_bytes() == image
    assert done.outputs == [tmp_path / "out" / "scan.png.xmp"] and done.seconds["restore"] == 0
    assert done.sidecar == pipeline.xmp_sidecar.SidecarId.of(sidecar, with_hash=True)
    rewritten = (tmp_path / "out" / "scan.png.xmp").read_bytes()
    process_file(src, tmp_path / "full" / "scan", settings, models, sidecar=sidecar)
    assert _without_ids(rewritten) == _without_ids((tmp_path / "full" / "scan.png.xmp").read_bytes())
    assert b'stArea:x="54" stArea:y="8" stArea:w="12" stArea:h="16"' in rewritten and b"The mill, 1931" in rewritten
    embedded = read(tmp_path / "out" / "scan.png", 10**6).meta.xmp
    for local in ("InstanceID", "DocumentID", "when", "parameters", "SourceSHA256"):
        assert _xmp_values(rewritten, local) == _xmp_values(embedded, local) != [], local
    assert _xmp_values(rewritten, "SidecarSHA256") == [done.sidecar.sha256] != _xmp_values(embedded, "SidecarSHA256")
    assert _xmp_values(rewritten, "MetadataDate") > _xmp_values(embedded, "MetadataDate") or \
        _xmp_values(rewritten, "MetadataDate") == _xmp_values(embedded, "MetadataDate")  # same second at most
    # removed: the sidecar goes, the restoration stays
    sidecar.unlink()
    done = pipeline.update_sidecar(src, tmp_path / "out" / "scan", settings, made, (30, 40),
                                   stale=[tmp_path / "out" / "scan.png.xmp"])
    assert done.outputs == [] and done.sidecar is None and files_in(tmp_path / "out") == ["scan.png"]


def test_a_sidecar_rewritten_alone_goes_through_the_gate(tmp_path):
    src = write_tiff(tmp_path / "g.tif", random_image(30, 40, 3, np.uint8, seed=4))
    (tmp_path / "g.tif.xmp").write_text(_SIDECAR)
    process_file(src, tmp_path / "o" / "g", cfg(), Models(restorer=Identity()))
    made = read_provenance(tmp_path / "o" / "g.tif")
    gate = pipeline.CommitGate()
    gate.close()
    with pytest.raises(KeyboardInterrupt):
        pipeline.update_sidecar(src, tmp_path / "o" / "g", cfg(), made, (40, 30), commit_gate=gate,
                                sidecar=tmp_path / "g.tif.xmp")
    assert files_in(tmp_path / "o") == ["g.tif"]
    with pytest.raises(ImageError, match="its size changed"):
        pipeline.update_sidecar(src, tmp_path / "o" / "g", cfg(), made, (30, 30), sidecar=tmp_path / "g.tif.xmp")


# ------------------------------------------------------------------------------------------ TIFF compression


def _compression(path: Path) -> tuple[int, int]:
    with tifffile.TiffFile(path) as t:
        return int(t.pages[0].compression), int(t.pages[0].predictor)


@pytest.mark.parametrize("compression,want", [("lzw", (5, 1)), ("packbits", (32773, 1)), ("none", (1, 1)),
                                              ("adobe_deflate", (8, 1))])
def test_keep_writes_the_master_compression(tmp_path, compression, want):
    img = random_image(40, 30, 3, np.uint16, seed=11)
    tifffile.imwrite(tmp_path / "scan.tif", img, photometric="rgb", compression=compression, rowsperstrip=8)
    out = process_file(tmp_path / "scan.tif", tmp_path / "out" / "scan", cfg(), Models(restorer=Identity()))
    assert out.outputs == [tmp_path / "out" / "scan.tif"]
    assert _compression(out.outputs[0]) == want
    np.testing.assert_array_equal(read_any(out.outputs[0]), img)
    assert not any("compression" in n for n in out.notes)


def test_keep_writes_a_jpeg_tiff_master_as_lzw_and_says_so(tmp_path):
    img = random_image(32, 32, 3, np.uint8, seed=12)
    tifffile.imwrite(tmp_path / "scan.tif", img, photometric="rgb", compression="jpeg", rowsperstrip=16)
    out = process_file(tmp_path / "scan.tif", tmp_path / "out" / "scan", cfg(), Models(restorer=Identity()))
    assert _compression(out.outputs[0]) == (5, 2)
    note = "TIFF compression 7 (JPEG) of the scan not kept: written as LZW (lossless) with the horizontal predictor"
    assert note in out.notes
    assert note in read_provenance(out.outputs[0]).notes  # in the output's oldphoto:Notes too


def test_format_tiff_from_a_png_is_lzw_with_predictor(tmp_path):
    img = random_image(30, 20, 3, np.uint8, seed=13)
    src = write_png(tmp_path / "scan.png", img)
    out = process_file(src, tmp_path / "out" / "scan", cfg(format="tiff"), Models(restorer=Identity()))
    assert out.outputs == [tmp_path / "out" / "scan.tif"]
    assert _compression(out.outputs[0]) == (5, 2)
    np.testing.assert_array_equal(read_any(out.outputs[0]), img)
