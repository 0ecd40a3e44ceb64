"""Command line: `oldphoto restore | verify | synth | train | eval | export`. The only module that prints (click +
rich).

Exit codes of `restore`: 0 every file done or already up to date; 1 some file failed, or the run could not
start (output folder locked by a live run, weights missing, unreadable state file) or lost its output folder
(deleted, moved or replaced while it ran, whether or not a signal stopped it too), or could not remove or
rewrite a file of its own (a killed run's partial file, the state file, the lock); 2 usage error (bad option
value, missing input, --out equal to or inside an input folder, unwritable --report); 3 its --stop-after budget
was spent with files not started, none failed (rerun to continue); 130 stopped by Ctrl-C at any point, model
loading included (143 by SIGTERM once the run has started).

Exit codes of `verify`: 0 every output that has a sha256 recorded is as recorded (and every master, with --sources);
1 some file changed, missing or unreadable, or the audit could not be made (no or damaged state file, a live run
holding the folder, or one that held it meanwhile), or its --report could not be written; 2 usage error; 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import re
import signal
import sys
import threading
import time
import types
import unicodedata
from pathlib import Path
from typing import Any, Iterator

import click
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TaskID,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from . import __version__, config_fields, planning, runner, selection
from .config import (DETECT_SCALES, FORMATS, SCAN_BLENDS, SCOPES, TILE_SIZES, TONE_MODES, TONE_STRENGTH, RestoreConfig,
                     TileConfig)
from .errors import BadArgument, CannotRun, OldPhotoError, SettingsError
from .report import FileResult, Report
from .verify import UNVERIFIABLE, Audit, CannotVerify, Check, OnCheck, audit

_DEFAULT = RestoreConfig()
_DEFAULT_TILE = TileConfig()


_UNPRINTABLE = frozenset({"Cc", "Cs", "Zl", "Zp"})  # control characters, undecodable bytes, line separators


# RestoreConfig's refusals name its fields (it is the library's API too); the CLI says them as the options typed.
_OPTION_WORDS = [
    (re.compile(r"\b(only|save)_mask\b"), r"--\1-mask"),
    (re.compile(r"\bcolorize\b"), "--colorize"),
    (re.compile(r"\bupscale x?(\d)\b"), r"--upscale \1"),
    (re.compile(r"\b(scope|tone) '(\w+)'"), r"--\1 \2"),
    (re.compile(r"\btone strength\b"), "--tone-strength"),
    (re.compile(r"\bleave tone unset\b"), "leave out --tone"),
    (re.compile(r"^overlap\b"), "--overlap"),
    (re.compile(r"^masks\b"), "--masks"),
]


def _as_options(message: str) -> str:
    """A RestoreConfig refusal in the words of the command line: 'only_mask' -> '--only-mask', "scope 'defects'"
    -> '--scope defects', 'upscale x2' -> '--upscale 2'."""
    for pattern, words in _OPTION_WORDS:
        message = pattern.sub(words, message)
    return message


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
    """--quiet: nothing but one line per error, on stderr. The displays implement progress.Progress."""

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
        left = _left_out(report.selection)
        budget = "" if report.stop_after is None else f"; stop after {runner.duration_words(report.stop_after)}"
        self._line(f"oldphoto {__version__}: {len(report.results)} image(s), {todo} to do, {skipped} up to date"
                   f"{f', {left}' if left else ''}; out: {report.out_dir}; device: {report.device}{budget}")

    def note(self, msg: str) -> None:
        self._line(msg)

    def file_done(self, result: FileResult) -> None:
        if result.status != "done":
            return
        self._done += 1
        secs = sum(result.seconds.values())
        if result.sidecar_only:
            self._line(f"[{self._done}/{self._todo}] sidecar {result.relative} (the restoration unchanged, "
                       f"{secs:.2f} s)")
            return
        self._line(f"[{self._done}/{self._todo}] done {result.relative} ({result.width}x{result.height}, "
                   f"{result.megapixels:.2f} MP, {secs:.1f} s)")

    def summary(self, report: Report) -> None:
        t = report.totals()
        table = Table(title=f"oldphoto {__version__}: {_shown(report.out_dir)}", title_justify="left")
        table.add_column("status")
        for col in ("files", "megapixels", "seconds"):
            table.add_column(col, justify="right")
        done = [r for r in report.results if r.status == "done" and not r.sidecar_only]
        table.add_row("done", str(len(done)), f"{t['megapixels']:.2f}",
                      f"{sum(sum(r.seconds.values()) for r in done):.1f}")
        if t["done"] > len(done):  # their sidecar alone was rewritten: no megapixels restored (report: done)
            table.add_row("sidecar only", str(t["done"] - len(done)), "", "")
        for status in ("skipped", "failed", "interrupted", "pending", "not_started"):
            if t[status] or status in ("skipped", "failed"):
                table.add_row(status.replace("_", " "), str(t[status]), "", "")
        if _left_out(report.selection):  # not in the report's files: the patterns chose them out (Report.selection)
            table.add_row("left out", str(report.selection["left_out"]), "", "")
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
        if report.budget_reached:
            click.echo(f"stopped at --stop-after {runner.duration_words(report.stop_after)}: {t['not_started']} "
                       f"file(s) not started; rerun to continue")


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


def _left_out(selection: dict | None) -> str | None:
    """'12 left out by --include/--exclude (and 2 folder(s) not entered)', from Report.selection; None without
    patterns."""
    if not selection or not (selection["include"] or selection["exclude"]):
        return None
    options = "/".join(f"--{k}" for k in ("include", "exclude") if selection[k])
    folders = selection["folders_left_out"]
    return f"{selection['left_out']} left out by {options}" + (f" (and {folders} folder(s) not entered)" if folders
                                                                else "")


def _make_display(quiet: bool) -> QuietDisplay:
    if quiet:
        return QuietDisplay()
    return RichDisplay() if Console(stderr=True).is_terminal else PlainDisplay()


# --------------------------------------------------------------------------------------------------- restore

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", re.IGNORECASE)
_LONGEST = 2 ** 63 - 1  # seconds of --stop-after


class _Duration(click.ParamType):
    """--stop-after: '90m', '5h', '1h30m', '45s', '1h30m15s' or plain seconds ('5400') -> whole seconds (int)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value)
        m = _DURATION.fullmatch(text) if text.isascii() else None
        if text.isascii() and text.isdigit():
            groups = (None, None, text)
        elif m is None or not any(m.groups()):
            self.fail(f"{_shown(text)!r} is not a duration: give hours, minutes and seconds as 5h, 90m, 1h30m, 45s, "
                      f"or plain seconds", param, ctx)
        else:
            groups = m.groups()
        # at most what a signed 64-bit integer holds, for any reader of report.json's stop_after; the digits are
        # counted first: Python refuses to read (and json to write) an integer of more than 4300 of them
        if any(len((g or "").lstrip("0")) > 19 for g in groups):
            seconds = _LONGEST + 1
        else:
            seconds = sum(int(g or 0) * size for g, size in zip(groups, (3600, 60, 1)))
        if seconds > _LONGEST:
            self.fail(f"{_shown(text)!r} is too long a duration: at most {_LONGEST} seconds", param, ctx)
        return seconds


