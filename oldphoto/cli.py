"""Command line: `oldphoto restore | synth | train | eval | export`. The only module that prints (click + rich).

Exit codes of `restore`: 0 every file done or already up to date; 1 some file failed, or the run could not
start (output folder locked by a live run, weights missing, unreadable state file) or lost its output folder
(deleted, moved or replaced while it ran, whether or not a signal stopped it too), or could not remove or
rewrite a file of its own (a killed run's partial file, the state file, the lock); 2 usage error (bad option
value, missing input, --out equal to or inside an input folder, unwritable --report); 130 stopped by Ctrl-C at
any point, model loading included (143 by SIGTERM once the run has started).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import sys
import threading
import time
import types
import unicodedata
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TaskID,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from . import __version__, config_fields
from . import io as oio
from .config import (DETECT_SCALES, FORMATS, SCAN_BLENDS, SCOPES, TILE_SIZES, TONE_MODES, TONE_STRENGTH, RestoreConfig,
                     TileConfig)
from .errors import ImageError, OldPhotoError, SettingsError
from .lock import LOCK_NAME, FolderLost, LockHeld, OutputLock, held_by
from .report import DEVICE_NOTE, FileResult, Report
from .state import STATE_NAME, Decision, Record, RunState, SourceId, StateError, fingerprint, now_iso
from .walk import Found, OutputClaims, discover, out_base

_DEFAULT = RestoreConfig()
_DEFAULT_TILE = TileConfig()


_UNPRINTABLE = frozenset({"Cc", "Cs", "Zl", "Zp"})  # control characters, undecodable bytes, line separators


def _shown(text: Any) -> str:
    """`text` with the characters that would break a one-line message (newline, escape, other control
    characters, the surrogates standing for bytes of a name that are not UTF-8) written as Python escapes
    (\\n, \\x1b, \\udcff); every other character, and so every ordinary name, unchanged."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _UNPRINTABLE else ch
                   for ch in str(text))


class RunError(click.ClickException):
    """The run cannot start or go on; printed as one "error: ..." line, exit code 1."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {_shown(self.format_message())}", err=True)


class Interrupted(click.ClickException):
    """Ctrl-C stopped a training or evaluation command; printed as one "stopped: ..." line, exit code 130."""

    exit_code = 128 + signal.SIGINT

    def show(self, file=None) -> None:
        click.echo(f"stopped: {_shown(self.format_message())}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="oldphoto", message="%(prog)s %(version)s")
def cli() -> None:
    """Restore scanned old photographs (defect detection, latent-space restoration, colorize, upscale)."""


def main() -> None:
    cli(prog_name="oldphoto")


# --------------------------------------------------------------------------------------------------- display

class _RateColumn(ProgressColumn):
    """Items per second of a task, in the unit stored in the task's fields (files, tiles)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "")
        return Text("" if speed is None else f"{speed:.2f} {unit}/s", style="progress.data.speed")


class QuietDisplay:
    """--quiet: nothing but one line per error, on stderr."""

    def start(self, report: Report, todo: int, skipped: int) -> None:
        pass

    def event(self, ev: Any) -> None:
        pass

    def file_done(self, result: FileResult) -> None:
        pass

    def note(self, msg: str) -> None:
        pass

    def error(self, path: str | Path, reason: str) -> None:
        click.echo(f"error: {_shown(path)}: {_shown(reason)}", err=True)

    def close(self) -> None:
        pass

    def summary(self, report: Report) -> None:
        pass


class PlainDisplay(QuietDisplay):
    """Not a terminal (cron, pipes): plain one-line messages on stderr, a summary table on stdout."""

    def __init__(self) -> None:
        self._done = 0
        self._todo = 0

    def _line(self, msg: str) -> None:
        click.echo(_shown(msg), err=True)

    def start(self, report: Report, todo: int, skipped: int) -> None:
        self._todo = todo
        self._line(f"oldphoto {__version__}: {len(report.results)} image(s), {todo} to do, {skipped} up to date; "
                   f"out: {report.out_dir}; device: {report.device}")

    def note(self, msg: str) -> None:
        self._line(msg)

    def file_done(self, result: FileResult) -> None:
        if result.status != "done":
            return
        self._done += 1
        secs = sum(result.seconds.values())
        self._line(f"[{self._done}/{self._todo}] done {result.relative} ({result.width}x{result.height}, "
                   f"{result.megapixels:.2f} MP, {secs:.1f} s)")

    def summary(self, report: Report) -> None:
        t = report.totals()
        table = Table(title=f"oldphoto {__version__}: {_shown(report.out_dir)}", title_justify="left")
        table.add_column("status")
        for col in ("files", "megapixels", "seconds"):
            table.add_column(col, justify="right")
        done = [r for r in report.results if r.status == "done"]
        table.add_row("done", str(t["done"]), f"{t['megapixels']:.2f}",
                      f"{sum(sum(r.seconds.values()) for r in done):.1f}")
        for status in ("skipped", "failed", "interrupted", "pending"):
            if t[status] or status != "pending" and status != "interrupted":
                table.add_row(status, str(t[status]), "", "")
        rate = t["megapixels_per_second"]
        table.add_section()
        table.add_row("run", str(t["files"]), f"{rate:.3f}/s" if rate is not None else "",
                      f"{t['seconds']['wall']:.1f}")
        console = Console(highlight=False)
        console.print(table)
        failed = [r for r in report.results if r.status == "failed"]
        for r in failed[:20]:  # one line each whatever the width (rich wraps at 80 columns off a terminal)
            click.echo(f"failed: {_shown(r.source)}: {_shown(r.error)}")
        if len(failed) > 20:
            click.echo(f"... and {len(failed) - 20} more failures (see the report)")


