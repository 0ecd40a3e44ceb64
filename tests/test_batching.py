"""Device batches that mix the tiles of several photos (oldphoto/batching.py), on their own and in the engine."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tifffile
import torch

from oldphoto.batching import BatchKey, OutOfMemoryAtBatchOne, TileBatcher
from oldphoto.config import RestoreConfig, TileConfig
from oldphoto.ops.tiling import grid, padded_size
from oldphoto.pipeline import Models, new_batcher, process_file

KEY = BatchKey(tile=8, only_mask=False, threshold=0.5, mask_dilate=0, upscale=1)


class Invert:
    """Restorer 1 - x, recording each call's batch size (results show whose tile went where)."""

    def __init__(self, delay=0.0):
        self.sizes: list[int] = []
        self.delay = delay

    def __call__(self, x, mask):
        self.sizes.append(len(x))
        time.sleep(self.delay)
        return 1.0 - x


def tiles(n, seed):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def submit(b, n, owner, seed):
    x = tiles(n, seed)
    return x, b.submit(x, KEY, owner, {}, [])


def test_one_batch_serves_the_tiles_of_two_owners():
    stage = Invert()
    b = TileBatcher(Models(restorer=stage), "cpu", batch_size=8)
    xa, ta = submit(b, 3, "a", 1)
    xb, tb = submit(b, 2, "b", 2)
    images, probs = b.collect(ta)
    assert stage.sizes == [5]  # b's tiles rode along with a's
    assert b.stats() == {"calls": 1, "tiles": 5, "tiles_per_call": 5.0, "shared_calls": 1}
    assert tb.done and b.pending("b") == 0
    torch.testing.assert_close(torch.stack(images), 1 - xa, rtol=0, atol=0)
    torch.testing.assert_close(torch.stack(b.collect(tb)[0]), 1 - xb, rtol=0, atol=0)
    assert probs == [None] * 3 and stage.sizes == [5]  # no detector; nothing ran twice


def test_batches_keep_queue_order_and_size():
    stage = Invert()
    b = TileBatcher(Models(restorer=stage), "cpu", batch_size=4)
    xs = [submit(b, n, owner, i) for i, (n, owner) in enumerate([(3, "a"), (3, "b"), (3, "a")])]
    got = torch.stack(b.collect(xs[2][1])[0])  # the last ticket: everything before it runs first
    assert stage.sizes == [4, 4, 1]
    torch.testing.assert_close(got, 1 - xs[2][0], rtol=0, atol=0)
    assert all(t.done for _, t in xs)


def test_stage_time_is_shared_by_tiles():
    b = TileBatcher(Models(restorer=Invert(delay=0.05)), "cpu", batch_size=8)
    sa, sb = {}, {}
    ta = b.submit(tiles(3, 1), KEY, "a", sa, [])
    tb = b.submit(tiles(1, 2), KEY, "b", sb, [])
    b.collect(tb)
    assert ta.done and "restore" not in sa  # the other photo's thread ran them; they are added as "a" collects
    b.collect(ta)
    assert sa["restore"] >= 0.03
    assert sa["restore"] == pytest.approx(3 * sb["restore"])


def test_a_stage_error_reaches_every_owner_in_the_batch():
    def boom(x, mask):
        raise RuntimeError("on purpose")

    b = TileBatcher(Models(restorer=boom), "cpu", batch_size=8)
    _, ta = submit(b, 2, "a", 1)
    _, tb = submit(b, 2, "b", 2)
    for t in (ta, tb):
        with pytest.raises(RuntimeError, match="on purpose"):
            b.collect(t)


def test_nan_in_one_photos_tiles_fails_that_photo_alone():
    def nan_on_white(x, mask):
        y = 1 - x
        y[x.flatten(1).min(1).values > 0.999] = float("nan")  # e.g. a numerical breakdown on one photo's content
        return y

    b = TileBatcher(Models(restorer=nan_on_white), "cpu", batch_size=8)
    ta = b.submit(torch.ones(2, 3, 8, 8), KEY, "white", {}, [])
    xb, tb = submit(b, 3, "b", 2)
    with pytest.raises(ValueError, match="restorer stage returned non-finite values"):
        b.collect(ta)
    images, _ = b.collect(tb)
    assert torch.allclose(torch.stack(images), 1 - xb)


def test_cancel_drops_only_that_owners_tiles():
    stage = Invert()
    b = TileBatcher(Models(restorer=stage), "cpu", batch_size=8)
    _, ta = submit(b, 3, "a", 1)
    xb, tb = submit(b, 2, "b", 2)
    b.cancel("a")
    assert b.pending("a") == 0 and b.pending("b") == 2
    with pytest.raises(RuntimeError, match="cancelled"):
        b.collect(ta)
    torch.testing.assert_close(torch.stack(b.collect(tb)[0]), 1 - xb, rtol=0, atol=0)
    assert stage.sizes == [2]


