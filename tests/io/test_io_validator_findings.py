"""Defects found by validating restorations of files tagged by ExifTool with ExifTool and exiv2: each case is built
here in pure Python (CI has neither tool), in the layout those tools read and write."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest
import tifffile
from PIL import Image, PngImagePlugin

from io_samples import IPTC, ascii_, gradient, long_, rational, short, tiff_structure, undefined
from oldphoto.io import read, write
from oldphoto.io import iptc as I
from oldphoto.io import tiff_ifd as T

URL = b"https://archive.example/rights"


def _resource(rid: int, data: bytes) -> bytes:
    return b"8BIM" + struct.pack(">H", rid) + b"\0\0" + struct.pack(">I", len(data)) + data + b"\0" * (len(data) % 2)


def _jpeg_with_app13(block: bytes) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(buf, "JPEG", quality=90)
    payload = b"Photoshop 3.0\0" + block
    segment = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
    data = buf.getvalue()
    return data[:2] + segment + data[2:]


def test_tiff_iptc_tag_is_long_padded_once_and_its_digest_covers_it(tmp_path):
    """ExifTool -validate warned "Non-standard format (undef) for IFD0 0x83bb IPTC-NAA" (Photoshop writes the tag as
    LONG, Nikon Capture reads nothing else) and "[minor] Non-standard IPTC at TIFF-IFD0-Photoshop-IPTC": a TIFF output
    held the records in tag 33723 and a second copy in the Photoshop block. Its digest must be the MD5 of the tag's
    bytes, padding included, as ExifTool computes CurrentIPTCDigest (else "IPTCDigest is not current")."""
    assert len(IPTC) % 4  # the records need padding to whole LONGs
    block = _resource(0x0404, IPTC) + _resource(0x0425, hashlib.md5(IPTC).digest()) + _resource(0x040B, URL)
    src = tmp_path / "scan.jpg"
    src.write_bytes(_jpeg_with_app13(block))
    pic = read(src, 10_000)
    out = tmp_path / "out.tif"
    write(out, pic.pixels, None, "TIFF", pic.meta)
    with tifffile.TiffFile(out) as tif:
        tag = tif.pages[0].tags[33723]
        assert tag.dtype == 4 and tag.count * 4 == len(IPTC) + (-len(IPTC) % 4)
        tag_bytes = tif.filehandle
        tag_bytes.seek(tag.valueoffset)
        stored = tag_bytes.read(tag.count * 4)
        resources = I.photoshop_resources(bytes(tif.pages[0].tags[34377].value))
    assert stored == IPTC + b"\0" * (-len(IPTC) % 4)
    assert 0x0404 not in resources and resources[0x040B] == URL
    assert resources[0x0425] == hashlib.md5(stored).digest()
    again = read(out, 10_000).meta
    assert again.iptc == IPTC  # read back as the records, without the padding
    # and into a JPEG, the digest is the records' own again
    jpeg = tmp_path / "out.jpg"
    write(jpeg, pic.pixels, None, "JPEG", again)
    back = I.photoshop_resources(read(jpeg, 10_000).meta.photoshop)
    assert back[0x0404] == IPTC and back[0x0425] == hashlib.md5(IPTC).digest()


def test_png_iptc_profile_holding_a_photoshop_block_keeps_its_other_resources(tmp_path):
    """ExifTool writes a PNG's IPTC, with Photoshop's copyright flag and URL, as one resource block in the text
    "Raw profile type iptc": only the IPTC was read out of it, and the flag and URL were lost without a note."""
    block = (_resource(0x0404, IPTC) + _resource(0x040A, b"\x01") + _resource(0x040B, URL)
             + _resource(0x0425, hashlib.md5(IPTC).digest()))
    data = b"Photoshop 3.0\0" + block
    hexed = data.hex()
    text = "\nIPTC profile\n" + f"{len(data):8d}\n" + "\n".join(hexed[i:i + 72] for i in range(0, len(hexed), 72))
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type iptc", text + "\n", zip=True)
    src = tmp_path / "scan.png"
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(src, pnginfo=info)
    pic = read(src, 10_000)
    assert pic.meta.iptc == IPTC and pic.notes == []
    for fmt, ext in (("JPEG", "jpg"), ("TIFF", "tif"), ("PNG", "png")):
        out = tmp_path / f"out.{ext}"
        write(out, pic.pixels, None, fmt, pic.meta)
        again = read(out, 10_000).meta
        kept = I.photoshop_resources(again.photoshop)
        assert again.iptc == IPTC and kept[0x040A] == b"\x01" and kept[0x040B] == URL, fmt


def _exif_with(exif_ifd: dict, gps: dict | None = None) -> bytes:
    import piexif  # big-endian, as ExifTool writes a JPEG's EXIF
    data = piexif.dump({"0th": {271: b"Epson"}, "Exif": exif_ifd, "GPS": gps or {}})
    assert data.startswith(b"Exif\0\0MM")
    return data[6:]


def test_unicode_exif_texts_follow_a_tiff_outputs_byte_order(tmp_path):
    """A UserComment (or GPSProcessingMethod, GPSAreaInformation) with character code UNICODE is UCS-2 in the EXIF's
    byte order: from a big-endian JPEG EXIF into the little-endian TIFF it was carried unswapped, and exiv2 read it
    as garbage ("iconv: Invalid or incomplete multibyte"), ExifTool warned "Wrong byte order for EXIF UserComment"."""
    import piexif
    text = "Ünïcødé — 日本語"
    exif = _exif_with({37510: b"UNICODE\0" + text.encode("utf-16-be")},
                      {27: b"UNICODE\0" + "GPS".encode("utf-16-be"), 28: b"ASCII\0\0\0Lyon"})
    src = tmp_path / "scan.jpg"
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(src, exif=b"Exif\0\0" + exif)
    pic = read(src, 10_000)
    write(tmp_path / "out.tif", pic.pixels, None, "TIFF", pic.meta)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.byteorder == "<"
    back = read(tmp_path / "out.tif", 10_000).meta.exif
    assert back.startswith(b"II")
    d = piexif.load(b"Exif\0\0" + back)
    assert d["Exif"][37510] == b"UNICODE\0" + text.encode("utf-16-le")
    assert d["GPS"][27] == b"UNICODE\0" + "GPS".encode("utf-16-le") and d["GPS"][28] == b"ASCII\0\0\0Lyon"
    # a JPEG output keeps the source's order, and the text with it
    write(tmp_path / "out.jpg", pic.pixels, None, "JPEG", pic.meta)
    again = read(tmp_path / "out.jpg", 10_000).meta.exif
    assert again.startswith(b"MM") and piexif.load(b"Exif\0\0" + again)["Exif"][37510] == d["Exif"][37510].replace(
        text.encode("utf-16-le"), text.encode("utf-16-be"))


def test_a_jpeg_output_gets_the_exif_tags_a_jpeg_requires(tmp_path):
    """ExifTool -validate: "Missing required JPEG IFD0 tag 0x0213 YCbCrPositioning" and "Missing required JPEG ExifIFD
    tag 0xa002 ExifImageWidth / 0xa003 ExifImageHeight" for a TIFF or PNG scan written as JPEG (a TIFF has no
    YCbCrPositioning, and PixelX/YDimension are only required of compressed images)."""
    import piexif
    exif = _exif_with({36867: b"1952:07:14 15:30:00"})
    src = tmp_path / "scan.png"
    info = PngImagePlugin.PngInfo()
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(src, pnginfo=info, exif=b"Exif\0\0" + exif)
    pic = read(src, 10_000)
    write(tmp_path / "out.jpg", pic.pixels, None, "JPEG", pic.meta)
    d = piexif.load(b"Exif\0\0" + read(tmp_path / "out.jpg", 10_000).meta.exif)
    assert d["0th"][531] == 1 and d["Exif"][40962] == 36 and d["Exif"][40963] == 24
    assert d["Exif"][36867] == b"1952:07:14 15:30:00"


def _tiff_scan(path, exif_sub: list, channels: int = 3) -> None:
    """An uncompressed TIFF scan whose Exif directory holds `exif_sub`, as a scanner writes it."""
    px = gradient(2, 4, channels, np.uint8)
    layout = [long_(256, 4), long_(257, 2), short(258, *[8] * channels), short(259, 1),
              short(262, 2 if channels == 3 else 1), short(277, channels), long_(278, 2), ascii_(271, "Epson")]
    path.write_bytes(tiff_structure("<", layout, exif_sub, strip=px.tobytes()))


def _exif_ifd(path) -> dict:
    ifd0, _, _ = T.parse_exif(read(path, 10_000).meta.exif)
    return {tag: e.data for tag, e in ifd0.children[T.EXIF_IFD].entries.items()}


@pytest.mark.parametrize("channels, components", [(3, b"\1\2\3\0"), (1, b"\1\0\0\0")])
def test_a_jpeg_output_gets_the_exif_directorys_required_tags_from_a_tiff_scan(tmp_path, channels, components):
    """ExifTool -validate: "Missing required JPEG ExifIFD tag 0x9000 ExifVersion / 0xa000 FlashpixVersion / 0x9101
    ComponentsConfiguration" for a scanner TIFF's Exif directory written as JPEG. They describe the file written:
    EXIF 2.32 and FlashpixVersion 1.0 (what ExifTool writes), and the encoder's components (Y Cb Cr, or Y alone for
    gray), replacing the TIFF's 4,5,6,0 (uncompressed RGB). ColorSpace is not invented."""
    src = tmp_path / "scan.tif"
    _tiff_scan(src, [ascii_(36867, "1952:07:14 15:30:00"), undefined(37121, b"\4\5\6\0")], channels)
    write(tmp_path / "out.jpg", read(src, 10_000).pixels, None, "JPEG", read(src, 10_000).meta)
    exif = _exif_ifd(tmp_path / "out.jpg")
    assert exif[36864] == b"0232" and exif[40960] == b"0100" and exif[37121] == components
    assert exif[36867] == b"1952:07:14 15:30:00\0" and 40961 not in exif
    # a TIFF or PNG output gets the versions (ExifTool requires them of a TIFF's Exif directory too: "Missing
    # required TIFF ExifIFD tag"), but not the scan's components, which described the scan's file (ExifTool: "not
    # allowed in TIFF"; test_the_scans_compression_tags_are_not_carried)
    for fmt in ("TIFF", "PNG"):
        out = tmp_path / f"out.{fmt.lower()}"
        write(out, read(src, 10_000).pixels, None, fmt, read(src, 10_000).meta)
        exif = _exif_ifd(out)
        assert exif[36864] == b"0232" and exif[40960] == b"0100" and 37121 not in exif
        assert exif[36867] == b"1952:07:14 15:30:00\0"


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF", "PNG", "WEBP"])
def test_the_scans_compression_tags_are_not_carried(tmp_path, fmt):
    """A camera JPEG's ComponentsConfiguration (Y,Cb,Cr) and CompressedBitsPerPixel describe how that file was
    compressed: carried into a TIFF, ExifTool's -validate reports both ("not allowed in TIFF"), and in a re-encoded
    JPEG, a PNG or a WebP (a gray one too) they state a compression the file does not have; the XMP drops them
    likewise. A JPEG output gets its own ComponentsConfiguration (add_jpeg_required)."""
    src = tmp_path / "scan.tif"
    _tiff_scan(src, [ascii_(36867, "1952:07:14 15:30:00"), undefined(37121, b"\1\2\3\0"), rational(37122, (4, 1))],
               1)
    pic = read(src, 10_000)
    out = tmp_path / f"out.{fmt.lower()}"
    write(out, pic.pixels, None, fmt, pic.meta)
    exif = _exif_ifd(out)
    assert 37122 not in exif and exif[36867] == b"1952:07:14 15:30:00\0"
    assert exif.get(37121) == (b"\1\0\0\0" if fmt == "JPEG" else None)


