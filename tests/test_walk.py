import os
from pathlib import Path

import pytest

from oldphoto.errors import ImageError
from oldphoto.walk import OutputClaims, discover, is_image_name, match_sidecars, out_base


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rels(disc) -> list[str]:
    return [f.rel.as_posix() for f in disc.found]


def test_walk_keeps_images_skips_hidden_system_and_sidecar_files(tmp_path):
    root = tmp_path / "scans"
    for name in ["b.jpg", "a.PNG", "sub/c.TIFF", "sub/deep/d.tif", "sub/e.webp", "f.JPEG",
                 ".hidden.jpg", ".DS_Store", "._a.jpg", "Thumbs.db", "desktop.ini", "a.xmp", "a.json",
                 "notes.txt", "g.bmp", "h.jpg.xmp", ".git/x.jpg", "sub/.cache/y.png", "noext"]:
        touch(root / name)
    disc = discover([root])
    assert rels(disc) == ["a.PNG", "b.jpg", "f.JPEG", "sub/c.TIFF", "sub/deep/d.tif", "sub/e.webp"]
    assert all(f.src == root / f.rel for f in disc.found)
    assert disc.problems == [] and disc.ignored == []


def test_walk_is_sorted_and_deterministic(tmp_path):
    root = tmp_path / "in"
    names = ["z/1.jpg", "a.jpg", "B.jpg", "m/n/o.png", "m/a.png", "a0.jpg"]
    for n in reversed(names):
        touch(root / n)
    first = rels(discover([root]))
    assert first == sorted(first, key=lambda r: tuple(r.split("/")))
    assert first == rels(discover([root]))


def test_symlink_loop_does_not_hang_and_links_are_followed_once(tmp_path):
    root = tmp_path / "in"
    touch(root / "a/x.jpg")
    os.symlink(root, root / "a" / "loop")  # a/loop -> in (an ancestor)
    os.symlink(root / "a", root / "again")  # second route to a folder already walked
    outside = tmp_path / "elsewhere"
    touch(outside / "y.png")
    os.symlink(outside, root / "linked")
    os.symlink(tmp_path / "missing.jpg", root / "dangling.jpg")
    disc = discover([root])
    assert sorted(rels(disc)) == ["a/x.jpg", "linked/y.png"]


def test_walk_never_enters_the_excluded_output_folder(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    touch(root / "a.jpg")
    touch(out / "a.jpg")
    touch(out / "sub" / "b.jpg")
    os.symlink(out, root / "to_out")  # a link to the output folder ...
    os.symlink(out / "sub", root / "to_sub")  # ... and one into it
    assert rels(discover([root])) == ["a.jpg", "to_out/a.jpg", "to_out/sub/b.jpg"]  # to_sub: seen already
    assert rels(discover([root], exclude=out)) == ["a.jpg"]
    assert rels(discover([root], exclude=tmp_path / "." / "out")) == ["a.jpg"]  # compared resolved
    assert rels(discover([out / "sub"], exclude=out)) == ["b.jpg"]  # asked for by name: walked


def test_file_inputs_and_duplicates(tmp_path):
    a = touch(tmp_path / "a.jpg")
    note = touch(tmp_path / "readme.txt")
    hidden = touch(tmp_path / ".explicit.png")
    disc = discover([a, note, a, hidden])
    assert rels(disc) == ["a.jpg", ".explicit.png"]  # asked for by name: kept even though hidden
    assert disc.ignored == [note]


def test_missing_input_is_a_problem_not_a_crash(tmp_path):
    disc = discover([tmp_path / "nope"])
    assert disc.found == [] and len(disc.problems) == 1
    assert "nope" in str(disc.problems[0]) and "no such" in disc.problems[0].reason


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_an_input_that_exists_but_is_not_a_regular_file_is_not_called_missing(tmp_path):
    # a named pipe given by name (or a socket, a device): reading it could block for ever, and it does exist
    fifo = tmp_path / "scan.tif"
    os.mkfifo(fifo)
    disc = discover([fifo])
    assert disc.found == [] and len(disc.problems) == 1
    assert disc.problems[0].reason == "not a regular file or folder (a named pipe)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list any folder")
def test_unreadable_folder_is_reported(tmp_path):
    root = tmp_path / "in"
    touch(root / "ok.jpg")
    locked = root / "locked"
    touch(locked / "x.jpg")
    locked.chmod(0)
    try:
        disc = discover([root])
    finally:
        locked.chmod(0o755)
    assert rels(disc) == ["ok.jpg"]
    assert [p.path for p in disc.problems] == [locked]