class RichDisplay(PlainDisplay):
    """A terminal: a files bar and one tiles bar per file in flight, with rates and ETA."""

    def __init__(self) -> None:
        super().__init__()
        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                                 BarColumn(), MofNCompleteColumn(), _RateColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=self.console, transient=False)
        self._files: TaskID | None = None
        self._tiles: dict[Path, TaskID] = {}
        self._lock = threading.Lock()

    def _line(self, msg: str) -> None:
        self.progress.console.print(Text(_shown(msg)))

    def start(self, report: Report, todo: int, skipped: int) -> None:
        super().start(report, todo, skipped)
        self.progress.start()
        self._files = self.progress.add_task("files", total=todo, unit="files")

    def event(self, ev: Any) -> None:
        with self._lock:  # events arrive from worker threads
            task = self._tiles.get(ev.path)
            if ev.kind == "file_start" and task is None:
                self._tiles[ev.path] = self.progress.add_task(f"  {_shown(ev.path.name)}", total=None, unit="tiles")
            elif ev.kind == "tiles" and task is not None:
                self.progress.update(task, total=ev.total or None, completed=ev.done)
            elif ev.kind == "file_done" and task is not None:
                self.progress.remove_task(self._tiles.pop(ev.path))

    def file_done(self, result: FileResult) -> None:
        with self._lock:
            task = self._tiles.pop(Path(result.source), None)
            if task is not None:
                self.progress.remove_task(task)
            if self._files is not None and result.status in ("done", "failed"):
                self.progress.advance(self._files)
        super().file_done(result)

    def error(self, path: str | Path, reason: str) -> None:
        self.console.print(Text(f"error: {_shown(path)}: {_shown(reason)}", style="red"))

    def close(self) -> None:
        self.progress.stop()


def _make_display(quiet: bool) -> QuietDisplay:
    if quiet:
        return QuietDisplay()
    return RichDisplay() if Console(stderr=True).is_terminal else PlainDisplay()


# --------------------------------------------------------------------------------------------------- restore

def _both_ways(path: Path, folder: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """(path, folder) as written (made absolute) and resolved: `in/out` where `in/out` is a link to a folder
    elsewhere is inside `in` as written (the walk of `in` would meet it), not once resolved."""
    return (Path(os.path.abspath(path)), Path(os.path.abspath(folder))), (path.resolve(), folder.resolve())


def _inside_either(path: Path, folder: Path) -> bool:
    """Whether `path` lies below `folder`, as written or resolved (_both_ways)."""
    return any(folder_p in path_p.parents for path_p, folder_p in _both_ways(path, folder))


def _check_out(out: Path, inputs: tuple[Path, ...]) -> None:
    """The scans are masters: outputs never go into an input folder (nor replace it), judged both by the paths as
    written and resolved (_both_ways)."""
    for inp in inputs:
        if not inp.is_dir():
            continue
        for out_p, in_p in _both_ways(out, inp):
            if out_p == in_p:
                raise click.UsageError(f"--out {_shown(out)} is the input folder {_shown(inp)}; write the "
                                       f"restorations elsewhere")
            if in_p in out_p.parents:
                raise click.UsageError(f"--out {_shown(out)} is inside the input folder {_shown(inp)}; choose an "
                                       f"output folder outside the scans so restorations never mix with the originals")


def _check_report(report: Path, out: Path, inputs: tuple[Path, ...] = ()) -> None:
    """An explicit --report can be written where asked: a .json file (not a folder, nor the output folder's state
    or lock file, nor a scan or an output, nor anywhere in an input folder, which holds the masters) under a folder
    that exists or can be created, and is writable.
    Checked before any work, so a bad path is a usage error at once rather than a failure after the whole batch."""
    shown = _shown(report)  # an existing folder is refused by click already
    for inp in inputs:
        if inp.is_dir() and _inside_either(report, inp):
            raise click.UsageError(f"--report {shown} is inside the input folder {_shown(inp)}; the scans' folders "
                                   f"are never written to: put the report elsewhere (by default it goes to --out)")
    if report.resolve() == out.resolve():
        raise click.UsageError(f"--report {shown} is the output folder; give a file name, e.g. "
                               f"{_shown(report / 'report.json')}")
    if report.resolve() in (out.resolve() / STATE_NAME, out.resolve() / LOCK_NAME):
        raise click.UsageError(f"--report {shown} would replace the output folder's own {report.name}")
    if report.suffix.lower() != ".json":  # so that a typo never replaces a scan or a restoration with JSON
        raise click.UsageError(f"--report {shown}: the report is JSON; give a file name ending in .json")
    parent = Path(os.path.abspath(report)).parent
    while not os.path.lexists(parent):  # missing folders are created when the report is written
        parent = parent.parent
    if not parent.is_dir():
        raise click.UsageError(f"--report {shown}: {_shown(parent)} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise click.UsageError(f"--report {shown}: cannot create files in {_shown(parent)}")


class _StopFlag:
    """First Ctrl-C (or SIGTERM): finish cleanly after abandoning the files in flight. Second: stop waiting."""

    def __init__(self, display: QuietDisplay):
        self.event = threading.Event()
        self.signum: int | None = None
        self._display = display
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()
        self._display.note("stopping: abandoning the file(s) in progress; press Ctrl-C again to quit at once")

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. when embedded)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()


@dataclasses.dataclass
class _Job:
    index: int  # position in the report
    found: Found
    reason: str  # why it runs: "new", "overwrite", "settings changed", "output missing: ..." (state.Decision)
    known: SourceId | None = None  # the source as planning read it (its sha256 when planning had to hash it)


def _short(e: BaseException) -> str:
    """One-line reason for a failed file."""
    if isinstance(e, ImageError):
        return e.reason
    if isinstance(e, OSError) and e.strerror:
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror}{where}"
    return " ".join(f"{type(e).__name__}: {e}".split())