@contextlib.contextmanager
def _click_errors() -> Iterator[None]:
    """A restore run's refusals as click's: a bad argument is a usage error (exit 2); a run that cannot start or
    finish, a RunError (exit 1)."""
    try:
        yield
    except BadArgument as e:
        raise click.UsageError(_shown(str(e))) from None
    except CannotRun as e:
        raise RunError(str(e)) from None


class _SignalStop(runner.StopFlag):
    """First Ctrl-C (or SIGTERM): finish cleanly after abandoning the files in flight. Second: stop waiting."""

    def __init__(self, display: QuietDisplay):
        super().__init__()
        self._display = display
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self():
            raise KeyboardInterrupt
        self.request(signum)
        self._display.note("stopping: abandoning the file(s) in progress; press Ctrl-C again to quit at once")

    def listen(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (e.g. when embedded)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def stop_listening(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()


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
@click.option("--stop-after", type=_Duration(), default=None, metavar="DURATION",
              help="Start no new file once this long has passed since the run started (5h, 90m, 1h30m, 45s or "
                   "seconds); the files in flight finish, and a rerun takes up the rest. Exit 3 when files were "
                   "left.")
@click.option("--dry-run", is_flag=True, help="List what a run would do to each file, and why; write nothing.")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Take only the images of the input folders that match (repeatable): '*.tif', 'box12/**'; "
                   "without '/' a name in any folder, with '/' a path below the input folder; case ignored.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Leave out the images, or folders, of the input folders that match (repeatable): '*_access.*', "
                   "'rejected/'.")
@click.option("--files-from", metavar="FILE",
              help="Take only the images listed in FILE ('-': standard input), one path a line, relative to an input "
                   "folder or absolute inside one; '#' lines and blank lines ignored.")
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
@click.option("--masks", "masks", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of curated defect masks laid out as --only-mask writes them (DIR/PATH.mask.png): a scan's "
                   "mask there replaces the detector's; a scan without one gets the detector's.")
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
            save_mask: bool, masks: Path | None, scan_blend: str, detect_scales: str | None, dry_run: bool,
            include: tuple[str, ...], exclude: tuple[str, ...], files_from: str | None, stop_after: int | None) -> None:
    """Restore the images in INPUTS (files or folders, walked recursively) into --out."""
    try:
        cfg = RestoreConfig(only_mask=only_mask, colorize=colorize, upscale=int(upscale), device=device,
                            tile=TileConfig(size=int(tile), overlap=overlap, batch_size=batch_size,
                                            edge_margin=edge_margin), format=fmt,
                            overwrite=overwrite, jobs=jobs, max_pixels=max_pixels, mask_threshold=mask_threshold,
                            mask_dilate=mask_dilate, jpeg_quality=jpeg_quality, tone=tone,
                            tone_strength=tone_strength, scope=scope, save_mask=save_mask,
                            scan_blend=scan_blend,
                            detect_scales=None if detect_scales is None else int(detect_scales), masks=masks)
    except ValueError as e:
        raise click.UsageError(_as_options(str(e))) from None
    with _click_errors():
        listed = None if files_from is None else selection.read_list(files_from, getattr(sys.stdin, "buffer", None))
        select = selection.Selection.build(include, exclude, listed)
        runner.check_out(out, inputs)
        if masks is not None:
            runner.check_masks(masks, out, inputs)
        if report_path is not None:
            if dry_run:
                raise click.UsageError("--dry-run writes nothing, no report either: leave out --report")
            runner.check_report(report_path, out, inputs)
    display = _make_display(quiet)
    try:
        if dry_run:
            if stop_after is not None:  # a time budget cuts a run short somewhere: the list shows all the work
                display.note(f"note: --dry-run ignores --stop-after {runner.duration_words(stop_after)}: it lists "
                             f"all the work, not only what a run would start in that time")
            code = _dry_run(inputs, out, cfg, display, select)
        else:
            budget = None if stop_after is None else runner.Budget(stop_after)
            code = _run_restore(inputs, out, report_path or out / "report.json", cfg, display, select, budget)
    except KeyboardInterrupt:  # before the stop flag was installed (loading the models) or after it was removed
        code = _stopped_by_ctrl_c(display)
    ctx.exit(code)