def test_the_scans_exif_and_flashpix_versions_are_kept_and_no_exif_directory_is_made(tmp_path):
    """A version the scan's Exif directory states is kept (the tags it carries follow that version's rules); a scan
    without an Exif directory gets none just for these tags (ExifTool requires them only of one that exists)."""
    src = tmp_path / "scan.tif"
    _tiff_scan(src, [undefined(36864, b"0220"), undefined(40960, b"0101"), ascii_(36867, "1952:07:14 15:30:00")])
    pic = read(src, 10_000)
    write(tmp_path / "out.jpg", pic.pixels, None, "JPEG", pic.meta)
    exif = _exif_ifd(tmp_path / "out.jpg")
    assert exif[36864] == b"0220" and exif[40960] == b"0101" and exif[37121] == b"\1\2\3\0"
    bare = tmp_path / "bare.tif"
    _tiff_scan(bare, [])
    pic = read(bare, 10_000)
    write(tmp_path / "bare.jpg", pic.pixels, None, "JPEG", pic.meta)
    ifd0, _, _ = T.parse_exif(read(tmp_path / "bare.jpg", 10_000).meta.exif)
    assert T.EXIF_IFD not in ifd0.children and ifd0.entries[531].ints() == (1,)


def test_a_little_endian_unicode_text_in_a_big_endian_exif_is_not_swapped_into_the_wrong_order(tmp_path):
    """Microsoft Photo (Windows Explorer, Photo Gallery) writes a UNICODE UserComment little-endian even into a
    big-endian EXIF (ExifTool reads it by guessing the order): swapping it as big-endian made a little-endian TIFF
    hold it big-endian, exiv2 read it garbled and ExifTool warned "Wrong byte order", where the text, carried as it
    was, read right. One with a byte order mark is swapped with its mark."""
    import piexif
    text = "Grand-mère à Lyon, 1952"
    exif = _exif_with({37510: b"UNICODE\0" + text.encode("utf-16-le")},
                      {27: b"UNICODE\0" + "\ufeffGPS".encode("utf-16-be"), 28: b"UNICODE " + "Ain".encode("utf-16-be")})
    src = tmp_path / "scan.jpg"
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(src, exif=b"Exif\0\0" + exif)
    pic = read(src, 10_000)
    write(tmp_path / "out.tif", pic.pixels, None, "TIFF", pic.meta)
    d = piexif.load(b"Exif\0\0" + read(tmp_path / "out.tif", 10_000).meta.exif)
    assert d["Exif"][37510] == b"UNICODE\0" + text.encode("utf-16-le")
    assert d["GPS"][27] == b"UNICODE\0" + "\ufeffGPS".encode("utf-16-le")
    assert d["GPS"][28] == b"UNICODE " + "Ain".encode("utf-16-le")  # the code as some cameras write it