def _rel_str(rel: Path) -> str:
    return rel.as_posix()


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; the input tree is mirrored under it.")
@click.option("--only-mask", is_flag=True, help="Write defect masks and overlays only.")
@click.option("--colorize", is_flag=True, help="Add colour to grayscale photos.")
@click.option("--upscale", type=click.Choice(["1", "2", "4"]), default=str(_DEFAULT.upscale), show_default=True)
@click.option("--device", default=_DEFAULT.device, show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULT_TILE.batch_size, show_default=True,
              help="Tiles per forward pass.")
@click.option("--tile", type=click.Choice([str(t) for t in TILE_SIZES]), default=str(_DEFAULT_TILE.size),
              show_default=True)
@click.option("--overlap", type=click.IntRange(min=0), default=_DEFAULT_TILE.overlap, show_default=True)
@click.option("--edge-margin", type=click.IntRange(min=0), default=_DEFAULT_TILE.edge_margin,
              show_default=True, help="Mirrored pixels added around each photo before tiling, so no tile edge "
                   "lies on its border (clean blank borders; the shipped models handle torn edges better without).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=_DEFAULT.format, show_default=True)
@click.option("--overwrite", is_flag=True, help="Redo every file, replacing existing outputs.")
@click.option("--jobs", type=click.IntRange(min=1), default=_DEFAULT.jobs, show_default=True,
              help="Files in flight: the next file is read and decoded while the current one is on the model.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Report file [default: OUT/report.json].")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--dry-run", is_flag=True, help="List what a run would do to each file, and why; write nothing.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=_DEFAULT.max_pixels, show_default=True)
@click.option("--mask-threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Defect probability threshold [default: the restorer's when restoring, the detector's with "
                   "--only-mask].")
@click.option("--mask-dilate", type=click.IntRange(min=0), default=None,
              help="Grow the defect mask by N pixels [default: 1 when restoring, 0 with --only-mask].")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=_DEFAULT.jpeg_quality, show_default=True)
@click.option("--tone", type=click.Choice(TONE_MODES), default=None,
              help="photo: one tone correction for the whole photo; tile: each tile's own (may show blocks); "
                   "scan: keep the scan's tone [default: photo, scan with --scope defects].")
@click.option("--tone-strength", type=click.FloatRange(0, 1), default=None,
              help=f"With --tone photo: the share of the photo's tone correction applied, 0 (the scan's tone) to 1 "
                   f"[default: {TONE_STRENGTH}].")
@click.option("--scope", type=click.Choice(SCOPES), default=_DEFAULT.scope, show_default=True,
              help="all: restore the whole photo; defects: change only the defect mask's pixels, keep every "
                   "other pixel exactly as scanned.")
@click.option("--save-mask", is_flag=True, help="Also write NAME.mask.png: the pixels the restoration refilled.")
@click.option("--scan-blend", type=click.Choice(SCAN_BLENDS), default=_DEFAULT.scan_blend, show_default=True,
              help="auto: on a scan judged mildly degraded, keep part of its own tone and detail outside the "
                   "defects; off: the restoration as is.")
@click.option("--detect-scales", type=click.Choice([str(s) for s in DETECT_SCALES]), default=None,
              help="1: the detector sees each tile as scanned; 2: also at half size, trusted less (wide scratches "
                   "over smooth content, on finely sampled scans); a quarter more detector time "
                   "[default: 2, 1 with --only-mask].")
@click.pass_context
def restore(ctx: click.Context, inputs: tuple[Path, ...], out: Path, only_mask: bool, colorize: bool, upscale: str,
            device: str, batch_size: int, tile: str, overlap: int, edge_margin: int, fmt: str, overwrite: bool,
            jobs: int, report_path: Path | None, quiet: bool, max_pixels: int, mask_threshold: float | None,
            mask_dilate: int | None, jpeg_quality: int, tone: str | None, tone_strength: float | None, scope: str,
            save_mask: bool, scan_blend: str, detect_scales: str | None, dry_run: bool) -> None:
    """Restore the images in INPUTS (files or folders, walked recursively) into --out."""
    try:
        cfg = RestoreConfig(only_mask=only_mask, colorize=colorize, upscale=int(upscale), device=device,
                            tile=TileConfig(size=int(tile), overlap=overlap, batch_size=batch_size,
                                            edge_margin=edge_margin), format=fmt,
                            overwrite=overwrite, jobs=jobs, max_pixels=max_pixels, mask_threshold=mask_threshold,
                            mask_dilate=mask_dilate, jpeg_quality=jpeg_quality, tone=tone,
                            tone_strength=tone_strength, scope=scope, save_mask=save_mask,
                            scan_blend=scan_blend,
                            detect_scales=None if detect_scales is None else int(detect_scales))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    _check_out(out, inputs)
    if report_path is not None:
        if dry_run:
            raise click.UsageError("--dry-run writes nothing, no report either: leave out --report")
        _check_report(report_path, out, inputs)
    display = _make_display(quiet)
    try:
        if dry_run:
            code = _dry_run(inputs, out, cfg, display)
        else:
            code = _run_restore(inputs, out, report_path or out / "report.json", cfg, display)
    except KeyboardInterrupt:  # before the stop flag was installed (loading the models) or after it was removed
        code = _stopped_by_ctrl_c(display)
    ctx.exit(code)


def _stopped_by_ctrl_c(display: QuietDisplay) -> int:
    """Say that a Ctrl-C outside the stop flag's reach ended the run; -> its exit code."""
    display.close()
    display.note("stopped: interrupted by Ctrl-C")
    return 128 + signal.SIGINT


