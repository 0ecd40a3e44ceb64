"""Stand-ins and sample trees shared by the restore tests, through the CLI (test_cli.py) and the library
(test_runner.py); a unique module name: test folders have no __init__.py."""

from __future__ import annotations

import contextlib
import errno
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import oldphoto.pipeline as pipeline
from oldphoto.cli import cli
from oldphoto.errors import ImageError
from oldphoto.io.sidecar import SidecarId, is_sidecar_name, style_of
from oldphoto.state import RunState


class FakeModels:
    def describe(self):
        return {"restorer": {"name": "fake-restorer", "sha256": "ab" * 32}}


class FakePipeline:
    """Writes b"restored:" + the source bytes to each output (b"sidecar:" + its bytes to its XMP sidecar's); sources
    starting with b"BAD" fail."""

    def __init__(self):
        self.calls: list[Path] = []
        self.masks: list[Path | None] = []  # the curated mask each call was given (--masks), in call order
        self.before_write = None  # hook(src, should_stop) run before the outputs are written
        self.after_write = None  # the same, after they are in place
        self.lock = threading.Lock()

    def process_file(self, src, out_base, cfg, models, on_event=None, should_stop=None, source_sha256=None,
                     batcher=None, commit_gate=None, sidecar=None, stale=(), source_stamp=None, mask=None):
        with self.lock:
            self.calls.append(Path(src))
            self.masks.append(mask)
        data = Path(src).read_bytes()
        if data.startswith(b"BAD"):
            raise ImageError(src, "not a decodable image")
        on_event(pipeline.Event("file_start", src, 0, 2))
        on_event(pipeline.Event("tiles", src, 1, 2))
        if self.before_write is not None:
            self.before_write(Path(src), should_stop)
        style = None if sidecar is None or cfg.only_mask else style_of(Path(src).name, sidecar.name)
        outputs = pipeline.output_paths(out_base, Path(src).suffix, cfg, style)
        with commit_gate.entry(src) if commit_gate is not None else contextlib.nullcontext():
            for o in outputs:
                o.parent.mkdir(parents=True, exist_ok=True)
                o.write_bytes(b"sidecar:" + sidecar.read_bytes() if is_sidecar_name(o.name) else b"restored:" + data)
            for o in stale:
                o.unlink(missing_ok=True)
        if self.after_write is not None:
            self.after_write(Path(src), should_stop)
        on_event(pipeline.Event("tiles", src, 2, 2))
        on_event(pipeline.Event("file_done", src, 2, 2))
        read = None if style is None else SidecarId.of(sidecar, with_hash=True)
        return pipeline.FileOutcome(outputs, 40, 30, 0.0012, {"read": 0.01, "restore": 0.02}, 2.5, ["fake note"],
                                    sidecar=read)


def fake_pipeline(monkeypatch) -> FakePipeline:
    """FakeModels and a FakePipeline in place of the real ones, for the rest of the test."""
    fp = FakePipeline()
    monkeypatch.setattr(pipeline, "load_models", lambda cfg, device: FakeModels())
    monkeypatch.setattr(pipeline, "process_file", fp.process_file)
    return fp


class IdentityRestorer:
    def __call__(self, tiles, mask):
        return tiles.clone()


class WhiteDetector:
    """Probability 1 where all channels are above 0.98 (the "scratches" painted by real_scans)."""

    threshold = 0.5

    def __call__(self, tiles):
        return (tiles.min(dim=1, keepdim=True).values > 0.98).float()


class SilentProgress:
    """A Progress (oldphoto.progress) that is told everything and keeps nothing: tests subclass what they watch."""

    def note(self, msg):
        pass

    def error(self, path, reason):
        pass

    def start(self, report, todo, skipped):
        pass

    def event(self, ev):
        pass

    def file_done(self, result):
        pass

    def close(self):
        pass


# an XMP sidecar with a caption: CAPTION_SIDECAR.format("the caption")
CAPTION_SIDECAR = ('<x:xmpmeta xmlns:x="adobe:ns:meta/">'
                   '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                   '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description>'
                   '<rdf:Alt><rdf:li xml:lang="x-default">{}</rdf:li></rdf:Alt></dc:description></rdf:Description>'
                   '</rdf:RDF></x:xmpmeta>')


@contextlib.contextmanager
def full_disk_recording(rel: str):
    """Within the block, the state's record of `rel` fails as on a full disk (ENOSPC); every other file's goes in."""
    real = RunState.record

    def full(self, rel_, record):
        if rel_ == rel:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, rel_, record)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunState, "record", full)
        yield


def stand_in_models(monkeypatch) -> None:
    """The real pipeline, with WhiteDetector and IdentityRestorer for the models, for the rest of the test."""
    def load(cfg, device):
        return pipeline.Models(detector=WhiteDetector(), restorer=None if cfg.only_mask else IdentityRestorer())

    monkeypatch.setattr(pipeline, "load_models", load)


def run(*args, **kw):
    """The command line with `args` (each given as str()), in this process: click's Result; exceptions not caught."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kw)


def put(path: Path, data: bytes = b"JPEGDATA") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def scans(tmp_path: Path) -> Path:
    root = tmp_path / "scans"
    put(root / "a.jpg", b"A-photo")
    put(root / "album 1" / "b.PNG", b"B-photo")
    put(root / "album 1" / "deep" / "c.tif", b"C-photo")
    for junk in (".DS_Store", "Thumbs.db", "desktop.ini", "orphan.xmp", "a.json", "notes.txt", ".hidden/x.jpg",
                 "album 1/._b.PNG", "album 1/scan.bmp"):
        put(root / junk, b"junk")
    return root


def real_scans(tmp_path):
    import numpy as np
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(7)
    root = tmp_path / "scans"
    (root / "box 2").mkdir(parents=True)
    rgb16 = rng.integers(0, 60000, (70, 90, 3), dtype=np.uint16)
    rgb16[10:12, :, :] = 65535  # a bright horizontal scratch
    tifffile.imwrite(root / "box 2" / "portrait.tif", rgb16, photometric="rgb")
    gray8 = rng.integers(0, 240, (50, 40), dtype=np.uint8)
    gray8[:, 5] = 255
    Image.fromarray(gray8, "L").save(root / "street.png")
    (root / "Thumbs.db").write_bytes(b"\0" * 64)
    (root / "orphan.xmp").write_text("<x/>")  # a sidecar of no image: skipped
    (root / "torn.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root, rgb16, gray8