def _stopped_by_ctrl_c(display: QuietDisplay) -> int:
    """Say that a Ctrl-C outside the stop flag's reach ended the run; -> its exit code."""
    display.close()
    display.note("stopped: interrupted by Ctrl-C")
    return 128 + signal.SIGINT


def _dry_run(inputs: tuple[Path, ...], out: Path, cfg: RestoreConfig, display: QuietDisplay,
             select: selection.Selection = selection.Selection()) -> int:
    """Print what a run with these settings would do to each file, and why, on stdout; write nothing (no output,
    state, report or lock). 1 when some file would fail at once (refused, unreadable) or a live run holds the
    output folder (a run now would not start), else 0."""
    with _click_errors():
        preview = planning.preview(inputs, out, cfg, display, select)
    verb = "mask" if cfg.only_mask else "restore"
    counts = {verb: 0, "sidecar": 0, "up to date": 0, "fail": 0}
    for verdict in preview.verdicts:
        where = _shown(verdict.where)
        if verdict.action == "run":
            line, kind = f"{verb:<10}  {where}  ({_shown(verdict.why)})", verb
        elif verdict.action == "sidecar":  # its restoration stays: only the XMP sidecar beside it is rewritten
            line, kind = f"{'sidecar':<10}  {where}  ({_shown(verdict.why)}; the restoration stays)", "sidecar"
        elif verdict.action == "skip":
            how = "  (recognised from its outputs' provenance)" if verdict.recognised else ""
            how += "".join(f"  ({_shown(note)})" for note in verdict.kept)  # outputs edited since, kept
            line, kind = f"{'up to date':<10}  {where}{how}", "up to date"
        else:
            line, kind = f"{'fail':<10}  {where}: {_shown(verdict.why)}", "fail"
        counts[kind] += 1
        click.echo(line)
    sidecars = f"{counts['sidecar']} sidecar(s) to update, " if counts["sidecar"] else ""
    left = _left_out(preview.selection)
    click.echo(f"dry run: {counts[verb]} to {verb}, {sidecars}{counts['up to date']} up to date, {counts['fail']} "
               f"would fail{f', {left}' if left else ''}; nothing was written")
    return 1 if counts["fail"] or preview.blocked else 0