def _setup(cfg: RestoreConfig, report: Report, pipeline: types.ModuleType) -> tuple[Any, Callable[[Path], str]]:
    """(the models, the fingerprint of a source's outputs); fills the report's device, models and fingerprint."""
    try:
        dev = pipeline.resolve_device(cfg.device)
    except OldPhotoError as e:
        raise click.UsageError(str(e)) from None  # e.g. --device cuda on a machine without CUDA
    try:
        models = pipeline.load_models(cfg, dev)
    except OldPhotoError as e:
        raise RunError(str(e)) from None
    report.device = str(dev)
    report.models = models.describe()
    report.fingerprint = fingerprint(pipeline.recorded_settings(cfg, models), report.models)

    def settings_of(src: Path) -> dict:
        """The settings recorded for a source: a PNG or TIFF output does not depend on --jpeg-quality, and a
        --format that writes what keep would is keep (as in the outputs' XMP: process_file records the same)."""
        return pipeline.recorded_settings(cfg, models, pipeline.planned_format(src.suffix, cfg), src.suffix)

    def fp(src: Path) -> str:
        """The fingerprint recorded for a source (settings_of)."""
        return fingerprint(settings_of(src), report.models)

    def former(src: Path) -> tuple[str, ...]:
        """Other fingerprints of the same outputs, as earlier versions recorded them (pipeline.former_settings)."""
        return tuple(fingerprint(s, report.models) for s in pipeline.former_settings(settings_of(src), src.suffix))

    fp.former = former  # see decide's `also`: _plan calls it as fp.former(src)
    return models, fp


def _dry_run(inputs: tuple[Path, ...], out: Path, cfg: RestoreConfig, display: QuietDisplay) -> int:
    """Print what a run with these settings would do to each file, and why, on stdout; write nothing (no output,
    state, report or lock). 1 when some file would fail at once (refused, unreadable) or a live run holds the
    output folder (a run now would not start), else 0."""
    from . import pipeline

    report = Report(out_dir=str(out), inputs=[str(p) for p in inputs], settings=cfg.settings(), started=now_iso())
    _, fp = _setup(cfg, report, pipeline)
    try:
        state = RunState.load(out, read_only=True)
    except StateError as e:
        raise RunError(str(e)) from None
    try:
        holder = held_by(out)
        blocked = holder and f"output folder is in use by {holder}"
    except OSError as e:  # the lock cannot be read (a folder, unreadable) or made: the run stops at once, as here
        blocked = f"cannot create or lock the output folder ({e.strerror or e})"
    if blocked:  # what follows is what a run would do once that is settled
        display.error(out, f"{blocked}: a run now would not start")
    jobs = {job.index: job for job in _plan(inputs, out, cfg, fp, state, report, display, pipeline, lambda: False)}
    verb = "mask" if cfg.only_mask else "restore"
    counts = {verb: 0, "up to date": 0, "fail": 0}
    for i, result in enumerate(report.results):
        where = _shown(result.relative or result.source)
        if i in jobs:
            problem = _header_problem(Path(result.source), cfg.max_pixels)
            if problem:
                result.status, result.error = "failed", problem
                display.error(result.source, problem)
        if i in jobs and result.status != "failed":
            line, kind = f"{verb:<10}  {where}  ({_shown(jobs[i].reason)})", verb
        elif result.status == "skipped":
            how = "  (recognised from its outputs' provenance)" if _RECOGNISED_NOTE in result.notes else ""
            line, kind = f"{'up to date':<10}  {where}{how}", "up to date"
        else:
            line, kind = f"{'fail':<10}  {where}: {_shown(result.error)}", "fail"
        counts[kind] += 1
        click.echo(line)
    click.echo(f"dry run: {counts[verb]} to {verb}, {counts['up to date']} up to date, {counts['fail']} would fail; "
               f"nothing was written")
    return 1 if counts["fail"] or blocked else 0


def _header_problem(src: Path, max_pixels: int) -> str | None:
    """Why the run would refuse `src` from its header alone (not an image, damaged, too large), or None."""
    try:
        oio.probe(src, max_pixels)
    except ImageError as e:
        return e.reason
    return None


def _run_restore(inputs: tuple[Path, ...], out: Path, report_path: Path, cfg: RestoreConfig,
                 display: QuietDisplay) -> int:
    """Run the batch; -> the exit code. When a second Ctrl-C let go of worker threads that are still stuck, the
    process ends here (_hard_exit) whichever way the run ends: a return, a RunError, any other exception."""
    abandoned: list[Future] = []  # files a second Ctrl-C stopped waiting for
    code = 1  # should showing an error fail too
    try:
        code = _restore_batch(inputs, out, report_path, cfg, display, abandoned)
    except BaseException as e:
        if not _stuck(abandoned):
            raise
        code = _show_as_on_exit(e, display)  # the process ends below, not where this would have been shown
    finally:
        if _stuck(abandoned):
            # The interpreter joins every worker thread before the process ends, and one blocked for good in I/O (a
            # hung network share) would keep it alive for ever. What the run owns is settled: its temp files were
            # removed by the commit gate, which lets nothing else in; the state, the report and the lock are written
            # and released, or that failed and was shown.
            _hard_exit(code)
    return code


def _stuck(abandoned: list[Future]) -> bool:
    """Is a thread the run let go of still working (maybe blocked for good)?"""
    return any(not fut.done() for fut in abandoned)


def _show_as_on_exit(e: BaseException, display: QuietDisplay) -> int:
    """Show `e` as it is shown when it ends the process (by click, restore() or the interpreter); -> the exit code it
    gives."""
    if isinstance(e, click.ClickException):
        e.show()
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return _stopped_by_ctrl_c(display)
    sys.excepthook(type(e), e, e.__traceback__)
    return 1