def test_out_of_memory_halves_the_batch_for_the_run_then_gives_up_at_one():
    class OutOfMemoryAbove:
        def __init__(self, limit):
            self.limit, self.sizes = limit, []

        def __call__(self, x, mask):
            self.sizes.append(len(x))
            if len(x) > self.limit:
                raise torch.OutOfMemoryError("simulated")
            return x

    stage = OutOfMemoryAbove(limit=2)
    b = TileBatcher(Models(restorer=stage), "cpu", batch_size=8)
    notes: list[str] = []
    t = b.submit(tiles(4, 1), KEY, "a", {}, notes)
    b.submit(tiles(3, 4), KEY, "a", {}, notes)  # a second row of the same photo
    b.collect(t)
    assert stage.sizes == [7, 3] + [1] * 4  # 7 // 2 = 3, still too many, 3 // 2 = 1; until the first row is done
    assert b.batch_for(8) == 1 and notes == ["out of device memory: batch size reduced to 3",
                                             "out of device memory: batch size reduced to 1"]  # once per photo
    assert b.batch_for(16) == 8  # other tile sizes start afresh
    never = TileBatcher(Models(restorer=OutOfMemoryAbove(limit=0)), "cpu", batch_size=2)
    t = never.submit(tiles(2, 3), KEY, "a", {}, [])
    with pytest.raises(OutOfMemoryAtBatchOne):
        never.collect(t)


def test_submit_checks_the_tile_shape():
    b = TileBatcher(Models(restorer=Invert()), "cpu", batch_size=2)
    with pytest.raises(ValueError, match=r"expected tiles \(n, 3, 8, 8\), got \(2, 1, 8, 8\)"):
        b.submit(torch.zeros(2, 1, 8, 8), KEY, "a", {}, [])
    with pytest.raises(ValueError, match="at least 1"):
        TileBatcher(Models(), "cpu", batch_size=0)


def test_photos_in_flight_share_batches_and_each_gets_its_own_result(tmp_path):
    """Two small photos processed at once: some device call holds tiles of both, and each output equals
    the one the photo gets alone."""
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 65535, (150, 100 + 30 * i, 3), dtype=np.uint16) for i in range(2)]
    srcs = []
    for i, img in enumerate(imgs):
        srcs.append(tmp_path / f"p{i}.tif")
        tifffile.imwrite(srcs[-1], img)
    # tone "tile": an inverting stage has no monotone tone curve for even_tone to keep
    cfg = RestoreConfig(tile=TileConfig(size=128, overlap=32, batch_size=16), tone="tile")
    stage = Invert()
    models = Models(restorer=stage)
    batcher = new_batcher(cfg, models)
    barrier = threading.Barrier(2, timeout=30)

    def stop_after_first_row():
        # called before each tile row: the second call waits until both photos have queued their first row
        calls = getattr(local, "calls", 0) + 1
        local.calls = calls
        if calls == 2:
            barrier.wait()
        return False

    local = threading.local()
    results: dict[int, object] = {}

    def work(i):
        results[i] = process_file(srcs[i], tmp_path / "out" / f"p{i}", cfg, models,
                                  should_stop=stop_after_first_row, batcher=batcher)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1]
    assert batcher.shared_calls >= 1  # tiles of both photos in one device call
    grid_tiles = [len(grid(padded_size(h, 128), 128, 32)) * len(grid(padded_size(w, 128), 128, 32))
                  for h, w, _ in (im.shape for im in imgs)]
    assert grid_tiles == [2, 4] and batcher.tiles == sum(stage.sizes) == 6  # every tile ran once
    for i, img in enumerate(imgs):
        alone = process_file(srcs[i], tmp_path / "alone" / f"p{i}", cfg, Models(restorer=Invert()))
        together = tifffile.imread(results[i].outputs[0])
        np.testing.assert_array_equal(together, tifffile.imread(alone.outputs[0]))
        np.testing.assert_array_equal(together, 65535 - img)
        assert results[i].seconds["restore"] > 0


def test_a_batcher_for_other_models_is_refused(tmp_path):
    src = tmp_path / "x.tif"
    tifffile.imwrite(src, np.zeros((20, 20, 3), np.uint8))
    cfg = RestoreConfig()
    with pytest.raises(Exception, match="other models"):
        process_file(src, tmp_path / "o" / "x", cfg, Models(restorer=Invert()),
                     batcher=new_batcher(cfg, Models(restorer=Invert())))