def test_only_the_nuls_padding_a_tiffs_iptc_to_whole_longs_are_taken_off_its_records():
    """The reader takes off the NULs after the last record, found by walking the records (0x1C, record, dataset, 16-bit
    size): a record's own data ending in NULs is the record's. More NULs than LONG padding (up to 4, ImageMagick's)
    are not padding: kept, as a digest over them then still matches."""
    binary = b"\x1c\x02\xc8\x00\x06ab\0\0\0\0"  # a record whose data ends in NULs
    records = IPTC + binary
    assert I.without_padding(records) == records
    for pad in range(1, 5):
        assert I.without_padding(records + b"\0" * pad) == records
    assert I.without_padding(records + b"\0" * 5) == records + b"\0" * 5
    assert I.without_padding(records + b"\0\0\x1c") == records + b"\0\0\x1c"  # not NULs: kept
    assert I.without_padding(IPTC + b"\x1c\x02\x78\x00\x20short\0\0") == IPTC + b"\x1c\x02\x78\x00\x20short\0\0"
    extended = b"\x1c\x08\x0a\x80\x04\x00\x00\x00\x02ab"  # an extended dataset: its length in the next 4 bytes
    assert I.without_padding(IPTC + extended + b"\0") == IPTC + extended + b"\0"


def test_the_pixel_dimensions_a_jpeg_gets_are_the_written_images_turned_upright(tmp_path):
    """Orientation 6 turns the scan: PixelX/YDimension, added or given by the scan (another tool's size, here), are
    those of the pixels written, upright."""
    import piexif
    for given in ({40962: 4000, 40963: 3000}, {}):
        src = tmp_path / "scan.jpg"
        data = piexif.dump({"0th": {271: b"Epson", 274: 6}, "Exif": {36867: b"1952:07:14 15:30:00", **given}})
        Image.fromarray(gradient(24, 36, 3, np.uint8)).save(src, exif=data)
        pic = read(src, 10_000)
        assert pic.pixels.shape[:2] == (36, 24) and pic.notes == ["orientation 6 applied: pixels are stored upright"]
        write(tmp_path / "out.jpg", pic.pixels, None, "JPEG", pic.meta)
        d = piexif.load(b"Exif\0\0" + read(tmp_path / "out.jpg", 10_000).meta.exif)
        assert (d["Exif"][40962], d["Exif"][40963], d["0th"][274]) == (24, 36, 1), given