def _restore_batch(inputs: tuple[Path, ...], out: Path, report_path: Path, cfg: RestoreConfig,
                   display: QuietDisplay, abandoned: list[Future]) -> int:
    """The run behind _run_restore; the files a second Ctrl-C stopped waiting for are added to `abandoned`."""
    from . import pipeline  # lazy: torch and the models are only needed here

    t0 = time.monotonic()
    report = Report(out_dir=str(out), inputs=[str(p) for p in inputs], settings=cfg.settings(), started=now_iso())
    # Settle the device and the models before touching --out: a run that cannot start leaves no trace.
    models, fp = _setup(cfg, report, pipeline)
    stop = _StopFlag(display)
    state: RunState | None = None
    unsaved = False  # a file of the run's own could not be removed or rewritten (a partial file, state, lock)
    lost: FolderLost | None = None  # the output folder was deleted, moved or replaced during the run
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = OutputLock(out)
        lock.acquire()
    except LockHeld as e:
        raise RunError(str(e)) from None
    except OSError as e:
        raise RunError(f"{out}: cannot create or lock the output folder ({e.strerror or e})") from None
    try:  # from here on the lock is released whatever happens, a Ctrl-C included
        if lock.took_over is not None:
            display.note(f"note: took over a stale lock left by {lock.took_over.describe()}")
            for tmp in oio.leftover_temps(out, LOCK_NAME):  # we hold the lock: no other run writes there
                try:
                    tmp.unlink()
                    display.note(f"note: {tmp}: removed, a partial file left by that run")
                except FileNotFoundError:
                    pass  # removed by hand meanwhile: the goal holds
                except OSError as e:
                    unsaved = True
                    display.error(tmp, f"cannot remove this partial file left by that run ({e.strerror or e})")
        try:
            state = RunState.open(out)
        except StateError as e:
            raise RunError(str(e)) from None
        except OSError as e:  # e.g. a full disk: compacting it at the start needs a new copy
            raise RunError(f"{out / STATE_NAME}: cannot write the state file ({e.strerror or e})") from None
        if state.dropped_torn_line:
            display.note("note: the previous run stopped while saving its state; its last file will be redone")
        stop.install()
        try:
            jobs = _plan(inputs, out, cfg, fp, state, report, display, pipeline, stop)
            display.start(report, len(jobs), sum(r.status == "skipped" for r in report.results))
            _execute(jobs, out, cfg, fp, models, state, report, display, stop, pipeline, lock, abandoned)
        except KeyboardInterrupt:
            report.interrupted = True  # second Ctrl-C: whatever is still in flight stays "interrupted"
        except FolderLost as e:
            lost = e
        if stop():
            report.interrupted = True
    finally:
        stop.restore()
        display.close()
        report.finished = now_iso()
        report.wall_seconds = time.monotonic() - t0
        if lost is None:
            try:  # once more before the state and report go there: it may have gone after the last file
                lock.check_folder()
            except FolderLost as e:
                lost = e
        if lost is not None:  # its state is not rewritten there, and a report goes only where asked outside it
            report.stopped = f"{lost.reason}: stopped, nothing more written or recorded"
            if _inside_either(report_path, out):
                report_path = None
        try:
            if state is not None:
                state.close(compact=lost is None)
        except OSError as e:  # e.g. a full disk: the file keeps the records as they were appended
            unsaved = True
            display.error(state.path, f"cannot rewrite it compactly ({e.strerror or e}); the records appended "
                                      f"during the run are kept")
        finally:
            try:
                if report_path is not None:
                    report.write(report_path)
            except OSError as e:
                raise RunError(f"{report_path}: cannot write the report ({e.strerror or e})") from None
            finally:
                try:
                    lock.release()
                except OSError as e:  # e.g. the folder became read-only: a lock of a finished run is taken over
                    unsaved = True
                    display.error(lock.path, f"cannot remove the lock ({e.strerror or e}); the next run takes it over")
    display.summary(report)
    if lost is not None:  # one line for the run, after the summary so that it is the last word
        display.error(lost.folder, report.stopped)
        code = 1
    elif report.interrupted:
        code = 128 + (stop.signum or signal.SIGINT)
    else:
        code = 1 if unsaved or any(r.status == "failed" for r in report.results) else 0
    return code


