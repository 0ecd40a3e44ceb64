"""Outputs changed since oldphoto wrote them (a curator's corrected mask, a retouched restoration, captions a
cataloguing tool wrote into the restoration's sidecar) are never replaced without --overwrite: a file otherwise up to
date is skipped with a note, one to be redone fails in one line, nothing written. The real pipeline and io, with the
stand-in models of restore_samples."""

import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from restore_samples import CAPTION_SIDECAR, full_disk_recording, real_scans, report_of, run
from restore_samples import stand_in_models as use_stand_in_models

OPTS = ("--tile", 128, "--overlap", 16, "--jobs", 1)


@pytest.fixture
def stand_in_models(monkeypatch):
    use_stand_in_models(monkeypatch)


@pytest.fixture
def scans(tmp_path):
    """(scans folder, its portrait's pixels): real_scans without its damaged JPEG."""
    root, rgb16, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    return root, rgb16


def entry(out, rel) -> dict:
    return next(f for f in report_of(out)["files"] if f["relative"] == rel)


def kept(path, size, written) -> str:
    return f"{path} changed since oldphoto wrote it ({size} bytes, {written} as written): kept; --overwrite replaces it"


def refused(path, why) -> str:
    return f"{path} was changed since oldphoto wrote it and would be replaced ({why}): move it away, or use --overwrite"


def files_of(folder) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")
            and p.name != "report.json"}


def test_a_curated_mask_survives_the_review_run_again_and_fails_its_scan_when_that_changes(scans, tmp_path,
                                                                                         stand_in_models):
    """The README's workflow: review, correct a mask in place, review again (cron, new scans): the mask is kept, with
    a note each run; the scan replaced: that file fails in one line, nothing written for it; --overwrite replaces."""
    root, rgb16 = scans
    review = tmp_path / "review"
    assert run("restore", root, "--out", review, "--only-mask", *OPTS).exit_code == 0
    mask = review / "box 2" / "portrait.mask.png"
    written = mask.stat().st_size
    corrected = np.asarray(Image.open(mask)).copy()
    corrected[30:40, 20:60] = 255  # a missed stain painted in
    Image.fromarray(corrected).save(mask)
    size = mask.stat().st_size
    assert size != written
    before = files_of(review)

    for _ in range(2):  # said on every run: the folder holds work that is not oldphoto's
        r = run("restore", root, "--out", review, "--only-mask", *OPTS)
        assert r.exit_code == 0, r.output
        portrait = entry(review, "box 2/portrait.tif")
        assert portrait["status"] == "skipped" and kept(mask, size, written) in portrait["notes"]
        # the mask's recorded digest is not that of the file there; the overlay's still is
        assert portrait["output_sha256"][0] is None and portrait["output_sha256"][1] is not None
        assert files_of(review) == before
    r = run("restore", root, "--out", review, "--only-mask", *OPTS, "--dry-run")
    assert r.exit_code == 0 and f"up to date  box 2/portrait.tif  ({kept(mask, size, written)})" in r.output

    restored = tmp_path / "restored"  # the curated mask is the one restored with
    assert run("restore", root, "--out", restored, "--masks", review, *OPTS).exit_code == 0
    assert entry(restored, "box 2/portrait.tif")["mask_source"] == str(mask)

    rgb16[40:42, :, :] = 65535  # the scan replaced (rescanned)
    tifffile.imwrite(root / "box 2" / "portrait.tif", rgb16, photometric="rgb")
    line = refused(mask, "source changed")
    r = run("restore", root, "--out", review, "--only-mask", *OPTS, "--dry-run")
    assert r.exit_code == 1 and f"fail        box 2/portrait.tif: {line}" in r.output
    r = run("restore", root, "--out", review, "--only-mask", *OPTS)
    assert r.exit_code == 1 and f"{root / 'box 2' / 'portrait.tif'}: {line}" in r.stderr
    portrait = entry(review, "box 2/portrait.tif")
    assert (portrait["status"], portrait["error"]) == ("failed", line)
    assert entry(review, "street.png")["status"] == "skipped"
    assert files_of(review) == before  # neither the mask nor the overlay beside it written

    assert run("restore", root, "--out", review, "--only-mask", *OPTS, "--overwrite").exit_code == 0
    assert mask.read_bytes() != before[mask] and entry(review, "box 2/portrait.tif")["status"] == "done"
    assert run("restore", root, "--out", review, "--only-mask", *OPTS).exit_code == 0
    assert entry(review, "box 2/portrait.tif")["notes"] == []


