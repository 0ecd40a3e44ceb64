"""reader.read / probe with `source=`: a file already open (a private copy whose bytes were hashed) is decoded in
place of the path, which names it in errors, with read()'s guarantees (max_pixels, the decoder memory reservation)."""

import shutil
import tempfile

import numpy as np
import pytest
from PIL import Image

from oldphoto.errors import ImageError, NoMemory
from oldphoto.io import buffers, reader


def _png(path, value: int, shape=(6, 8)) -> None:
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def test_read_decodes_the_open_copy_not_the_path_as_it_is_now(tmp_path):
    path = tmp_path / "m.png"
    _png(path, 200)
    with tempfile.TemporaryFile(dir=tmp_path) as copy, open(path, "rb") as fh:
        shutil.copyfileobj(fh, copy)
        _png(path, 7, (3, 3))  # saved over since the copy was made
        copy.seek(5)  # read from the start whatever the position
        assert reader.probe(path, source=copy).width == 8
        pic = reader.read(path, 100, source=copy)
        assert not copy.closed  # the caller's
    assert pic.pixels.shape == (6, 8, 1) and (pic.pixels == 200).all()


def test_read_from_a_source_checks_max_pixels_and_names_the_path(tmp_path):
    path = tmp_path / "m.png"
    _png(path, 1)
    with open(path, "rb") as copy:
        with pytest.raises(ImageError) as e:
            reader.read(tmp_path / "named.png", 47, source=copy)
    assert e.value.path == tmp_path / "named.png" and "exceeds the limit" in e.value.reason
    with tempfile.TemporaryFile(dir=tmp_path) as empty:
        with pytest.raises(ImageError, match="empty file"):
            reader.read(path, 100, source=empty)


def test_read_from_a_source_reserves_its_decoder_memory(tmp_path, monkeypatch):
    path = tmp_path / "m.png"
    _png(path, 1)
    monkeypatch.setattr(buffers, "available_memory", lambda meminfo=None: 1)
    with open(path, "rb") as copy, pytest.raises(NoMemory, match="available now: not read"):
        reader.read(path, 100, source=copy)
    assert buffers.DECODERS.held() == 0