def test_names_and_formats():
    assert is_image_name("X.JpEg") and is_image_name("a.b.tif") and not is_image_name("a.tif.xmp")
    assert out_base(Path("/o"), Path("s/a.b.jpg")) == Path("/o/s/a.b")


def test_output_claims_refuse_second_owner_and_inputs(tmp_path):
    a, b = tmp_path / "in/a.jpg", tmp_path / "in/a.png"
    claims = OutputClaims([a, b])
    claims.claim(a, [tmp_path / "out/a.png"])
    with pytest.raises(ImageError) as e:
        claims.claim(b, [tmp_path / "out/A.png"])  # differs only by case: same file on SMB/macOS
    assert str(e.value).startswith(str(b)) and "already produced from" in str(e.value)
    with pytest.raises(ImageError, match="would overwrite an input"):
        claims.claim(a, [b])
    claims.claim(b, [tmp_path / "out/b.png"])  # a refused claim reserved nothing


def test_an_images_xmp_sidecar_is_found_beside_it_and_never_taken_for_an_input(tmp_path):
    root = tmp_path / "scans"
    for name in ["full.tif", "full.tif.xmp", "full.xmp",  # darktable's / digiKam's name wins over Adobe's
                 "adobe.jpg", "adobe.xmp",  # Adobe's naming: one file with that stem
                 "pair.tif", "pair.jpg", "pair.xmp",  # two files share the stem: whose is it?
                 "raw.jpg", "raw.nef", "raw.xmp",  # Lightroom's RAW + JPEG: the raw's develop settings
                 "case.png", "case.png.xmp", "case.png.XMP", "orphan.xmp", "sub/deep.webp", "sub/deep.webp.xmp",
                 ".hidden.png", ".hidden.png.xmp", "gone.png"]:
        touch(root / name)
    os.symlink(root / "nowhere.xmp", root / "gone.png.xmp")  # dangling: no sidecar
    disc = discover([root])
    found = {f.rel.as_posix(): (f.sidecar and f.sidecar.relative_to(root).as_posix(), f.sidecar_note)
             for f in disc.found}
    assert sorted(found) == ["adobe.jpg", "case.png", "full.tif", "gone.png", "pair.jpg", "pair.tif", "raw.jpg",
                             "sub/deep.webp"]
    assert found["full.tif"] == ("full.tif.xmp", "XMP sidecar full.xmp not carried: full.tif.xmp, named after this "
                                                 "very file, is carried instead")
    assert found["adobe.jpg"] == ("adobe.xmp", None) and found["sub/deep.webp"] == ("sub/deep.webp.xmp", None)
    assert found["pair.tif"] == (None, "XMP sidecar pair.xmp not carried: pair.jpg, pair.tif share its name, which "
                                       "does not say whose it is; name it pair.tif.xmp to carry it with pair.tif")
    assert found["pair.jpg"][0] is None and "name it pair.jpg.xmp" in found["pair.jpg"][1]
    assert found["raw.jpg"] == (None, "XMP sidecar raw.xmp not carried: raw.jpg, raw.nef share its name, which does "
                                      "not say whose it is; name it raw.jpg.xmp to carry it with raw.jpg")
    assert found["case.png"] == (None, "XMP sidecars case.png.XMP, case.png.xmp not carried: two for one file, "
                                       "differing only in case")
    assert found["gone.png"] == (None, None)
    # an image given by name finds its sidecar the same way
    given = discover([root / "adobe.jpg", root / "pair.tif"]).found
    assert [(f.sidecar, f.sidecar_note is None) for f in given] == [(root / "adobe.xmp", True), (None, False)]


def test_output_claims_say_whether_another_source_took_a_path(tmp_path):
    claims = OutputClaims()
    claims.claim(tmp_path / "a.tif", [tmp_path / "out" / "a.xmp"])
    assert claims.taken(tmp_path / "out" / "A.XMP", tmp_path / "b.jpg")  # case-folded, as claims are
    assert not claims.taken(tmp_path / "out" / "a.xmp", tmp_path / "a.tif")
    assert not claims.taken(tmp_path / "out" / "b.xmp", tmp_path / "b.jpg")


