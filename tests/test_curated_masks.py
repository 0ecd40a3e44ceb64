"""`restore --masks DIR`: a curator's corrected defect masks (laid out as --only-mask writes them) replace the
detector's, with the real pipeline and io on small scans and stand-in models (restore_samples)."""

import hashlib
import json
import os

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import oldphoto.pipeline as pipeline
from oldphoto.config import RestoreConfig, TileConfig
from oldphoto.io import read_provenance, reader
from oldphoto.io.mask_file import MaskError, MaskId, read_mask
from oldphoto.ops.masks import dilate
from oldphoto.state import STATE_NAME, Record, RunState
from restore_samples import WhiteDetector, real_scans, report_of, run


class Grey:
    """A "restorer" that changes every pixel it is given: only those allowed to change may show it."""

    def __init__(self):
        self.masks = []  # the masks it was handed, per batch

    def __call__(self, tiles, mask):
        self.masks.append(mask.clone())
        return torch.full_like(tiles, 0.5)


class CountingDetector(WhiteDetector):
    """WhiteDetector that counts the tiles it sees."""

    def __init__(self):
        self.tiles = 0

    def __call__(self, tiles):
        self.tiles += len(tiles)
        return super().__call__(tiles)


@pytest.fixture
def models(monkeypatch):
    """The models every load gives in this test: a counting white-pixel detector and the Grey restorer."""
    loaded = pipeline.Models(detector=CountingDetector(), restorer=Grey())
    monkeypatch.setattr(pipeline, "load_models", lambda cfg, device: loaded)
    return loaded


@pytest.fixture
def scans(tmp_path):
    """(scans folder, portrait (70, 90, 3) uint16 with a white scratch in rows 10-11, street (50, 40) uint8 with a
    white column 5): real_scans without its damaged JPEG."""
    root, rgb16, gray8 = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    return root, rgb16, gray8


def curated(shape) -> np.ndarray:
    """A curator's mask of `shape` (H, W): a missed blotch the detector would never flag (no white there), and none
    of the white scratch (erased as a false alarm)."""
    mask = np.zeros(shape, np.uint8)
    mask[30:36, 20:27] = 255
    mask[50, 60] = 255
    return mask


def save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def grown(mask: np.ndarray, radius: int) -> np.ndarray:
    return dilate(torch.from_numpy(mask > 0).float()[None, None], radius)[0, 0].numpy() > 0


def restore(root, out, *more):
    return run("restore", root, "--out", out, "--scope", "defects", "--tile", 128, "--overlap", 16, *more)


def test_scope_defects_changes_exactly_the_curated_mask_grown_and_the_detector_never_runs(tmp_path, scans, models):
    root, rgb16, gray8 = scans
    review, out = tmp_path / "review", tmp_path / "restored"
    mask = save(review / "box 2" / "portrait.mask.png", curated((70, 90)))
    r = restore(root, out, "--masks", review, "--save-mask")
    assert r.exit_code == 0, r.output
    restored = tifffile.imread(out / "box 2" / "portrait.tif")
    acted = grown(curated((70, 90)), 1)  # --mask-dilate 1, the default when restoring, as for the detector's
    changed = (restored != rgb16).any(axis=2)
    assert np.array_equal(changed, acted)  # those pixels and no others: the white scratch stays as scanned
    assert np.array_equal(np.asarray(Image.open(out / "box 2" / "portrait.mask.png")) == 255, acted)
    files = {f["relative"]: f for f in report_of(out)["files"]}
    portrait, street = files["box 2/portrait.tif"], files["street.png"]
    assert portrait["mask_source"] == str(mask)
    assert portrait["mask_coverage"] == pytest.approx(100 * acted.sum() / acted.size)
    # the scan without a mask file is restored with the detector's, and says so
    assert street["mask_source"] == "detector"
    assert f"no curated mask {review / 'street'}.mask.png: restored with the detector's mask" in street["notes"]
    white = grown((gray8 == 255).astype(np.uint8), 1)
    assert np.array_equal(np.asarray(Image.open(out / "street.png")) != gray8, white)
    assert models.detector.tiles == 1  # street's one tile; none of the portrait's
    # provenance: the curated mask and its sha256, in the restoration's XMP
    prov = read_provenance(out / "box 2" / "portrait.tif")
    digest = hashlib.sha256(mask.read_bytes()).hexdigest()
    assert (prov.mask_file, prov.mask_sha256) == ("box 2/portrait.mask.png", digest)
    assert read_provenance(out / "street.png").mask_sha256 is None


