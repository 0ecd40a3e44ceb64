"""Progress: what a restore batch (planning.py, runner.py) tells its user interface. The library never prints; the
CLI's displays implement this protocol (rich bars on a terminal, plain lines off one, errors only with --quiet).

In the order a run calls them: `note` and `error` whenever something is to be said (planning's included); `start`
once the plan is made; then, for each file run, `event`s from the worker thread that runs it and `file_done` from
the run's own thread once its result is settled; `close` when no file is in flight any more, before the run settles
its state, report and lock (which may still call `error`). A dry run calls only `note` and `error`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pipeline imports torch: only where a run needs it
    from .pipeline import Event
    from .report import FileResult, Report


class Progress(Protocol):
    def note(self, msg: str) -> None:
        """A line of information: a file given that is no image, a stale lock taken over, a torn state line."""

    def error(self, path: str | Path, reason: str) -> None:
        """`path` (a source, the output folder, a file of the run's own) failed or cannot be used: `reason`, one
        line."""

    def start(self, report: Report, todo: int, skipped: int) -> None:
        """The plan is made: report.results lists every file found; `todo` of them will run, `skipped` are up to
        date."""

    def event(self, ev: Event) -> None:
        """Tile progress of a file in flight (pipeline.Event), from the thread running it."""

    def file_done(self, result: FileResult) -> None:
        """A file that ran is settled: done, failed or interrupted (result.status), as the report has it."""

    def close(self) -> None:
        """No more start, event or file_done: the run is settling its state, report and lock."""