def test_a_retouched_restoration_is_kept_and_told_from_a_touch_by_its_sha256_when_it_would_be_redone(
        scans, tmp_path, stand_in_models):
    """Another size: kept (a stat tells). The same size at another mtime: a skip reads nothing; a settings change
    reads it: other bytes fail the file, the same bytes merely touched are redone as ever. A redo that writes other
    names (--format) leaves it where it is."""
    root, _ = scans
    out = tmp_path / "out"
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    photo = out / "street.png"
    made = photo.read_bytes()
    retouched = made + b"retouched"  # bytes after IEND: a reader never sees them, a stat does
    photo.write_bytes(retouched)
    r = run("restore", root, "--out", out, *OPTS)
    assert r.exit_code == 0 and kept(photo, len(retouched), len(made)) in entry(out, "street.png")["notes"]
    assert run("restore", root, "--out", out, *OPTS, "--mask-dilate", 0).exit_code == 1
    assert entry(out, "street.png")["error"] == refused(photo, "settings changed")
    assert photo.read_bytes() == retouched

    stamp = photo.stat().st_mtime_ns  # retouched at its size: only the bytes tell
    same_size = made.replace(b"xmp.iid:", b"xmp.iiD:", 1)
    assert same_size != made and len(same_size) == len(made)
    photo.write_bytes(same_size)
    os.utime(photo, ns=(stamp + 10**9, stamp + 10**9))
    r = run("restore", root, "--out", out, *OPTS)
    assert r.exit_code == 0 and entry(out, "street.png")["status"] == "skipped"
    assert not any("changed since" in n for n in entry(out, "street.png")["notes"])
    assert run("restore", root, "--out", out, *OPTS, "--mask-dilate", 0).exit_code == 1
    assert entry(out, "street.png")["error"] == refused(photo, "settings changed")
    assert photo.read_bytes() == same_size

    photo.write_bytes(made)  # the very bytes oldphoto wrote, at another mtime: a touch
    os.utime(photo, ns=(stamp + 2 * 10**9, stamp + 2 * 10**9))
    assert run("restore", root, "--out", out, *OPTS, "--mask-dilate", 0).exit_code == 0
    street = entry(out, "street.png")
    assert street["status"] == "done" and "redone: settings changed" in street["notes"]

    photo.write_bytes(retouched)  # another format writes beside it: it stays where it is, no reason to fail
    assert run("restore", root, "--out", out, *OPTS, "--mask-dilate", 0, "--format", "tiff").exit_code == 0
    assert photo.read_bytes() == retouched and entry(out, "street.png")["outputs"] == [str(out / "street.tif")]


def test_captions_written_into_the_restorations_sidecar_are_kept(scans, tmp_path, stand_in_models):
    """A cataloguing tool wrote into the sidecar carried beside the restoration: kept; the scan's sidecar corrected
    since, the file fails rather than rewrite it; --overwrite writes it anew."""
    root, _ = scans
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street"))
    out = tmp_path / "out"
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    carried = out / "street.png.xmp"
    written = carried.stat().st_size
    tagged = carried.read_text().replace("Main street", "Main street, tagged in the catalogue")
    carried.write_text(tagged)
    r = run("restore", root, "--out", out, *OPTS)
    assert r.exit_code == 0 and kept(carried, carried.stat().st_size, written) in entry(out, "street.png")["notes"]
    assert entry(out, "street.png")["output_sha256"][-1] is None

    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1933"))
    r = run("restore", root, "--out", out, *OPTS, "--dry-run")
    assert r.exit_code == 1 and refused(carried, "sidecar changed: street.png.xmp") in r.output
    assert run("restore", root, "--out", out, *OPTS).exit_code == 1
    assert entry(out, "street.png")["error"] == refused(carried, "sidecar changed: street.png.xmp")
    assert carried.read_text() == tagged
    assert run("restore", root, "--out", out, *OPTS, "--overwrite").exit_code == 0
    assert "Main street, 1933" in carried.read_text()