def _run_restore(inputs: tuple[Path, ...], out: Path, report_path: Path, cfg: RestoreConfig,
                 display: QuietDisplay, select: selection.Selection = selection.Selection(),
                 budget: runner.Budget | None = None) -> int:
    """Run the batch; -> the exit code. When a second Ctrl-C let go of worker threads that are still stuck, the
    process ends here (_hard_exit) whichever way the run ends: a return, a RunError, any other exception."""
    stop = _SignalStop(display)
    batch = runner.Batch(inputs, out, report_path, cfg, display, stop, select, budget)
    code = 1  # should showing an error fail too
    try:
        with _click_errors():
            outcome = batch.run()
        code = _summed_up(outcome, stop, display)
    except BaseException as e:
        if not batch.stuck():
            raise
        code = _show_as_on_exit(e, display)  # the process ends below, not where this would have been shown
    finally:
        if batch.stuck():
            # The interpreter joins every worker thread before the process ends, and one blocked for good in I/O (a
            # hung network share) would keep it alive for ever; what the run owns is settled (Batch.stuck).
            _hard_exit(code)
    return code


EXIT_BUDGET = 3  # restore: --stop-after spent with files not started, none failed


def _summed_up(outcome: runner.Outcome, stop: _SignalStop, display: QuietDisplay) -> int:
    """Show the run's summary (and the lost output folder, as the last word); -> the exit code."""
    report = outcome.report
    display.summary(report)
    if outcome.lost is not None:
        display.error(outcome.lost.folder, report.stopped)
        return 1
    if report.interrupted:
        return 128 + (stop.signum or signal.SIGINT)
    if outcome.unsaved or any(r.status == "failed" for r in report.results):
        return 1
    # a planned end, nothing wrong; distinct from 0 so that a script knows work remains (a budget spent as the last
    # file ran left none: 0)
    return EXIT_BUDGET if report.budget_reached else 0


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