def test_mask_dilate_applies_to_the_curated_mask(tmp_path, scans, models):
    root, rgb16, _ = scans
    review, out = tmp_path / "review", tmp_path / "restored"
    save(review / "box 2" / "portrait.mask.png", curated((70, 90)))
    assert restore(root, out, "--masks", review, "--mask-dilate", 0).exit_code == 0
    assert np.array_equal((tifffile.imread(out / "box 2" / "portrait.tif") != rgb16).any(axis=2),
                          curated((70, 90)) > 0)
    # the restorer was handed the mask as drawn, as floats 0 / 1
    handed = torch.cat(models.restorer.masks)
    assert set(handed.unique().tolist()) <= {0.0, 1.0}


def test_a_turned_scans_mask_is_drawn_upright_and_acts_on_the_upright_pixels(tmp_path, models):
    root, review, out = tmp_path / "scans", tmp_path / "review", tmp_path / "restored"
    root.mkdir()
    stored = np.random.default_rng(3).integers(0, 200, (40, 60), np.uint8)  # no white: the detector flags nothing
    tifffile.imwrite(root / "turned.tif", stored, extratags=[(274, "H", 1, 6, False)])  # shown turned 90 clockwise
    upright = np.rot90(stored, -1)  # (60, 40), as the scan is shown and --only-mask writes its mask
    mask = np.zeros(upright.shape, np.uint8)
    mask[5:9, 30:38] = 255  # near the top right of the upright photo: nowhere near it in the stored one
    save(review / "turned.mask.png", mask)
    assert restore(root, out, "--masks", review, "--mask-dilate", 0).exit_code == 0
    restored = reader.read(out / "turned.tif", 10**6).pixels[..., 0]
    assert np.array_equal(restored != upright, mask > 0)
    save(review / "turned.mask.png", mask.T.copy())  # drawn on the stored pixels: refused, one line
    r = restore(root, tmp_path / "again", "--masks", review)
    assert r.exit_code == 1 and f"mask {review / 'turned.mask.png'} is 60 x 40, the scan is 40 x 60" in r.stderr


def test_a_mask_of_the_wrong_size_fails_its_scan_alone_in_one_line(tmp_path, scans, models):
    root, rgb16, gray8 = scans
    review, out = tmp_path / "review", tmp_path / "restored"
    save(review / "box 2" / "portrait.mask.png", curated((70, 90)))
    wrong = save(review / "street.mask.png", np.zeros((40, 50), np.uint8))  # turned: 50 x 40, the scan is 40 x 50
    dry = restore(root, out, "--masks", review, "--dry-run")  # from the headers alone
    assert dry.exit_code == 1 and dry.stdout.splitlines()[1] == (
        f"fail        street.png: mask {wrong} is 50 x 40, the scan is 40 x 50"), dry.output
    r = restore(root, out, "--masks", review, "-q")
    assert r.exit_code == 1
    assert r.stderr == f"error: {root / 'street.png'}: mask {wrong} is 50 x 40, the scan is 40 x 50\n"
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert files["street.png"]["status"] == "failed" and files["box 2/portrait.tif"]["status"] == "done"
    assert not (out / "street.png").exists()


def test_a_gray_rgb_mask_is_taken_and_a_coloured_one_refused(tmp_path, scans, models):
    root, rgb16, gray8 = scans
    review, out = tmp_path / "review", tmp_path / "restored"
    rgb = np.repeat(curated((70, 90))[..., None], 3, axis=2)
    save(review / "box 2" / "portrait.mask.png", np.dstack([rgb, np.full((70, 90), 255, np.uint8)]))  # RGBA
    coloured = np.zeros((50, 40, 3), np.uint8)
    coloured[7, 3] = (255, 0, 0)  # painted red, not white
    bad = save(review / "street.mask.png", coloured)
    r = restore(root, out, "--masks", review, "-q")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"error: {root / 'street.png'}: mask {bad} is not gray: pixel (3, 7) is (255, 0, 0)")
    assert np.array_equal((tifffile.imread(out / "box 2" / "portrait.tif") != rgb16).any(axis=2),
                          grown(curated((70, 90)), 1))