def test_images_given_by_name_list_their_folder_once_for_sidecars(tmp_path, monkeypatch):
    """`restore scans/*.tif` gives every image by name: each must not list (and match) the whole folder again, which
    made a folder of 20,000 scans take a quarter of an hour to walk."""
    for name in ["a.tif", "a.tif.xmp", "b.tif", "c.tif", "c.xmp"]:
        touch(tmp_path / name)
    listings = []
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path=".": listings.append(Path(path)) or scandir(path))
    found = discover([tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif"]).found
    assert [f.sidecar and f.sidecar.name for f in found] == ["a.tif.xmp", None, "c.xmp"]
    assert listings == [tmp_path]


def test_a_sidecar_that_names_an_image_only_in_another_case_is_not_carried_but_noted():
    """lower.jpg.xmp beside lower.JPG names no file here, but a share that ignores case (SMB, macOS) would take it for
    lower.JPG's: its notes say so and how to name it; which sidecar is carried does not change."""
    assert match_sidecars(["lower.JPG", "lower.jpg.xmp", "orphan.xmp"]) == {"lower.JPG": (None, (
        "XMP sidecar lower.jpg.xmp not carried: its name differs in case from this file's; rename it to lower.JPG.xmp "
        "to carry it"))}
    assert match_sidecars(["Scan.tif", "scan.xmp"])["Scan.tif"] == (None, (
        "XMP sidecar scan.xmp not carried: its name differs in case from this file's; rename it to Scan.xmp to carry "
        "it"))
    assert match_sidecars(["a.jpg", "a.jpg.xmp", "A.JPG.xmp"])["a.jpg"] == ("a.jpg.xmp", (
        "XMP sidecar A.JPG.xmp not carried: its name differs in case from this file's; a.jpg.xmp, named after it, is "
        "carried instead"))
    # a note on the sidecar it has comes first; several files that share the stem get none (none could be told)
    assert match_sidecars(["b.tif", "b.xmp", "b.tif.xmp", "B.TIF.xmp"])["b.tif"][1].startswith("XMP sidecar b.xmp")
    assert match_sidecars(["c.jpg", "c.tif", "C.xmp"]) == {}
    assert match_sidecars(["d.jpg", "d.JPG.xmp"])["d.jpg"] == (None, (
        "XMP sidecar d.JPG.xmp not carried: its name differs in case from this file's; rename it to d.jpg.xmp to "
        "carry it"))


def test_a_case_note_never_asks_for_a_rename_that_would_not_carry_the_sidecar():
    """NAME.EXT.xmp wins over NAME.xmp: renaming A.xmp to a.xmp beside a.jpg and a.jpg.xmp would carry nothing more."""
    assert match_sidecars(["a.jpg", "a.jpg.xmp", "A.xmp"])["a.jpg"] == ("a.jpg.xmp", (
        "XMP sidecar A.xmp not carried: its name differs in case from this file's; a.jpg.xmp, named after it, is "
        "carried instead"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_broken_link_or_a_fifo_named_like_an_image_is_a_problem_not_passed_over(tmp_path):
    # found by fuzzing an archive-like tree: a scan whose link points to a moved file or an unmounted drive, or a
    # FIFO named scan.png, was skipped without a word, so a run said all was done
    root = tmp_path / "in"
    touch(root / "ok.jpg")
    os.symlink(tmp_path / "gone" / "scan.tif", root / "scan.tif")
    os.symlink(tmp_path / "nowhere", root / "notes.txt")  # not an image's name: still passed over
    os.mkfifo(root / "pipe.png")
    os.mkfifo(root / "pipe.log")
    disc = discover([root])
    assert rels(disc) == ["ok.jpg"]
    assert sorted((p.path.name, p.reason) for p in disc.problems) == [
        ("pipe.png", "not a regular file or folder (a named pipe)"),
        ("scan.tif", f"broken symbolic link (to {tmp_path / 'gone' / 'scan.tif'}, which does not exist)")]


def test_a_scan_removed_while_its_folder_is_walked_is_not_called_a_broken_link(tmp_path, monkeypatch):
    # stat() after the listing found no file: for a regular file that was removed meanwhile (another process tidying
    # the tree), not a dangling link; it is gone, as if listed a moment later
    root = tmp_path / "in"
    touch(root / "ok.jpg")
    touch(root / "vanishing.jpg")
    real = os.scandir

    class Listing:
        def __init__(self, folder):
            self._it = real(folder)

        def __enter__(self):
            entries = list(self._it)
            if (root / "vanishing.jpg").exists():
                (root / "vanishing.jpg").unlink()
            return iter(entries)

        def __exit__(self, *exc):
            self._it.close()

    monkeypatch.setattr("oldphoto.walk.os.scandir", Listing)
    disc = discover([root])
    assert rels(disc) == ["ok.jpg"] and disc.problems == []