def _hard_exit(code: int) -> None:
    """End the process now, with `code`, without waiting for threads (os._exit skips the interpreter's shutdown,
    which joins them); what was printed is flushed first."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:  # a stream that cannot be flushed (a closed pipe) must not keep the process alive either
        os._exit(code)


def _plan(inputs, out: Path, cfg: RestoreConfig, fp: Callable[[Path], str], state: RunState, report: Report,
          display: QuietDisplay, pipeline: types.ModuleType, stop: _StopFlag) -> list[_Job]:
    """Report entries for every image found; the jobs that need work. Conflicts and up-to-date files are
    settled here, before any model runs. After a stop request the remaining files are left "pending"."""
    disc = discover(inputs, exclude=out)
    for p in disc.ignored:
        display.note(f"note: {p}: not a supported image type (.jpg .jpeg .png .tif .tiff .webp), ignored")
    claims = OutputClaims((f.src for f in disc.found), folders=[p for p in inputs if p.is_dir()])
    jobs: list[_Job] = []
    for found in disc.found:
        result = FileResult(source=str(found.src), relative=_rel_str(found.rel))
        report.results.append(result)
        if stop():
            continue
        try:
            # The suffix as written: the pipeline keeps it with --format keep (when it matches the content).
            planned = pipeline.output_paths(out_base(out, found.rel), found.src.suffix, cfg)
            claims.claim(found.src, planned)
            rel = _rel_str(found.rel)
            if cfg.overwrite:
                decision = Decision("run", "overwrite")
            else:
                wanted, earlier = fp(found.src), fp.former(found.src)
                decision = state.decide(rel, found.src, wanted, earlier)
                if decision.action == "conflict":
                    raise ImageError(found.src, f"{decision.reason}; use --overwrite to replace them")
                # Outputs the state does not know as this file's (the state file was lost): those whose XMP shows
                # that oldphoto made them from this very file are its own (all there and made with these settings:
                # up to date; else redone, as with their record).
                foreign = [p for p in planned if p.exists() and state.owner_of(p) != rel]
                if decision.action == "run" and foreign:
                    known = decision.source if decision.source is not None else SourceId.of(found.src)
                    made, sha = state.made_from(found.src, foreign, rel, known.sha256)
                    for p in foreign:
                        if p not in made:
                            raise ImageError(found.src, f"{p} already exists and was not made from this file "
                                                        f"by oldphoto; use --overwrite to replace it")
                    # the source was read for its sha256 here: neither recognising nor the run reads it again
                    decision = (_recognised(state, rel, found.src, planned, wanted, sha, earlier)
                                or dataclasses.replace(decision, source=dataclasses.replace(known, sha256=sha)))
                    if decision.reason == "new":  # its own outputs are replaced: say why, as their record would
                        missing = next((p for p in planned if not p.exists()), None)
                        why = f"output missing: {Path(os.path.relpath(missing, out)).as_posix()}" if missing \
                            else "settings changed"
                        decision = dataclasses.replace(decision, reason=why)
            if decision.action == "skip":
                _fill_skipped(result, state, rel, decision)
        except ImageError as e:
            result.status, result.error = "failed", e.reason
            display.error(found.src, e.reason)
            continue
        except OSError as e:  # e.g. the source vanished or became unreadable since the walk, the state file cannot grow
            result.status, result.error = "failed", _short(e)
            display.error(found.src, result.error)
            continue
        if decision.action != "skip":
            if decision.reason not in ("new", "overwrite"):
                result.notes.append(f"redone: {decision.reason}")
            jobs.append(_Job(len(report.results) - 1, found, decision.reason, decision.source))
    for problem in disc.problems:
        report.results.append(FileResult(source=str(problem.path), relative="", status="failed",
                                         error=problem.reason))
        display.error(problem.path, problem.reason)
    return jobs


def _recognised(state: RunState, rel: str, src: Path, planned: list[Path], fp: str,
                sha256: str | None = None, also: tuple[str, ...] = ()) -> Decision | None:
    """Outputs this state has no record of that their XMP shows oldphoto made from this very source with these
    settings and models (the state file was lost): recorded again and skipped, instead of refused.
    sha256: the source's, when already read."""
    try:
        info = oio.probe(src)
    except ImageError:
        return None  # the source cannot be read now: the run will say why
    rec = state.recognise(src, planned, fp, (info.width, info.height), rel, sha256, also)
    if rec is None:
        return None
    state.record(rel, rec)
    return Decision("skip", _RECOGNISED_REASON)


_RECOGNISED_REASON = "up to date (recognised from its outputs' provenance)"


_RECOGNISED_NOTE = "not in the state file: recognised from the provenance in its outputs' XMP"


def _fill_skipped(result: FileResult, state: RunState, rel: str, decision: Decision) -> None:
    rec = decision.refreshed or state.records[rel]
    if decision.refreshed is not None:
        before = state.records[rel].source
        state.record(rel, decision.refreshed)  # same content, new mtime or path: remember it so we hash only once
        if rec.source != before:
            result.notes.append(f"source moved but unchanged (same sha256 as {before})")
        else:
            result.notes.append("source touched but unchanged (same sha256)")
    if decision.reason == _RECOGNISED_REASON:
        result.notes.append(_RECOGNISED_NOTE)
    result.status = "skipped"
    result.outputs = [str(state.out_dir / o.path) for o in rec.outputs]
    result.width, result.height, result.megapixels = rec.width, rec.height, rec.megapixels
    result.mask_coverage, result.sha256 = rec.mask_coverage, rec.sha256
    result.notes.extend(rec.notes)  # what the outputs are like, as the run that made them said (after the skip's own)


def _execute(jobs: list[_Job], out: Path, cfg: RestoreConfig, fp: Callable[[Path], str], models, state: RunState,
             report: Report, display: QuietDisplay, stop: _StopFlag, pipeline: types.ModuleType,
             lock: OutputLock, abandoned: list[Future]) -> None:
    """Run the jobs with up to cfg.jobs files in flight, so reading/decoding/encoding of one file overlaps
    the model work of another; results are recorded in the main thread as files finish. Raises FolderLost, once
    the files in flight have ended, when the output folder was deleted, moved or replaced meanwhile (each file
    checks it before its outputs are written and as they go in: lock.check_folder). A second Ctrl-C ends the
    wait: the files still in flight are added to `abandoned`, whose threads may never return."""

    batcher = pipeline.new_batcher(cfg, models)  # the files in flight share device batches
    gate = pipeline.CommitGate(guard=lock.check_folder)  # closed before returning: no outputs go in after that
    lost: list[FolderLost] = []  # the first file that found the output folder gone; the others then stop too

    def stopping() -> bool:
        return stop() or bool(lost)

    def work(job: _Job):
        sid = job.known
        if sid is None or sid.sha256 is None or SourceId.of(job.found.src) != dataclasses.replace(sid, sha256=None):
            # Hashing reads the whole source once, which also brings it into the page cache for the decoder.
            sid = SourceId.of(job.found.src, with_hash=True)
        outcome = pipeline.process_file(job.found.src, out_base(out, job.found.rel), cfg, models,
                                        on_event=display.event, should_stop=stopping, source_sha256=sid.sha256,
                                        batcher=batcher, commit_gate=gate)
        return sid, outcome

    pending = list(jobs)
    running: dict[Future, _Job] = {}
    pool = ThreadPoolExecutor(max_workers=cfg.jobs, thread_name_prefix="oldphoto-file")
    try:
        while pending or running:
            while pending and len(running) < cfg.jobs and not stopping():
                job = pending.pop(0)
                running[pool.submit(work, job)] = job
            if not running:
                break  # stopped with files left: they stay "pending"
            finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in finished:
                found_lost = _collect(fut, running.pop(fut), out, fp, state, report, display)
                if found_lost is not None and not lost:
                    lost.append(found_lost)
        if lost:
            raise lost[0]
    except KeyboardInterrupt:
        # Second Ctrl-C: stop waiting for the files in flight. Once the gate is closed none of them can put
        # outputs in place, nor leave a temp file; those that already did are recorded (their calls only report back
        # after the commit), the rest stay "interrupted". Every wait is bounded: a thread may be blocked for good.
        _let_go(gate, display)
        for fut, job in running.items():
            if gate.passed(job.found.src) and wait([fut], timeout=_LET_GO_S).done:
                _collect(fut, job, out, fp, state, report, display)
            else:
                report.results[job.index].status = "interrupted"
        raise
    finally:
        # Before the gate is closed again: a further signal may cut that short too, and the caller must still know
        # which files' threads may never return (the process then ends without waiting for them). Futures that are
        # done by then are left out there.
        abandoned.extend(running)  # none unless the run is ending early
        pool.shutdown(wait=False, cancel_futures=True)
        _let_go(gate, display)  # again after a signal cut the first one short: it goes on where that stopped
        report.batches = batcher.stats()