def _gps_last_exif() -> bytes:
    """piexif's layout of an EXIF whose last directory, GPS, holds its values in its entries: it ends right after
    them, without the 4-byte next-directory offset (ExifTool and exiv2 read it)."""
    import piexif
    data = piexif.dump({"0th": {271: b"Epson", 274: 6}, "GPS": {0: (2, 2, 0, 0), 5: 0}})
    gps = T.read_ifd(T.bytes_reader(data[6:]), 8, ">", False, follow=())[0].entries[T.GPS_IFD].ints()[0]
    assert len(data) - 6 == gps + 2 + 2 * 12  # the GPS directory's entries end the block
    return data[6:]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow reads the same damaged EXIF alongside ours
def test_exif_whose_last_directory_lacks_its_next_offset_is_kept(tmp_path):
    """An EXIF block whose last directory (GPS, or IFD0 itself) ends without its next-directory offset was refused
    whole as "malformed ... not kept": all of the scan's EXIF was lost. It is read as the last directory, and what is
    written has the offset."""
    ifd0_only = b"II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 274, 3, 1, 6, 0)  # IFD0: Orientation
    for name, exif in (("gps", _gps_last_exif()), ("ifd0", ifd0_only)):
        src = tmp_path / f"{name}.jpg"
        Image.fromarray(gradient(24, 36, 3, np.uint8)).save(src, exif=b"Exif\0\0" + exif)
        pic = read(src, 10_000)
        assert pic.meta.exif is not None and pic.pixels.shape[:2] == (36, 24), name  # its orientation 6 applied
        assert pic.notes == ["orientation 6 applied: pixels are stored upright"], name
        for fmt, ext in (("JPEG", "jpg"), ("TIFF", "tif")):
            out = tmp_path / f"{name}_out.{ext}"
            write(out, pic.pixels, None, fmt, pic.meta)
            back = read(out, 10_000)
            assert back.notes == [], (name, fmt)
            if name == "ifd0" and fmt == "TIFF":
                continue  # nothing beyond IFD0's own tags: no EXIF block
            ifd0, order, _ = T.parse_exif(back.meta.exif)
            if name == "gps":
                assert ifd0.entries[271].text() == "Epson" and ifd0.children[T.GPS_IFD].entries[0].data == b"\2\2\0\0"
            _assert_whole(back.meta.exif, order)