# a file the state file has, recognised by its outputs' XMP: not the note of a lost state file
RECOGNISED = "outputs put in place by a run that could not record them: recognised from the provenance in their XMP"
LOST = "not in the state file: recognised from the provenance in its outputs' XMP"


def next_second():
    """Sleep into the next whole second: a record's finished and an output's stEvt:when are written in seconds, and
    an output counts as made after its record only in a later second."""
    import time

    time.sleep(1.01 - time.time() % 1)


def test_outputs_a_run_put_in_place_but_could_not_record_are_its_own_not_edits(scans, tmp_path, stand_in_models):
    """A run killed between its renames and its records (SIGKILL, power loss): the state file as it was before, the
    outputs those of the new settings. The next run with them recognises every file from its outputs' XMP (this scan,
    these settings and models, made after the record), records it and skips it; nothing is written or failed."""
    from oldphoto.state import STATE_NAME

    root, _ = scans
    out = tmp_path / "out"
    assert run("restore", root, "--out", out, "--save-mask", *OPTS).exit_code == 0
    before = (out / STATE_NAME).read_bytes()
    next_second()
    assert run("restore", root, "--out", out, "--save-mask", *OPTS, "--mask-dilate", 0).exit_code == 0
    (out / STATE_NAME).write_bytes(before)  # killed before it could record them
    photo = out / "street.png"
    photo.write_bytes(photo.read_bytes() + b"retouched")  # an edit that keeps the packet looks like oldphoto's own
    made = files_of(out)
    r = run("restore", root, "--out", out, "--save-mask", *OPTS, "--mask-dilate", 0, "--dry-run")
    assert r.exit_code == 0 and "up to date  street.png  (recognised from its outputs' provenance)" in r.output
    r = run("restore", root, "--out", out, "--save-mask", *OPTS, "--mask-dilate", 0)
    assert r.exit_code == 0, r.output
    for f in report_of(out)["files"]:
        assert f["status"] == "skipped" and RECOGNISED in f["notes"] and LOST not in f["notes"], f
        assert not any("changed since" in n for n in f["notes"])
    assert files_of(out) == made
    r = run("restore", root, "--out", out, "--save-mask", *OPTS, "--mask-dilate", 0)
    assert r.exit_code == 0 and all(f["status"] == "skipped" and f["notes"] == [] for f in report_of(out)["files"])

    photo.write_bytes(made[photo] + b"again")  # edited after the record that recognised it: an edit, kept
    r = run("restore", root, "--out", out, "--save-mask", *OPTS, "--mask-dilate", 0)
    assert r.exit_code == 0
    assert kept(photo, len(made[photo]) + 5, len(made[photo])) in entry(out, "street.png")["notes"]


def test_a_sidecar_rewritten_alone_but_not_recorded_for_a_full_disk_is_recognised(scans, tmp_path, stand_in_models):
    """The scan's sidecar corrected: only the sidecar beside the restoration is rewritten, and its record fails (a
    full disk). The next run finds that sidecar at another size than recorded, carrying the scan's sidecar as it is
    now: oldphoto's own, recognised, not "would be replaced (sidecar changed)"."""
    root, _ = scans
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street"))
    out = tmp_path / "out"
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1933"))
    with full_disk_recording("street.png"):
        assert run("restore", root, "--out", out, *OPTS).exit_code == 1
    assert "cannot be recorded" in entry(out, "street.png")["error"]
    assert "Main street, 1933" in (out / "street.png.xmp").read_text()
    made = files_of(out)
    r = run("restore", root, "--out", out, *OPTS)
    assert r.exit_code == 0, r.output
    street = entry(out, "street.png")
    assert street["status"] == "skipped" and RECOGNISED in street["notes"], street
    assert files_of(out) == made