_LET_GO_S = 5.0  # how long a second Ctrl-C waits for a commit in progress, or for a file to report it


def _let_go(gate, display: QuietDisplay) -> None:
    """Close the commit gate (see pipeline.CommitGate.close), saying which temp files it could not remove."""
    for tmp, e in gate.close(_LET_GO_S):
        display.error(tmp, f"cannot remove this partial file ({e.strerror or e})")


def _collect(fut: Future, job: _Job, out: Path, fp: Callable[[Path], str], state: RunState, report: Report,
             display: QuietDisplay) -> FolderLost | None:
    """Record a finished file's outcome; the FolderLost it ended with, for the run to stop on (nothing written)."""
    result = report.results[job.index]
    src = job.found.src
    try:
        sid, outcome = fut.result()
    except KeyboardInterrupt:  # the pipeline's answer to should_stop(): nothing was written
        result.status = "interrupted"
        display.file_done(result)
        return None
    except FolderLost as e:  # not this file's fault: the run says so once, for the folder
        result.status = "interrupted"
        display.file_done(result)
        return e
    except Exception as e:  # noqa: BLE001 - one bad file must not end the batch; recorded and printed
        result.status, result.error = "failed", _short(e)
        display.error(src, result.error)
        display.file_done(result)
        return None
    result.status = "done"
    result.outputs = [str(p) for p in outcome.outputs]
    result.width, result.height, result.megapixels = outcome.width, outcome.height, outcome.megapixels
    result.seconds = {k: round(v, 4) for k, v in outcome.seconds.items()}
    result.mask_coverage = outcome.mask_coverage
    if outcome.scan_blend is not None:
        result.scan_blend = [round(v, 4) for v in outcome.scan_blend]
    result.notes.extend(outcome.notes)
    result.sha256 = sid.sha256
    try:
        state.record(result.relative, Record(
            source=os.path.abspath(src), size=sid.size, mtime_ns=sid.mtime_ns, sha256=sid.sha256, fingerprint=fp(src),
            outputs=state.outputs_record(outcome.outputs), width=outcome.width, height=outcome.height,
            megapixels=outcome.megapixels, mask_coverage=outcome.mask_coverage, finished=now_iso(),
            notes=_lasting(outcome.notes)))
    except OSError as e:  # e.g. a full disk: its outputs are in place, but a rerun must check them again
        result.status, result.error = "failed", f"written, but cannot be recorded in the state: {_short(e)}"
        display.error(src, result.error)
    display.file_done(result)
    return None


def _lasting(notes: list[str]) -> tuple[str, ...]:
    """The notes a record keeps, for the report of a later run that skips the file: the pipeline's, about the outputs
    (what they lack, how the scan was read); not what befell this run's device (passes.TiledPass, batching), which
    would read as news in every later report, nor this run's "redone: ..." (not among outcome.notes)."""
    return tuple(n for n in notes if not n.startswith(DEVICE_NOTE))


# --------------------------------------------------------------------------------------------------- synth

@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=click.IntRange(min=16), default=512, show_default=True, help="Edge in pixels.")
@click.option("--generator", type=click.Choice(["training", "second"]), default="training", show_default=True,
              help="The training recipe, or the second generator kept for checking generalisation.")