def _assert_whole(blob: bytes, order: str) -> None:
    """Every directory of the EXIF block `blob` (IFD0 and those its pointers lead to) has its next-directory offset."""
    todo = [struct.unpack(order + "I", blob[4:8])[0]]
    while todo:
        at = todo.pop()
        (n,) = struct.unpack(order + "H", blob[at : at + 2])
        assert at + 2 + 12 * n + 4 <= len(blob), at
        for i in range(n):
            tag, _, _, value = struct.unpack(order + "HHII", blob[at + 2 + 12 * i : at + 14 + 12 * i])
            if tag in T.SUB_IFD_TAGS:
                todo.append(value)


def _le_exif(ifd0: list[tuple[int, int, int, bytes]], values: bytes = b"", next_ifd: int = 0) -> bytes:
    """Little-endian EXIF block: IFD0 at 8 with entries (tag, type, count, 4-byte field), then `values`."""
    out = b"II*\0" + struct.pack("<IH", 8, len(ifd0))
    for tag, typ, count, field_ in ifd0:
        out += struct.pack("<HHI", tag, typ, count) + field_
    return out + struct.pack("<I", next_ifd) + values


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data", "ignore:Truncated File Read")  # Pillow reads it too
def test_exif_value_or_directory_past_the_end_drops_only_itself(tmp_path):
    """A value whose offset points past the block, a GPS pointer leading nowhere, an IFD1 (thumbnail) offset past the
    end: each dropped alone, as ExifTool does ("Bad offset for IFD0 Make"), not the whole EXIF; the value and the
    directory with a note, the IFD1 pointer silently (a thumbnail is dropped anyway, and there is none)."""
    artist = b"Studio Lumiere\0"
    n = 4
    values_at = 8 + 2 + 12 * n + 4
    exif = _le_exif([(271, 2, 6, struct.pack("<I", values_at + 200)),  # Make: 200 bytes past its place
                     (274, 3, 1, struct.pack("<HH", 1, 0)),
                     (315, 2, len(artist), struct.pack("<I", values_at)),
                     (T.GPS_IFD, 4, 1, struct.pack("<I", 5000))], artist, next_ifd=9000)
    src = tmp_path / "scan.jpg"
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(src, exif=b"Exif\0\0" + exif)
    pic = read(src, 10_000)
    assert pic.meta.exif is not None and pic.meta.tiff_tags[315] == "Studio Lumiere"
    assert pic.notes == [f"EXIF IFD0 tag 0x010f dropped: its value is unreadable (offset {values_at + 200}+6 is "
                         f"outside the {len(exif)}-byte block)",
                         f"EXIF GPS directory dropped: it is unreadable (offset 5000+2 is outside the {len(exif)}-byte "
                         "block)"]
    notes = write(tmp_path / "out.jpg", pic.pixels, None, "JPEG", pic.meta)
    assert not any("thumbnail" in n for n in notes)
    ifd0, _, has_thumb = T.parse_exif(read(tmp_path / "out.jpg", 10_000).meta.exif)
    assert 271 not in ifd0.entries and ifd0.entries[315].data == artist and not ifd0.children and not has_thumb
    # garbage stays refused: most of the entries with values outside the block
    junk = _le_exif([(270 + i, 2, 40, struct.pack("<I", 7000 + i)) for i in range(3)] + [(274, 3, 1, b"\1\0\0\0")])
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(src, exif=b"Exif\0\0" + junk)
    pic = read(src, 10_000)
    assert pic.meta.exif is None and len(pic.notes) == 1 and "EXIF block is malformed" in pic.notes[0]


