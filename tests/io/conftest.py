"""Fixtures for the io tests; the builders live in io_samples.py."""

from __future__ import annotations

import pytest

from io_samples import IPTC, SRGB_ICC, XMP, rich_exif
from oldphoto.io import Metadata


@pytest.fixture
def rich_meta() -> Metadata:
    return Metadata(exif=rich_exif(), icc=SRGB_ICC, xmp=XMP, iptc=IPTC, dpi=(600.0, 600.0),
                    tiff_tags={270: "Grandmother at the bakery, 1952", 269: "Box 4", 316: "scanner-pc"})