@click.option("--ageing", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Training recipe: probability of each ageing kind (crazing, foxing, flaking).")
def synth(out: Path, count: int, seed: int, size: int, generator: str, ageing: float) -> None:
    """Write COUNT synthetic degraded examples with their defect masks (and clean originals) into OUT."""
    synth_mod = _import_train_module("oldphoto.train.synth")
    try:
        fn, cfg = synth_mod.recipe(generator, ageing)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--ageing") from None
    out.mkdir(parents=True, exist_ok=True)
    try:
        paths = synth_mod.write_examples(out, count, seed, size, cfg=cfg, generator=fn)
    except OldPhotoError as e:
        raise RunError(str(e)) from None
    for p in paths:
        click.echo(str(p))
    click.echo(f"wrote {len(paths)} file(s) to {out}", err=True)


# --------------------------------------------------------------------------------------------------- train / eval

def _import_train_module(path: str) -> types.ModuleType:
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as e:
        raise RunError(f"{path} cannot be imported ({e}); is that part of oldphoto installed?") from None


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item") and callable(o.item):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


def _log(msg: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {msg}", err=True)


def _run_training_command(kind: str, name: str, pairs: tuple[str, ...], help_config: bool) -> None:
    from . import train  # the name tables only; the modules themselves are imported below, on demand

    table = train.TRAINERS if kind == "train" else train.EVALUATORS
    if name not in table:
        raise click.UsageError(f"unknown {kind} target {name!r}; choose one of: {', '.join(table)}")
    module = _import_train_module(table[name])
    cls_name, fn_name = ("Config", "run") if kind == "train" else ("EvalConfig", "evaluate")
    cls, fn = getattr(module, cls_name, None), getattr(module, fn_name, None)
    if cls is None or fn is None:
        raise RunError(f"{module.__name__} defines no {cls_name} / {fn_name}()")
    defaults = {}
    field_names = {f.name for f in dataclasses.fields(cls)}
    # Names that share a module (vae1 / vae2) are told apart by the config's `which` field.
    if "which" in field_names and list(table.values()).count(table[name]) > 1:
        defaults["which"] = name
    if help_config:  # the defaults this command runs with (`train vae1`: which='vae1')
        click.echo(config_fields.describe(cls, defaults))
        return
    try:
        cfg = config_fields.build(cls, pairs, defaults)
    except config_fields.BadValue as e:
        raise click.BadParameter(e.reason, param_hint="--set" if e.key is None else f"--set {e.key}") from None
    except SettingsError as e:
        raise click.UsageError(str(e)) from None
    _log(f"oldphoto {__version__} {kind} {name}: {cfg}")
    try:
        result = fn(cfg, _log)
    except OldPhotoError as e:
        raise RunError(str(e)) from None
    except KeyboardInterrupt as e:  # training stops at a step boundary with its checkpoint written (loop.Stopped)
        raise Interrupted(str(e) or "interrupted by Ctrl-C") from None
    click.echo(json.dumps(result, indent=2, default=_jsonable))


def _check_export_names(target: str, weights_name: str, counts: tuple[int, ...]) -> None:
    """Usage error (before any work) unless --as gives as many valid registry names as `target` publishes."""
    from . import registry

    try:
        registry.split_names(weights_name, counts, f"{target} takes {' or '.join(map(str, counts))} "
                                                   f"comma-separated name(s)")
    except OldPhotoError as e:
        raise click.BadParameter(str(e), param_hint="--as") from None


_SET_HELP = "Set a config field, typed by the field (repeatable); see --help-config."


@cli.command()
@click.argument("name")
@click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--help-config", is_flag=True, help="List the config fields with their defaults and exit.")
def train(name: str, pairs: tuple[str, ...], help_config: bool) -> None:
    """Train model NAME (detector, vae1, vae2, mapping, refine, joint, colorize, upscale, blend); prints the result
    as JSON. `joint` fine-tunes the published restorer chain (E_RX, T, G_Y, refiner) together on its final output;
    `blend` fits the scan-blend gate beside the pipeline's chain and detector."""
    _run_training_command("train", name, pairs, help_config)


@cli.command(name="eval")
@click.argument("name")
@click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--help-config", is_flag=True, help="List the config fields with their defaults and exit.")
def eval_(name: str, pairs: tuple[str, ...], help_config: bool) -> None:
    """Evaluate NAME (detector, restore, colorize, upscale) on the held-out set; prints metrics as JSON."""
    _run_training_command("eval", name, pairs, help_config)


@cli.command()
@click.argument("name")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--as", "weights_name", required=True, metavar="WEIGHTS",
              help="Registry name to publish under, e.g. detector-v2 (weights/WEIGHTS.pt + MANIFEST.json entry); "
                   "for mapping, MAPPING or MAPPING,VAE1,VAE2; for joint, four: VAE1,MAPPING,VAE2,REFINER.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="The run's in-training best (best.pt) or its final state (ckpt.pt); detector, refine and joint.")
def export(name: str, run_dir: Path, weights_name: str, checkpoint: str) -> None:
    """Publish the best checkpoint of training run RUN_DIR of model NAME into weights/ (sha256, config, data
    recipe and validation metrics go into weights/MANIFEST.json). A mapping run also publishes the two VAEs it
    was trained with (--as MAPPING,VAE1,VAE2; by default as vae1-v1 / vae2-v1); a joint run publishes four entries
    (--as VAE1,MAPPING,VAE2,REFINER). An existing entry is never replaced by other weights."""
    from . import train

    if name not in train.TRAINERS or name in ("vae1", "vae2"):
        choices = [n for n in train.TRAINERS if n not in ("vae1", "vae2")]
        raise click.UsageError(f"unknown export target {name!r}; choose one of: {', '.join(choices)} "
                               "(VAEs are published with their mapping)")
    if checkpoint != "best" and name not in ("detector", "refine", "joint"):
        raise click.UsageError(f"--checkpoint last is for detector, refine and joint runs, not {name}")
    _check_export_names(name, weights_name, train.EXPORT_NAME_COUNTS.get(name, (1,)))
    module = _import_train_module(train.TRAINERS[name])
    try:
        # only the detector, refine and joint exports take `checkpoint`; the others always publish best.pt
        path = module.export(run_dir, weights_name, **({"checkpoint": checkpoint} if checkpoint != "best" else {}))
    except OldPhotoError as e:  # names the file or entry itself
        raise RunError(f"cannot export: {e}") from None
    except (OSError, KeyError, ValueError) as e:
        raise RunError(f"{run_dir}: cannot export: {e}") from None
    click.echo(str(path))


if __name__ == "__main__":
    main()