def test_read_mask_takes_half_of_full_scale_at_any_depth(tmp_path):
    values = np.array([[0, 127, 128, 255]], np.uint8)
    assert read_mask(save(tmp_path / "a.png", values), "a.png", (4, 1), 100)[0].tolist() == [[0, 0, 1, 1]]
    deep = np.array([[0, 32767, 32768, 65535]], np.uint16)
    tifffile.imwrite(tmp_path / "b.tif", deep)
    defects, identity = read_mask(tmp_path / "b.tif", "b.tif", (4, 1), 100)
    assert defects.tolist() == [[0, 0, 1, 1]]
    data = (tmp_path / "b.tif").read_bytes()
    assert identity == MaskId("b.tif", len(data), os.stat(tmp_path / "b.tif").st_mtime_ns,
                              hashlib.sha256(data).hexdigest())
    save(tmp_path / "c.png", np.array([[False, True, True, False]]))  # 1-bit
    assert read_mask(tmp_path / "c.png", "c.png", (4, 1), 100)[0].tolist() == [[0, 1, 1, 0]]
    Image.fromarray(np.zeros((1, 4, 3), np.uint8)).save(tmp_path / "d.jpg")
    with pytest.raises(MaskError, match=r"d.jpg is a JPEG: a mask is a PNG or TIFF"):
        read_mask(tmp_path / "d.jpg", "d.jpg", (4, 1), 100)


def test_a_stroke_erased_to_transparency_is_erased_whatever_colour_is_kept_under_it(tmp_path):
    rgba = np.full((1, 4, 4), 255, np.uint8)  # white strokes; an editor's eraser took the alpha of the first two
    rgba[0, :, 3] = [0, 127, 128, 255]
    assert read_mask(save(tmp_path / "a.png", rgba), "a.png", (4, 1), 100)[0].tolist() == [[0, 0, 1, 1]]
    rgba[0, 0, :3] = (12, 200, 3)  # no colour shows where it is transparent
    assert read_mask(save(tmp_path / "b.png", rgba), "b.png", (4, 1), 100)[0].tolist() == [[0, 0, 1, 1]]
    la = np.zeros((1, 2, 2), np.uint16)
    la[0] = [[65535, 32767], [65535, 65535]]  # 16-bit gray + alpha: just under half of full scale, then full
    tifffile.imwrite(tmp_path / "c.tif", la, photometric="minisblack", extrasamples=[2], planarconfig="contig")
    assert read_mask(tmp_path / "c.tif", "c.tif", (2, 1), 100)[0].tolist() == [[0, 1]]


def test_a_mask_is_decoded_within_the_decoder_memory_reservation(tmp_path, monkeypatch):
    from oldphoto.io import buffers
    path = save(tmp_path / "a.png", np.zeros((3, 4), np.uint8))
    monkeypatch.setattr(buffers, "available_memory", lambda meminfo=None: 1)
    with pytest.raises(MaskError) as e:
        read_mask(path, "a.png", (4, 3), 100)
    assert e.value.reason.startswith(f"mask {path} cannot be used: needs about ")
    assert e.value.reason.endswith("available now: not read")
    assert buffers.DECODERS.held() == 0