def _profile_text(data: bytes, kind: str) -> str:
    hexed = data.hex()
    return f"\n{kind}\n" + f"{len(data):8d}\n" + "\n".join(hexed[i:i + 72] for i in range(0, len(hexed), 72)) + "\n"


def _png_with_profiles(path, **profiles: bytes) -> None:
    info = PngImagePlugin.PngInfo()
    for kind, data in profiles.items():
        info.add_text(f"Raw profile type {kind}", _profile_text(data, kind), zip=True)
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(path, pnginfo=info)


def test_png_8bim_and_iptc_profiles_give_their_resources_together(tmp_path):
    """A PNG with ImageMagick's `Raw profile type 8bim` and ExifTool's whole block in `Raw profile type iptc` took
    the resources of the 8bim one only: the copyright flag and URL of the iptc one were lost without a note. They
    are merged: the 8bim one's stay where both give one (a differing one of the iptc text is named in a note), the
    IPTC records and their digest are the iptc text's."""
    old_iptc = b"\x1c\x02\x00\x00\x02\x00\x04" + b"\x1c\x02\x78\x00\x03Old"
    eight = (_resource(0x03F0, b"Caption of 8bim") + _resource(0x0404, old_iptc)
             + _resource(0x0425, hashlib.md5(old_iptc).digest()))
    in_iptc = (_resource(0x0404, IPTC) + _resource(0x040A, b"\x01") + _resource(0x040B, URL)
               + _resource(0x03F0, b"Caption of iptc") + _resource(0x0425, hashlib.md5(IPTC).digest()))
    src = tmp_path / "scan.png"
    _png_with_profiles(src, **{"8bim": eight, "iptc": b"Photoshop 3.0\0" + in_iptc})
    pic = read(src, 10_000)
    kept = I.photoshop_resources(pic.meta.photoshop)
    assert pic.meta.iptc == IPTC and kept[0x040A] == b"\x01" and kept[0x040B] == URL
    assert kept[0x03F0] == b"Caption of 8bim" and kept[0x0425] == hashlib.md5(IPTC).digest()
    assert pic.notes == ["Photoshop resource(s) 0x03f0 (caption) of PNG text 'Raw profile type iptc' not kept: they "
                         "differ from those of PNG text 'Raw profile type 8bim', which are kept",
                         "Photoshop resource(s) 0x0404 (IPTC), 0x0425 (IPTC digest) of PNG text 'Raw profile type "
                         "8bim' not kept: those of PNG text 'Raw profile type iptc', whose IPTC records are read, are "
                         "kept"]
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
        out = tmp_path / f"out.{ext}"
        write(out, pic.pixels, None, fmt, pic.meta)
        again = read(out, 10_000).meta
        back = I.photoshop_resources(again.photoshop)
        assert again.iptc == IPTC and back[0x040A] == b"\x01" and back[0x040B] == URL, fmt
        assert back[0x03F0] == b"Caption of 8bim", fmt


