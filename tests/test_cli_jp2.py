"""JPEG 2000 masters through the command line: restored as TIFF with --format keep, metadata carried, skipped when
current, their output names claimed like any other's."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from jp2_samples import DPI_600, UUID_EXIF, UUID_IPTC, UUID_XMP, colr_icc, jp2, res, uuid
from PIL import ImageCms
from restore_samples import put, report_of, run
from restore_samples import stand_in_models as use_stand_in_models

_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
_XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description rdf:about="" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
        b'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="Lyon" '
        b'xmpMM:DocumentID="xmp.did:jp2master" xmpMM:InstanceID="xmp.iid:jp2master"/></rdf:RDF></x:xmpmeta>')
_OPTS = ("--tile", 128, "--overlap", 16, "--device", "cpu", "--jobs", 1)


def _exif() -> bytes:
    """A little-endian EXIF block: IFD0 with Make and the Exif IFD pointer, the Exif IFD with DateTimeOriginal."""
    import struct

    date = b"1952:07:14 15:30:00\0"
    ifd0_at, exif_at = 8, 8 + 2 + 2 * 12 + 4
    make_at = exif_at + 2 + 12 + 4
    date_at = make_at + 6
    ifd0 = struct.pack("<H", 2) + struct.pack("<HHII", 271, 2, 6, make_at) + struct.pack("<HHII", 34665, 4, 1, exif_at)
    sub = struct.pack("<H", 1) + struct.pack("<HHII", 36867, 2, len(date), date_at)
    return b"II*\0" + struct.pack("<I", ifd0_at) + ifd0 + b"\0" * 4 + sub + b"\0" * 4 + b"Epson\0" + date


@pytest.fixture
def stand_in_models(monkeypatch):
    use_stand_in_models(monkeypatch)


def _masters(tmp_path):
    rgba16 = np.random.default_rng(4).integers(0, 60000, (40, 50, 4), dtype=np.uint16)
    rgba16[..., 3] = 65535
    gray8 = np.random.default_rng(5).integers(0, 240, (30, 20), dtype=np.uint8)
    root = tmp_path / "scans"
    put(root / "a.jp2", jp2(rgba16, colr=colr_icc(_ICC), in_header=res(DPI_600, DPI_600),
                            before=uuid(UUID_XMP, _XMP) + uuid(UUID_EXIF, b"Exif\0\0" + _exif())
                            + uuid(UUID_IPTC, b"\x1c\x02\x00\x00\x02\x00\x04")))
    put(root / "box" / "b.j2k", jp2(gray8, codec="j2k"))
    whole = jp2(gray8)
    put(root / "torn.jp2", whole[: len(whole) // 2])
    return root, rgba16, gray8


def test_a_jp2_master_is_restored_as_tiff_with_its_metadata(tmp_path, stand_in_models):
    root, rgba16, gray8 = _masters(tmp_path)
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    dry = run("restore", root, "--out", out, *_OPTS, "--dry-run")
    assert dry.stdout.splitlines()[:2] == ["restore     a.jp2  (new)", "restore     box/b.j2k  (new)"], dry.output
    r = run("restore", root, "--out", out, *_OPTS, "-q")
    assert r.exit_code == 1, r.output  # torn.jp2 fails alone, in one line
    assert len(r.stderr.splitlines()) == 1, r.stderr
    line = r.stderr.strip()
    assert line.startswith(f"error: {root / 'torn.jp2'}: cannot read JPEG2000: ")
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert files["a.jp2"]["outputs"] == [str(out / "a.tif")] and files["box/b.j2k"]["outputs"] == [
        str(out / "box" / "b.tif")]
    assert files["torn.jp2"]["status"] == "failed" and not (out / "torn.tif").exists()
    with tifffile.TiffFile(out / "a.tif") as t:
        page = t.pages[0]
        assert np.array_equal(page.asarray(), rgba16)  # the identity restorer: depth and alpha kept
        assert (int(page.compression), int(page.predictor)) == (5, 2)  # LZW, horizontal differencing
        tags = page.tags
        assert tags["InterColorProfile"].value == _ICC
        assert tags["ExifTag"].value["DateTimeOriginal"] == "1952:07:14 15:30:00"
        assert tags["XResolution"].value == (600, 1) and int(tags["ResolutionUnit"].value) == 2
        xmp = bytes(tags["XMP"].value)
        assert b'photoshop:City="Lyon"' in xmp or b"<photoshop:City>Lyon</photoshop:City>" in xmp
        assert b"xmp.did:jp2master" in xmp  # the master named as the parent (xmpMM:DerivedFrom)
        assert tags["IPTCNAA"] is not None
    assert np.array_equal(tifffile.imread(out / "box" / "b.tif"), gray8)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before

    r = run("restore", root, "--out", out, *_OPTS)  # a second run: current
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped", "failed"], r.output
    r = run("restore", root, "--out", out, *_OPTS, "--format", "tiff")  # writes the very file keep wrote
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped", "failed"], r.output
    r = run("restore", root, "--out", out, *_OPTS, "--format", "png")
    assert [f["status"] for f in report_of(out)["files"]] == ["done", "done", "failed"], r.output
    assert (out / "a.png").exists() and (out / "box" / "b.png").exists()


def test_a_jp2_beside_a_tif_of_the_same_name_is_a_clash(tmp_path, stand_in_models):
    root, _, _ = _masters(tmp_path)
    (root / "torn.jp2").unlink()
    tifffile.imwrite(root / "a.tif", np.zeros((8, 8), np.uint8))
    r = run("restore", root, "--out", tmp_path / "out", *_OPTS)
    assert r.exit_code == 1
    assert "is already produced from" in r.stderr and "a.tif" in r.stderr, r.output


def test_a_jp2_sidecar_goes_with_its_tiff_and_masks_are_pngs(tmp_path, stand_in_models):
    root, _, _ = _masters(tmp_path)
    (root / "torn.jp2").unlink()
    (root / "a.jp2.xmp").write_bytes(_XMP)
    out = tmp_path / "out"
    assert run("restore", root, "--out", out, *_OPTS).exit_code == 0
    assert (out / "a.tif").exists() and (out / "a.tif.xmp").exists()
    masks = tmp_path / "masks"
    assert run("restore", root, "--out", masks, *_OPTS, "--only-mask").exit_code == 0
    assert (masks / "a.mask.png").exists() and (masks / "a.overlay.jpg").exists()
    assert not (masks / "a.tif").exists()


def test_a_jp2_named_file_holding_a_jpeg_is_written_as_tiff_with_a_note(tmp_path, stand_in_models):
    from PIL import Image

    root = tmp_path / "scans"
    root.mkdir()
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(root / "x.jp2", "JPEG")
    out = tmp_path / "out"
    assert run("restore", root, "--out", out, *_OPTS).exit_code == 0
    (f,) = report_of(out)["files"]
    assert f["outputs"] == [str(out / "x.tif")]
    assert "content is JPEG but the name says .jp2: written as TIFF" in f["notes"]


def test_a_tiff_master_keeps_its_restoration_when_a_jp2_access_copy_of_the_same_name_lies_beside_it(
        tmp_path, stand_in_models):
    # TIFF master + JP2 access copy of the same name is a common archive layout: the master sorts after a.jp2, but
    # its output a.tif is its own name; the JP2, whose keep output only borrows the suffix, is the one refused
    root = tmp_path / "scans"
    master = np.random.default_rng(6).integers(0, 60000, (40, 50, 3), dtype=np.uint16)
    root.mkdir()
    tifffile.imwrite(root / "a.tif", master)
    out = tmp_path / "out"
    assert run("restore", root, "--out", out, *_OPTS).exit_code == 0
    put(root / "a.jp2", jp2((master >> 8).astype(np.uint8)))
    for _ in range(2):
        r = run("restore", root, "--out", out, *_OPTS)
        assert r.exit_code == 1, r.output
        files = {f["relative"]: f for f in report_of(out)["files"]}
        assert files["a.tif"]["status"] == "skipped", files  # still current: not failed for the JP2's sake
        assert files["a.jp2"]["status"] == "failed"
        assert f"already produced from {root / 'a.tif'}" in files["a.jp2"]["error"], files
        assert np.array_equal(tifffile.imread(out / "a.tif"), master)
    for fmt in ("keep", "tiff"):  # tiff writes the very file keep does
        fresh = tmp_path / f"fresh-{fmt}"
        assert run("restore", root, "--out", fresh, *_OPTS, "--format", fmt).exit_code == 1
        files = {f["relative"]: f for f in report_of(fresh)["files"]}
        assert (files["a.tif"]["status"], files["a.jp2"]["status"]) == ("done", "failed"), files
        assert np.array_equal(tifffile.imread(fresh / "a.tif"), master)