def test_rerun_skips_and_a_mask_edited_added_or_removed_redoes_its_scan(tmp_path, scans, models):
    root, rgb16, gray8 = scans
    review, out = tmp_path / "review", tmp_path / "restored"
    mask = save(review / "box 2" / "portrait.mask.png", curated((70, 90)))
    assert restore(root, out, "--masks", review).exit_code == 0

    def statuses(r):
        assert r.exit_code == 0, r.output
        return {f["relative"]: (f["status"], [n for n in f["notes"] if "mask" in n]) for f in report_of(out)["files"]}

    assert statuses(restore(root, out, "--masks", review)) == {"box 2/portrait.tif": ("skipped", []),
                                                               "street.png": ("skipped", [])}
    assert report_of(out)["files"][0]["mask_source"] == str(mask)
    # the mask folder moved: whether masks are used is a setting, where they are is not
    os.rename(review, tmp_path / "moved")
    review = tmp_path / "moved"
    assert statuses(restore(root, out, "--masks", review))["box 2/portrait.tif"] == ("skipped", [])
    mask = review / "box 2" / "portrait.mask.png"
    # touched (a save without a change): the same bytes, skipped, the new mtime remembered
    os.utime(mask, ns=(1_000_000_000, 1_000_000_000))
    assert statuses(restore(root, out, "--masks", review))["box 2/portrait.tif"] == (
        "skipped", ["mask box 2/portrait.mask.png touched but unchanged (same sha256)"])
    # edited: a scratch painted in, same size of file or not
    edited = curated((70, 90))
    edited[10:12, :] = 255
    save(mask, edited)
    dry = run("restore", root, "--out", out, "--scope", "defects", "--tile", 128, "--overlap", 16, "--masks", review,
              "--dry-run")
    assert dry.stdout.splitlines()[:2] == ["restore     box 2/portrait.tif  (mask changed: box 2/portrait.mask.png)",
                                           "up to date  street.png"], dry.output
    assert statuses(restore(root, out, "--masks", review)) == {
        "box 2/portrait.tif": ("done", ["redone: mask changed: box 2/portrait.mask.png"]),
        "street.png": ("skipped", [])}
    assert (tifffile.imread(out / "box 2" / "portrait.tif") != rgb16).any(axis=2)[10:12].all()
    # added for the scan that had none, removed from the one that had one
    save(review / "street.mask.png", np.zeros((50, 40), np.uint8))
    os.unlink(mask)
    assert statuses(restore(root, out, "--masks", review)) == {
        "box 2/portrait.tif": ("done", ["redone: mask removed: box 2/portrait.mask.png",
                                        f"no curated mask {review / 'box 2' / 'portrait'}.mask.png: restored with the "
                                        "detector's mask"]),
        "street.png": ("done", ["redone: mask added: street.mask.png"])}
    assert not (tifffile.imread(out / "box 2" / "portrait.tif") != rgb16).any(axis=2)[30:36, 20:27].any()
    assert np.array_equal(np.asarray(Image.open(out / "street.png")), gray8)  # an empty mask: nothing to change
    # without --masks: the detector's everywhere; the scan restored with it already is up to date
    assert statuses(restore(root, out)) == {
        "box 2/portrait.tif": ("skipped", []),
        "street.png": ("done", ["redone: curated mask not in use (no --masks): street.mask.png"])}


def test_masks_given_at_last_redo_only_the_scans_that_have_one(tmp_path, scans, models):
    root, rgb16, gray8 = scans
    out = tmp_path / "restored"
    assert restore(root, out).exit_code == 0  # the whole collection, with the detector's masks
    review = tmp_path / "review"
    save(review / "box 2" / "portrait.mask.png", curated((70, 90)))
    r = restore(root, out, "--masks", review)
    assert r.exit_code == 0, r.output
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert files["street.png"]["status"] == "skipped" and files["street.png"]["mask_source"] == "detector"
    assert files["box 2/portrait.tif"]["notes"][0] == "redone: mask added: box 2/portrait.mask.png"
    assert "masks" not in read_provenance(out / "street.png").parameters["settings"]


def test_masks_with_only_mask_or_beside_the_outputs_or_the_scans_is_a_usage_error(tmp_path, scans, models):
    root, _, _ = scans
    review = tmp_path / "review"
    review.mkdir()
    r = run("restore", root, "--out", tmp_path / "out", "--only-mask", "--masks", review)
    assert r.exit_code == 2 and "--masks restores with curated masks; --only-mask writes the detector's own" in r.output
    r = run("restore", root, "--out", review, "--masks", review)
    assert r.exit_code == 2 and "are the same folder or one holds the other" in r.output
    r = run("restore", root, "--out", tmp_path / "out", "--masks", root / "box 2")
    assert r.exit_code == 2 and "is inside the input folder" in r.output
    assert not (tmp_path / "out").exists()


def test_settings_fingerprint_is_the_same_with_masks_or_without(tmp_path):
    plain = RestoreConfig().output_settings()
    assert "masks" not in plain and "masks" not in RestoreConfig().settings()  # earlier outputs stay current
    with_masks = RestoreConfig(masks=tmp_path / "review")
    assert with_masks.output_settings() == plain  # which mask each scan had is its record's (and its XMP's)
    assert with_masks.settings()["masks"] == str(tmp_path / "review")  # the report says where