def _dropped_xmp(photo):
    Image.open(photo).save(photo)  # Pillow writes no XMP it is not given


def _step_added(photo):
    from PIL import PngImagePlugin

    with Image.open(photo) as im:
        packet = im.info["XML:com.adobe.xmp"]
        pixels = im.copy()
    step = ('<rdf:li rdf:parseType="Resource"><stEvt:action>saved</stEvt:action>'
            '<stEvt:softwareAgent>Adobe Photoshop CC</stEvt:softwareAgent></rdf:li></rdf:Seq>')
    assert packet.count("</rdf:Seq>") == 1
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet.replace("</rdf:Seq>", step))
    pixels.save(photo, pnginfo=info)


@pytest.mark.parametrize("edit", [_dropped_xmp, _step_added])
def test_an_edit_of_an_output_a_killed_run_left_unrecorded_is_still_kept(scans, tmp_path, stand_in_models, edit):
    """As above, then the restoration edited by a tool that drops oldphoto's XMP or adds its own step to its history:
    an edit, kept (the file fails, its outputs as they are); the other files are recognised."""
    from oldphoto.state import STATE_NAME

    root, _ = scans
    out = tmp_path / "out"
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    before = (out / STATE_NAME).read_bytes()
    next_second()
    assert run("restore", root, "--out", out, *OPTS, "--mask-dilate", 0).exit_code == 0
    (out / STATE_NAME).write_bytes(before)
    photo = out / "street.png"
    edit(photo)
    made = files_of(out)
    r = run("restore", root, "--out", out, *OPTS, "--mask-dilate", 0)
    assert r.exit_code == 1
    assert entry(out, "street.png")["error"] == refused(photo, "settings changed")
    portrait = entry(out, "box 2/portrait.tif")
    assert portrait["status"] == "skipped" and RECOGNISED in portrait["notes"]
    assert files_of(out) == made


def test_a_rerun_over_a_kept_edit_that_kept_oldphotos_xmp_hashes_nothing(scans, tmp_path, stand_in_models,
                                                                         monkeypatch):
    """A retouched restoration whose editor kept oldphoto's XMP packet (bytes appended here), its scan restored with
    a curated mask: every rerun skips it with its note, and stays a stat per file: neither the scan nor its curated
    mask is read for a sha256 (its packet's time is not after the record: no run put it in place unrecorded)."""
    import oldphoto.io.mask_file as mask_file
    import oldphoto.state as state

    root, _ = scans
    review, out = tmp_path / "review", tmp_path / "out"
    assert run("restore", root, "--out", review, "--only-mask", *OPTS).exit_code == 0
    assert run("restore", root, "--out", out, "--masks", review, *OPTS).exit_code == 0
    photo = out / "street.png"
    written = photo.stat().st_size
    photo.write_bytes(photo.read_bytes() + b"retouched")
    hashed = []
    real_sha, real_mask = state.read_source_sha256, mask_file.MaskId.of.__func__

    def sha(path, *a, **k):
        hashed.append(str(path))
        return real_sha(path, *a, **k)

    def mask_id(cls, path, name, with_hash=False):
        if with_hash:
            hashed.append(str(path))
        return real_mask(cls, path, name, with_hash)

    monkeypatch.setattr(state, "read_source_sha256", sha)
    monkeypatch.setattr(mask_file.MaskId, "of", classmethod(mask_id))
    for _ in range(2):
        assert run("restore", root, "--out", out, "--masks", review, *OPTS).exit_code == 0
        assert kept(photo, written + 9, written) in entry(out, "street.png")["notes"]
        assert hashed == []