def _hard_exit(code: int) -> None:
    """End the process now, with `code`, without waiting for threads (os._exit skips the interpreter's shutdown,
    which joins them); what was printed is flushed first."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:  # a stream that cannot be flushed (a closed pipe) must not keep the process alive either
        os._exit(code)


# --------------------------------------------------------------------------------------------------- verify

@cli.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sources", is_flag=True, help="Also check each master scan against the sha256 it had when restored.")
@click.option("--list-unverified", is_flag=True,
              help="Name each file that has no sha256 recorded (by default they are only counted).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the audit as JSON to this file [default: none; nothing is written].")
@click.option("--quiet", "-q", is_flag=True, help="Print only the problems found (and errors): nothing when all is "
              "well.")
@click.pass_context
def verify(ctx: click.Context, out: Path, sources: bool, list_unverified: bool, report_path: Path | None,
           quiet: bool) -> None:
    """Check the outputs in OUT against the sha256 each had as it went into place (a fixity audit); writes nothing."""
    if report_path is not None:
        if report_path.resolve() == out.resolve() / "report.json":  # before check_report tries a file there
            raise click.UsageError(f"--report {_shown(report_path)} would replace the last restore run's report; "
                                   f"give another name")
        with _click_errors():
            runner.check_report(report_path, out)
    try:  # a Ctrl-C while the lines are printed or the report written too (it leaves no temp file: Audit.write)
        try:
            with _verify_progress(quiet) as on_check:
                result = audit(out, sources, on_check)
        except CannotVerify as e:
            raise RunError(str(e)) from None
        for checks, master in ((result.outputs, False), (result.masters, True)):
            for check in checks:
                if check.problem or list_unverified and check.status == UNVERIFIABLE:
                    click.echo(_checked_line(check, master))
        if not quiet:
            _verify_summary(result, list_unverified)
        if report_path is not None:
            try:
                result.write(report_path)
            except OSError as e:
                for tmp, why in getattr(e, "left", ()):  # io.PartialFiles: its temp file could not be removed either
                    click.echo(f"error: {_shown(tmp)}: cannot remove this partial file ({_shown(why.strerror or why)})",
                               err=True)
                raise RunError(f"{report_path}: cannot write the report ({e.strerror or e})") from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted by Ctrl-C") from None
    ctx.exit(1 if result.failed else 0)


@contextlib.contextmanager
def _verify_progress(quiet: bool) -> Iterator[OnCheck | None]:
    """The audit's on_check: a files bar on a terminal (not with --quiet), removed once it ends; else None."""
    if quiet or not Console(stderr=True).is_terminal:
        yield None
        return
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=Console(stderr=True, highlight=False), transient=True)
    task = progress.add_task("verify", total=None)

    def on_check(check: Check, done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with progress:
        yield on_check


def _checked_line(check: Check, master: bool) -> str:
    """One line for a file that is not ok: `changed: PATH (recorded sha256 X..., now Y...)`, `missing: PATH`, ...
    (PATH: an output's relative to OUT, a master's absolute), names escaped as in every message."""
    words = [check.reason] if check.reason else []
    if check.sha256 is not None and check.sha256 != check.recorded_sha256:
        words.append(f"recorded sha256 {check.recorded_sha256[:12]}..., now {check.sha256[:12]}...")
    if check.size is not None and check.size != check.recorded_size:
        words.append(f"size {check.recorded_size} -> {check.size} bytes")
    if check.problem and check.recorded_sha256 is None and check.size is not None:
        words.append("no sha256 recorded")
    how = f" ({_shown('; '.join(words))})" if words else ""
    return f"{'master ' if master else ''}{check.status}: {_shown(check.path)}{how}"


def _verify_summary(result: Audit, listed: bool) -> None:
    """The audit's counts in one line (the masters' in a second, when checked), and what the unverifiable mean."""
    def counted(checks: tuple[Check, ...]) -> str:
        n = result.counts(checks)
        words = [f"{n['ok']} ok", f"{n['changed']} changed", f"{n['missing']} missing"]
        return ", ".join(words + [f"{n[s]} {s}" for s in ("unreadable", "unverifiable") if n[s]])

    if result.torn_state:
        click.echo("note: the state file's last line is torn (a run was killed as it recorded a file): that file's "
                   "outputs are checked against the record before it, if any")
    click.echo(f"verified {len(result.outputs)} output(s) of {result.records} file(s) in {_shown(result.out_dir)}: "
               f"{counted(result.outputs)}")
    if result.sources:
        click.echo(f"verified {len(result.masters)} master(s): {counted(result.masters)}")
    unverified = sum(c.status == UNVERIFIABLE for c in result.outputs + result.masters)
    if unverified:
        how = "" if listed else "; --list-unverified names them"
        click.echo(f"{unverified} file(s) have no sha256 recorded, so their bytes were not checked (they do not fail "
                   f"the audit); a restore run with --overwrite (which redoes every file) records them{how}")
    problems = sum(c.problem for c in result.outputs + result.masters)
    click.echo(f"{problems} problem(s) found" if problems else "every file with a sha256 recorded is as recorded")


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
