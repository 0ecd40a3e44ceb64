"""The run report (report.json): one entry per input image, totals, settings, models and timings."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .io.atomic import TempFiles, closing_temps, write_bytes
from .io.buffers import BUFFER_NOTE

# done / skipped / failed are the normal outcomes; an interrupted run also lists the file it abandoned
# ("interrupted") and the files it never reached ("pending"); a run that spent its time budget (--stop-after), the
# files it did not start ("not_started": nothing was abandoned, a rerun takes them).
STATUSES = ("done", "skipped", "failed", "interrupted", "pending", "not_started")
# how a note about the run's device begins (a tile or batch size reduced), not about a file's outputs: such notes are
# not kept in the state for the reports of later runs that skip the file
DEVICE_NOTE = "out of device memory:"


def lasting_notes(notes: Iterable[str]) -> tuple[str, ...]:
    """The notes that stay true of a file's outputs, for the report of a later run that skips it (its state record,
    and oldphoto:Notes in their XMP for a run that recognises them after a lost state file): the pipeline's, about
    the outputs (what they lack, how the scan was read); not what befell this run's device (passes.TiledPass,
    batching) or temp folder (io.buffers), which would read as news in every later report."""
    return tuple(n for n in notes if not n.startswith((DEVICE_NOTE, BUFFER_NOTE)))


@dataclass
class FileResult:
    source: str  # path of the input image as found
    relative: str  # path mirrored under the output folder (POSIX separators)
    status: str = "pending"  # one of STATUSES
    error: str | None = None  # one line, for failed files
    outputs: list[str] = field(default_factory=list)
    # hex sha256 of each of `outputs` (aligned): its bytes as they went into place, for a skipped file as its state
    # record has them; None where not known (recorded by an earlier version; an image recognised from its XMP)
    output_sha256: list[str | None] = field(default_factory=list)
    width: int | None = None  # input pixels
    height: int | None = None
    megapixels: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: read, detect, restore, ..., write
    mask_coverage: float | None = None  # percent of pixels marked as defect
    scan_blend: list[float] | None = None  # strengths [s_lo, s_hi] of --scan-blend auto (1 = the restoration as is)
    notes: list[str] = field(default_factory=list)  # e.g. "CMYK converted to RGB", why a file was redone
    sha256: str | None = None  # of the source, when it was read in full
    sidecar: str | None = None  # the source's XMP sidecar carried beside its restoration (among `outputs`), if one was
    # "done" by writing or removing the restoration's XMP sidecar alone (its source sidecar changed, nothing else): its
    # pixels were not processed in this run, so it does not count in the totals' megapixels
    sidecar_only: bool = False
    # where the defect mask its restoration acted on came from: "detector", or the curated mask file's path (--masks);
    # None where no restoration is described (failed, pending, not_started)
    mask_source: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclass
class Report:
    out_dir: str
    inputs: list[str]  # as given on the command line
    settings: dict  # the full RestoreConfig as a dict
    started: str  # ISO 8601
    finished: str | None = None
    wall_seconds: float = 0.0
    fingerprint: str | None = None  # of the output settings + models, as kept in the state file (for a PNG or TIFF
    #                                 output, whose bytes --jpeg-quality cannot change, without jpeg_quality)
    models: dict = field(default_factory=dict)  # {stage: {"name", "sha256"}}
    device: str | None = None
    interrupted: bool = False
    stopped: str | None = None  # why the run stopped short other than by a signal (its output folder lost, its state
    # file unreadable or not rewritable: then no file is listed), one line
    stop_after: float | None = None  # the run's time budget in seconds from its start (--stop-after); None: none
    # the budget was spent while files were still to start: those are "not_started"; the files in flight then were
    # finished, not abandoned (so never interrupted by it)
    budget_reached: bool = False
    batches: dict = field(default_factory=dict)  # device calls, tiles, tiles per call, calls shared by photos
    # --include / --exclude / --files-from as given (selection.Selection.describe), with the images of the input
    # folders the patterns left out ("left_out") and the folders they left out, never entered ("folders_left_out");
    # None: every image was taken
    selection: dict | None = None
    results: list[FileResult] = field(default_factory=list)
    version: str = __version__

    def totals(self) -> dict:
        """Counts per status, summed stage seconds, and megapixels of the files restored in this run (not those whose
        sidecar alone was rewritten, though their status is "done": nor their seconds)."""
        counts = {s: 0 for s in STATUSES}
        stage_seconds: dict[str, float] = {}
        megapixels = 0.0
        for r in self.results:
            counts[r.status] += 1
            if r.status == "done" and not r.sidecar_only:
                megapixels += r.megapixels or 0.0
                for stage, s in r.seconds.items():
                    stage_seconds[stage] = stage_seconds.get(stage, 0.0) + s
        return {
            "files": len(self.results),
            **counts,
            "megapixels": round(megapixels, 4),
            "seconds": {"wall": round(self.wall_seconds, 3), **{k: round(v, 3) for k, v in stage_seconds.items()}},
            "megapixels_per_second": round(megapixels / self.wall_seconds, 4) if self.wall_seconds > 0 else None,
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        results = d.pop("results")
        return {"oldphoto_version": d.pop("version"), **d, "totals": self.totals(), "files": results}

    def write(self, path: Path, temps: TempFiles | None = None) -> None:
        """Write the report as JSON atomically (temp file in the same folder, fsync, os.replace), its folder made when
        missing. temps: io.TempFiles on the output folder a run holds, for a report inside it, closed by the time this
        returns: written (its folder made) through that folder, wherever it has gone, never into one made under its
        name (nor making it again). OSError; PartialFiles when its temp file could not be removed either."""
        path = Path(path)
        data = (json.dumps(self.to_dict(), indent=2, default=str) + "\n").encode()
        with closing_temps(temps if temps is not None else TempFiles()) as temps:
            temps.makedirs(path.parent)
            write_bytes(path, data, temps)


def load(path: Path) -> dict:
    """The report as plain JSON data (for tools and tests)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