def test_png_iptc_profile_with_a_damaged_block_keeps_the_resources_before_the_damage(tmp_path):
    """A damaged resource block in `Raw profile type iptc` was dropped whole ("damaged ... not kept"), IPTC
    included, where one in `Raw profile type 8bim` keeps the resources before the damage, with a note: both do."""
    block = _resource(0x0404, IPTC) + _resource(0x040B, URL) + b"8BIM\x04\x0a\0\0\0\0\0\x40\x01"  # last cut short
    for kind in ("iptc", "8bim"):
        src = tmp_path / f"{kind}.png"
        _png_with_profiles(src, **{kind: b"Photoshop 3.0\0" + block if kind == "iptc" else block})
        pic = read(src, 10_000)
        assert pic.meta.iptc == IPTC and I.photoshop_resources(pic.meta.photoshop)[0x040B] == URL, kind
        assert pic.notes == [f"Photoshop image resources (PNG text 'Raw profile type {kind}') damaged (resource "
                             "0x040a claims 64 bytes past the end of the block): 2 "
                             "resource(s) before the damage kept, the rest dropped"], kind


def _le_dir(entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    return (struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", t, typ, c) + f for t, typ, c, f in entries)
            + struct.pack("<I", next_ifd))


def test_repeated_pointer_tags_are_followed_once():
    """A directory repeating a pointer tag (Exif, GPS, Interop) had every copy followed, the last one kept: 40 copies
    at each of IFD0 -> Exif -> Interop -> Interop, 2 KB of EXIF, took 40**4 entry reads (seconds; 8 KB took minutes),
    and copies leading nowhere each added a note to a lenient read. Only the copy that is kept is followed."""
    n = 40
    size = 2 + 12 * n + 4
    exif_at, interop_at, inner_at = 8 + size, 8 + 2 * size, 8 + 3 * size
    blob = (b"II*\0" + struct.pack("<I", 8)
            + _le_dir([(T.EXIF_IFD, 4, 1, struct.pack("<I", exif_at))] * n)
            + _le_dir([(T.INTEROP_IFD, 4, 1, struct.pack("<I", interop_at))] * n)
            + _le_dir([(T.INTEROP_IFD, 4, 1, struct.pack("<I", inner_at))] * n)
            + _le_dir([(1, 2, 4, b"R98\0")] * n))
    reads = []
    read_at = T.bytes_reader(blob)

    def counted(offset: int, size: int) -> bytes:
        reads.append(offset)
        return read_at(offset, size)

    notes = []
    ifd0, _ = T.read_ifd(counted, 8, "<", False, notes=notes)
    exif = ifd0.children[T.EXIF_IFD]
    assert exif.children[T.INTEROP_IFD].children[T.INTEROP_IFD].entries[1].data == b"R98\0"
    assert len(reads) < 20 and notes == []
    # the kept copy is the last, as before; copies leading nowhere before it are not read, nor noted
    gps_at = 8 + 2 + 12 * 502 + 4
    gps = [(T.GPS_IFD, 4, 1, struct.pack("<I", 90_000 + i)) for i in range(500)]
    blob = (b"II*\0" + struct.pack("<I", 8)
            + _le_dir([(274, 3, 1, b"\1\0\0\0")] + gps + [(T.GPS_IFD, 4, 1, struct.pack("<I", gps_at))])
            + _le_dir([(0, 1, 4, b"\2\3\0\0")]))
    notes = []
    ifd0, _, _ = T.parse_exif(blob, notes)
    assert ifd0.children[T.GPS_IFD].entries[0].data == b"\2\3\0\0" and notes == []
