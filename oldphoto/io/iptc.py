"""Containers for IPTC-IIM records: Photoshop image resources (JPEG APP13) and the hex "Raw profile type iptc"
PNG text chunk that ImageMagick and ExifTool use (PNG has no standard IPTC chunk).
"""

from __future__ import annotations

import struct

IPTC_RESOURCE = 0x0404  # Photoshop image resource id holding IPTC-IIM records
PNG_IPTC_KEY = "Raw profile type iptc"
_PHOTOSHOP = b"Photoshop 3.0\0"
_MAX_SEGMENT = 65533  # JPEG marker payload limit


def photoshop_resources(payload: bytes) -> dict[int, bytes]:
    """Parse a sequence of 8BIM resources (no "Photoshop 3.0" header) into {id: data}."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 12 <= len(payload) and payload[pos : pos + 4] == b"8BIM":
        (rid,) = struct.unpack(">H", payload[pos + 4 : pos + 6])
        name_len = payload[pos + 6]
        pos += 6 + (name_len + 2) // 2 * 2  # Pascal name, padded to an even length
        if pos + 4 > len(payload):
            raise ValueError("Photoshop resource block is truncated")
        (size,) = struct.unpack(">I", payload[pos : pos + 4])
        pos += 4
        if pos + size > len(payload):
            raise ValueError(f"Photoshop resource {rid:#06x} claims {size} bytes past the end of the block")
        out[rid] = payload[pos : pos + size]
        pos += size + size % 2
    return out


def jpeg_app13(iptc: bytes) -> bytes:
    """Complete APP13 marker segment carrying `iptc` as Photoshop resource 0x0404."""
    resource = b"8BIM" + struct.pack(">H", IPTC_RESOURCE) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    if len(iptc) % 2:
        resource += b"\0"
    payload = _PHOTOSHOP + resource
    if len(payload) > _MAX_SEGMENT:
        raise ValueError(f"IPTC block of {len(iptc)} bytes does not fit in one JPEG APP13 segment")
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def png_text(iptc: bytes) -> str:
    """IPTC as the hex text of a "Raw profile type iptc" chunk."""
    hexed = iptc.hex()
    lines = [hexed[i : i + 72] for i in range(0, len(hexed), 72)]
    return "\niptc\n" + f"{len(iptc):8d}\n" + "\n".join(lines) + "\n"


def from_png_text(text: str) -> bytes:
    """Inverse of png_text; also accepts a Photoshop resource block (as some tools write) and extracts 0x0404."""
    parts = text.strip("\n").split("\n", 2)
    if len(parts) < 3:
        raise ValueError("raw IPTC profile text has no length line")
    size = int(parts[1].strip())
    data = bytes.fromhex("".join(parts[2].split()))
    if len(data) != size:
        raise ValueError(f"raw IPTC profile says {size} bytes but holds {len(data)}")
    if data.startswith(_PHOTOSHOP):
        data = data[len(_PHOTOSHOP) :]
    if data.startswith(b"8BIM"):
        return photoshop_resources(data).get(IPTC_RESOURCE, b"")
    return data