def test_a_record_keeps_its_mask_and_older_records_without_one_still_read(tmp_path):
    mask = MaskId("box 2/a.mask.png", 123, 456, "ab" * 32)
    rec = Record(source="/s/a.tif", size=1, mtime_ns=2, sha256="cd" * 32, fingerprint="f", outputs=(), mask=mask)
    line = json.loads(rec.to_json("a.tif"))
    assert line["mask"] == {"name": "box 2/a.mask.png", "size": 123, "mtime_ns": 456, "sha256": "ab" * 32}
    assert Record.from_dict(line) == rec
    del line["mask"]  # as every record made before --masks existed, and those without a curated mask
    assert Record.from_dict(line).mask is None
    assert "mask" not in json.loads(Record.from_dict(line).to_json("a.tif"))
    # through the state file
    state = RunState.open(tmp_path)
    state.record("a.tif", rec)
    state.close()
    assert RunState.load(tmp_path).records["a.tif"].mask == mask
    assert '"mask"' in (tmp_path / STATE_NAME).read_text()


def test_outputs_made_with_the_same_mask_are_recognised_after_a_lost_state_file(tmp_path, scans, models):
    root, _, _ = scans
    review, out = tmp_path / "review", tmp_path / "restored"
    mask = save(review / "box 2" / "portrait.mask.png", curated((70, 90)))
    assert restore(root, out, "--masks", review).exit_code == 0
    os.unlink(out / STATE_NAME)
    assert restore(root, out, "--masks", review).exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]
    assert RunState.load(out).records["box 2/portrait.tif"].mask.sha256 == hashlib.sha256(mask.read_bytes()).hexdigest()
    # made with another mask than the one there now: redone, not taken for current
    os.unlink(out / STATE_NAME)
    edited = curated((70, 90))
    edited[0, 0] = 255
    save(mask, edited)
    assert restore(root, out, "--masks", review).exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["done", "skipped"]


class MaskOut:
    """A "restorer" whose output is the mask it is handed: the restoration then shows where each tile's mask lay."""

    def __call__(self, tiles, mask):
        return mask.expand(-1, 3, -1, -1).clone()


class Nearest:
    def __init__(self, scale):
        self.scale = scale

    def __call__(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")


@pytest.mark.parametrize("channels, dtype", [(1, np.uint8), (3, np.uint16)])
@pytest.mark.parametrize("margin, scale", [(0, 1), (7, 2)])
def test_each_tiles_mask_lies_on_its_pixels_across_tiles_the_edge_margin_and_upscaling(tmp_path, channels, dtype,
                                                                                      margin, scale):
    rng = np.random.default_rng(3)
    h, w = 197, 331  # 2 x 3 tiles of 128 with an overlap of 32, and more with the margin
    pixels = rng.integers(0, 200, (h, w, channels)).astype(dtype)
    src = tmp_path / "scan.tif"
    tifffile.imwrite(src, pixels if channels == 3 else pixels[..., 0])
    mask = (rng.random((h, w)) > 0.97).astype(np.uint8) * 255
    mask[0, :] = mask[:, -1] = 255  # on the edges the margin mirrors
    path = save(tmp_path / "masks" / "scan.mask.png", mask)
    cfg = RestoreConfig(device="cpu", tile=TileConfig(128, 32, 3, edge_margin=margin), tone="tile", upscale=scale,
                        mask_dilate=0, masks=tmp_path / "masks")
    models = pipeline.Models(restorer=MaskOut(), upscaler=Nearest(scale) if scale > 1 else None)
    done = pipeline.process_file(src, tmp_path / "out" / "scan", cfg, models, mask=path)
    out = tifffile.imread(done.outputs[0]).reshape(scale * h, scale * w, -1)[..., 0]
    want = np.repeat(np.repeat(mask > 0, scale, 0), scale, 1)
    assert set(np.unique(out).tolist()) <= {0, int(np.iinfo(dtype).max)}
    assert np.array_equal(out > 0, want)
    assert done.mask_coverage == pytest.approx(100 * (mask > 0).mean())
