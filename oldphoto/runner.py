"""Running a restore batch: its device and models settled, its output folder locked and state opened, the plan
(planning.py) carried out with up to cfg.jobs files in flight, each file recorded as it finishes; then the state,
the report and the lock settled, whatever ended the run. Reports through progress.Progress and never prints; a
StopFlag asks it to stop. Also the checks of where a run may write (check_out, check_report), made before it starts.

pipeline (torch, the models) is imported where a function needs it: the CLI imports this module for every command.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
import time
from contextlib import closing
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from . import io as oio
from . import planning
from .config import RestoreConfig
from .errors import BadArgument, CannotRun, ImageError, reason_of
from .io.atomic import closing_temps, temp_name, write_bytes
from .io.provenance import SourceStamp
from .io.sidecar import SIDECAR_NOTE, is_sidecar_name
from .lock import LOCK_NAME, FolderLost, LockHeld, OutputLock
from .planning import Fingerprints, Job
from .progress import Progress
from .report import Report, lasting_notes
from .selection import Selection
from .state import STATE_NAME, Record, RunState, SourceId, StateError, now_iso
from .walk import out_base

if TYPE_CHECKING:
    from .pipeline import CommitGate, FileOutcome, Models


class StopFlag:
    """A request to stop a run, which polls it (the pipeline too, for the files in flight): once it is set no more
    files are planned or started, those in flight are abandoned (never half written), and what is done stays
    recorded; the report says "interrupted". request() sets it, from any thread. listen() and stop_listening() bracket
    the part of a run that takes requests, from its lock and state being held until its files are settled: here they
    do nothing; the CLI's subclass sets its signal handlers there, and its second signal raises KeyboardInterrupt in
    the main thread, on which the run stops waiting for the files in flight (they stay "interrupted")."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None  # the signal that asked, if one did

    def __call__(self) -> bool:
        return self._event.is_set()

    def request(self, signum: int | None = None) -> None:
        self.signum = signum
        self._event.set()

    def listen(self) -> None:
        pass

    def stop_listening(self) -> None:
        """Also called when listen() was not."""


def window_clock() -> float:
    """Seconds of real time from a fixed point, never set back: Linux's CLOCK_BOOTTIME, which also counts the time the
    machine was suspended (a night's window passes while it sleeps; time.monotonic stops then), else time.monotonic."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.monotonic() if boottime is None else time.clock_gettime(boottime)


class Budget:
    """A run's time budget (--stop-after): once `seconds` have passed since the run started (on `clock`: seconds that
    only go forward, window_clock unless given; tests give their own), no new file is planned or started. Unlike a
    StopFlag it abandons nothing: the files in flight finish and are recorded, the rest stay "not_started" for the
    next run (report.budget_reached)."""

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None) -> None:
        if not seconds >= 0:  # NaN too
            raise ValueError(f"a time budget is 0 seconds or more, got {seconds!r}")
        self.seconds, self._clock = seconds, clock or window_clock
        self._t0: float | None = None

    def start(self) -> None:
        """The run starts now: the budget counts from here, before the models load (that takes part of the night
        too)."""
        self._t0 = self._clock()

    def spent(self) -> bool:
        if self._t0 is None:
            raise RuntimeError("Budget.spent() before start()")
        return self._clock() - self._t0 >= self.seconds


def duration_words(seconds: float) -> str:
    """`seconds` as --stop-after takes it: 5400 -> '1h30m', 18000 -> '5h', 45 -> '45s', 0 -> '0s' (whole seconds)."""
    left = int(round(seconds))
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class Outcome:
    """How a run ended, beyond what its report says."""

    report: Report
    lost: FolderLost | None  # the output folder was deleted, moved or replaced during the run (report.stopped)
    unsaved: bool  # a file of the run's own could not be removed or rewritten (a partial file, the state, the lock)


class Batch:
    """One restore run of `inputs` into `out`, its report written to `report_path`: run() once, then stuck().
    select: the images of the input folders it takes (selection.py); budget: how long it may go on starting files
    (None: no limit), which is not a setting (never in the fingerprint: a run stopped by it is taken up as it was)."""

    def __init__(self, inputs: Sequence[Path], out: Path, report_path: Path, cfg: RestoreConfig, progress: Progress,
                 stop: StopFlag, select: Selection = Selection(), budget: Budget | None = None) -> None:
        self.inputs, self.out, self.report_path, self.cfg = tuple(inputs), out, report_path, cfg
        self.select, self.budget = select, budget
        self.progress, self.stop = progress, stop
        self._abandoned: list[Future] = []  # files a second Ctrl-C stopped waiting for

    def stuck(self) -> bool:
        """Is a thread the run let go of (on a second stop signal) still working, maybe blocked for good in I/O? The
        interpreter joins every worker thread before the process ends, so the caller must end it otherwise (the CLI:
        os._exit); what the run owns is settled by then (run() removed its temp files, let nothing else in, wrote
        and released the state, the report and the lock, or failed to and said so)."""
        return any(not fut.done() for fut in self._abandoned)

    def run(self) -> Outcome:
        """Plan and run the batch. Raises BadArgument or CannotRun when it cannot start (its device or models: nothing
        written, --out not even made; --out locked by a live run or not made: nothing written; its state file that
        cannot be read or rewritten: the report, listing no file, written all the same, its `stopped` saying why, once
        the last run's report there is kept beside it: _keep_last_report) or
        its report cannot be written; KeyboardInterrupt when stopped outside listen()."""
        t0 = time.monotonic()
        if self.budget is not None:
            self.budget.start()
        out, progress, stop = self.out, self.progress, self.stop
        report = Report(out_dir=str(out), inputs=[str(p) for p in self.inputs], settings=self.cfg.settings(),
                        started=now_iso(), stop_after=None if self.budget is None else self.budget.seconds)
        # Settle the device and the models before touching --out: a run that cannot start leaves no trace.
        models, fps = planning.setup(self.cfg, report)
        state: RunState | None = None
        unstarted: str | None = None  # why its state file stopped the run before it planned a file
        unsaved = False  # a file of the run's own could not be removed or rewritten (a partial file, state, lock)
        lost: FolderLost | None = None  # the output folder was deleted, moved or replaced during the run
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock = OutputLock(out)
            lock.acquire()
        except LockHeld as e:
            raise CannotRun(str(e)) from None
        except OSError as e:
            raise CannotRun(f"{out}: cannot create or lock the output folder ({e.strerror or e})") from None
        try:  # from here on the lock is released whatever happens, a Ctrl-C included
            if lock.took_over is not None:
                unsaved = not self._remove_leftovers(lock)
            try:
                state = RunState.open(out, lock.folder_fd)  # a record looks at the outputs in the folder locked
            except (StateError, OSError) as e:
                if isinstance(e, OSError):
                    unsaved = _name_left(e, progress) or unsaved
                    lost = _folder_lost(lock)  # deleted in the instant since it was locked: the folder's line instead
                if lost is None:
                    # the report written all the same says why it lists no file: not a run that found nothing to do
                    report.stopped = str(e) if isinstance(e, StateError) else (  # e.g. a full disk: compacting needs
                        f"{out / STATE_NAME}: cannot write the state file ({e.strerror or e})")  # a copy
                    unstarted = report.stopped  # raised once the report is written and the lock released
            if state is not None:
                if state.dropped_torn_line:
                    progress.note("note: the previous run stopped while saving its state; its last file will be "
                                  "redone")
                stop.listen()
                try:
                    # a file not planned yet is not started either once the budget is spent: planning may read
                    # every source (after a lost state file, to recognise its outputs; after a copy that gave the
                    # sources new mtimes, to compare their sha256), and what it found is recorded as it goes, so the
                    # next run goes on from there. The files it did not look at are "not_started", up to date or not.
                    jobs = planning.plan(self.inputs, out, self.cfg, fps, state, report, progress,
                                         lambda: stop() or self._budget_spent(report, checking=True), self.select)
                    progress.start(report, len(jobs), sum(r.status == "skipped" for r in report.results))
                    self._execute(jobs, fps, models, state, report, lock)
                except KeyboardInterrupt:
                    report.interrupted = True  # second Ctrl-C: whatever is still in flight stays "interrupted"
                except FolderLost as e:
                    lost = e
                if stop():
                    report.interrupted = True
        finally:
            stop.stop_listening()
            for result in report.results:
                if result.status == "pending" and report.budget_reached:  # planned or not, none of them was begun
                    result.status = "not_started"
                if result.status not in ("done", "skipped"):  # planning said where a sidecar-only job's mask came
                    result.mask_source = None  # from: no restoration is described by a file not done (README)
            progress.close()
            report.finished = now_iso()
            report.wall_seconds = time.monotonic() - t0
            lost, unsettled, kept = self._settle(report, state, lock, lost, unstarted is not None)
            unsaved = unsaved or unsettled
        if unstarted is not None and lost is None:
            raise CannotRun(unstarted if kept is None else f"{unstarted}; the last run's report kept as {kept}")
        return Outcome(report, lost, unsaved)

    def _budget_spent(self, report: Report, checking: bool = False) -> bool:
        """Whether the run's budget forbids starting the file waiting now (`checking`: looking at it, in planning);
        the first time it does, the report and a note say so. Asked only while no stop is requested: files a signal
        left are "pending", not "not_started"."""
        if self.budget is None or not self.budget.spent():
            return False
        if not report.budget_reached:
            report.budget_reached = True
            budget = duration_words(self.budget.seconds)
            self.progress.note(f"note: --stop-after {budget} reached while checking which files need work: the rest "
                               f"are not looked at, up to date or not, and none starts" if checking else
                               f"note: --stop-after {budget} reached: no more files start; those in flight finish")
        return True

    def _remove_leftovers(self, lock: OutputLock) -> bool:
        """Remove the temp files the run whose stale lock was taken over left under --out (we hold the lock: no other
        run writes there), through the folder the lock holds, wherever it has gone; -> False when one could not be
        removed, or a folder searched for them."""
        self.progress.note(f"note: took over a stale lock left by {lock.took_over.describe()}")
        removed = True
        with closing(oio.remove_leftover_temps(self.out, lock.folder_fd, LOCK_NAME)) as found:
            for left in found:
                e = left.error
                if e is None:
                    self.progress.note(f"note: {left.path}: removed, a partial file left by that run")
                    continue
                removed = False
                if left.folder:
                    self.progress.error(left.path, f"cannot search this folder for the partial files left by that "
                                                   f"run ({e.strerror or e})")
                else:
                    self.progress.error(left.path, f"cannot remove this partial file left by that run "
                                                   f"({e.strerror or e})")
        return removed

    def _settle(self, report: Report, state: RunState | None, lock: OutputLock, lost: FolderLost | None,
                unstarted: bool = False) -> tuple[FolderLost | None, bool, Path | None]:
        """Rewrite the state compactly, write the report and release the lock, once no file is in flight; -> (the
        output folder lost, now if not before; whether a file of the run's own could not be rewritten or removed: the
        state, a temp file of it or of the report, the lock; where the last run's report was kept, see
        _keep_last_report). A state or report under --out that cannot be written because the folder went in the
        instant after its last check ends the run as the folder's loss, not as theirs. Raises CannotRun when the
        report cannot be written otherwise (the lock is released all the same), unless the run never started
        (`unstarted`: its state file stopped it, which the caller says): then the report's error is one line more."""
        ending = _Ending(report, self.out, lost, self.report_path)
        # checked once more before the state and report go there: it may have gone after the last file
        ending.stop_on(lost or _folder_lost(lock))
        try:
            self._close_state(state, lock, ending)
        finally:
            try:
                self._write_last_report(report, lock, unstarted, ending)
            finally:
                self._release_lock(lock, ending)
        return ending.lost, ending.unsaved, ending.kept

    def _close_state(self, state: RunState | None, lock: OutputLock, ending: _Ending) -> None:
        """Close the state, rewritten compactly unless the folder is lost; one that cannot be is an error line (its
        appended records stay), or the folder's loss when the folder went since its check."""
        try:
            if state is not None:
                state.close(compact=ending.lost is None)
        except OSError as e:  # e.g. a full disk: the file keeps the records as they were appended
            ending.unsaved = _name_left(e, self.progress) or ending.unsaved
            if ending.lost is None:
                ending.stop_on(_folder_lost(lock))  # deleted since its check: the folder's line says it
            if ending.lost is None:
                ending.unsaved = True
                self.progress.error(state.path, f"cannot rewrite it compactly ({e.strerror or e}); the records "
                                                f"appended during the run are kept")

    def _write_last_report(self, report: Report, lock: OutputLock, unstarted: bool, ending: _Ending) -> None:
        """Write the report where it still goes (ending.report_path), the last run's kept first for a run that never
        started. Raises CannotRun when it cannot be written, unless the run never started (an error line then) or
        the folder it goes in is found lost."""
        path = ending.report_path
        try:
            if path is not None:
                write = True
                if unstarted:  # its report lists no file: the last run's is kept first
                    write, ending.kept = self._keep_last_report(path, lock)
                if write:
                    self._write_report(report, path, lock)
        except OSError as e:
            ending.unsaved = _name_left(e, self.progress) or ending.unsaved
            if ending.lost is None and _inside_either(path, self.out):
                ending.stop_on(_folder_lost(lock))  # deleted since its check: the folder's line says it
            if ending.lost is None and unstarted:
                ending.unsaved = True
                self.progress.error(path, f"cannot write the report ({e.strerror or e})")
            elif ending.lost is None:
                raise CannotRun(f"{path}: cannot write the report ({e.strerror or e})") from None

    def _release_lock(self, lock: OutputLock, ending: _Ending) -> None:
        """Release the lock; one that cannot be removed is an error line, and the next run takes it over."""
        try:
            lock.release()
        except OSError as e:  # e.g. the folder became read-only: a lock of a finished run is taken over
            ending.unsaved = True
            self.progress.error(lock.path, f"cannot remove the lock ({e.strerror or e}); the next run takes it over")

    def _keep_last_report(self, path: Path, lock: OutputLock) -> tuple[bool, Path | None]:
        """Before the report of a run that never started (it lists no file) goes to `path`: the report there, of the
        last run that did, is copied beside it as NAME.previous.json, so that the report at `path` says why this run
        did nothing and the last run's is not lost. One of a run that never started either is not kept (a copy made
        before stays). -> (whether the report may now be written at `path`: not when the last one cannot be read or
        kept, which then stays as it is, an error line saying why; where it was kept, or None)."""
        aside = path.with_name(f"{path.stem}.previous{path.suffix}")
        held = _below(path, self.out)  # read and copied through the folder locked, as the report is written
        try:
            data = _read_regular(path, self.out, lock.folder_fd if held else None)
            if data is None or _unstarted_report(data):  # nothing there to keep (no file, a FIFO, ...), or no need
                return True, None
            with closing_temps(self._temps(path, lock)) as temps:
                write_bytes(aside, data, temps)
        except OSError as e:
            _name_left(e, self.progress)
            self.progress.error(path, f"cannot keep the last run's report as {aside.name} ({e.strerror or e}); it "
                                      f"stays as it was, this run's is not written")
            return False, None
        return True, aside

    def _write_report(self, report: Report, path: Path, lock: OutputLock) -> None:
        """Write the report at `path` (see _temps). OSError (PartialFiles: see _name_left)."""
        report.write(path, self._temps(path, lock))

    def _temps(self, path: Path, lock: OutputLock) -> oio.TempFiles:
        """Where a file of the run's own at `path` (its report, the last run's kept) is written: one inside --out
        through the folder locked, as the outputs are (never into one made under its name, nor making it again); one
        elsewhere by name."""
        return oio.TempFiles(self.out, lock.folder_fd) if _below(path, self.out) else oio.TempFiles()

    def _execute(self, jobs: list[Job], fps: Fingerprints, models: Models, state: RunState, report: Report,
                 lock: OutputLock) -> None:
        """Run the jobs with up to cfg.jobs files in flight, so reading/decoding/encoding of one file overlaps
        the model work of another; results are recorded in the main thread as files finish. Raises FolderLost, once
        the files in flight have ended, when the output folder was deleted, moved or replaced meanwhile (each file
        checks it before its outputs are written and as they go in: lock.check_folder). A second Ctrl-C ends the
        wait: the files still in flight are kept for stuck(), as their threads may never return."""
        from . import pipeline

        cfg, stop = self.cfg, self.stop
        batcher = pipeline.new_batcher(cfg, models)  # the files in flight share device batches
        # closed before returning: no outputs go in after that. Their folders and temp files are made, renamed and
        # removed through the folder locked: a folder moved away gets a set being renamed whole and keeps no temp file.
        gate = pipeline.CommitGate(guard=lock.check_folder, temps=oio.TempFiles(self.out, lock.folder_fd))
        lost: list[FolderLost] = []  # the first file that found the output folder gone; the others then stop too

        def stopping() -> bool:
            return stop() or bool(lost)

        def work(job: Job):
            if job.made is not None:  # the restoration stays: its sidecar alone (the record's source, not read again)
                return job.known, pipeline.update_sidecar(
                    job.found.src, out_base(self.out, job.found.rel), cfg, job.made,
                    (job.base.width, job.base.height), commit_gate=gate, sidecar=job.sidecar, stale=job.stale,
                    source_stamp=job.known and job.known.stamp)
            sid = _hashed_source(job)
            # the outputs go in only if the source still stats as sid.stamp (or has sid.sha256): the record and the
            # outputs' provenance then describe the bytes decoded
            outcome = pipeline.process_file(job.found.src, out_base(self.out, job.found.rel), cfg, models,
                                            on_event=self.progress.event, should_stop=stopping,
                                            source_sha256=sid.sha256, batcher=batcher, commit_gate=gate,
                                            sidecar=job.sidecar, stale=job.stale, source_stamp=sid.stamp,
                                            mask=job.mask)
            return sid, outcome

        pending = list(jobs)
        running: dict[Future, Job] = {}
        pool = ThreadPoolExecutor(max_workers=cfg.jobs, thread_name_prefix="oldphoto-file")
        try:
            while pending or running:
                # the budget only keeps new files from starting: those in flight finish (`stopping` is theirs)
                while pending and len(running) < cfg.jobs and not stopping() and not self._budget_spent(report):
                    job = pending.pop(0)
                    report.results[job.index].notes.extend(job.notes)
                    running[pool.submit(work, job)] = job
                if not running:
                    break  # stopped with files left: they stay "pending" ("not_started" for the budget: run())
                finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    found_lost = self._collect(fut, running.pop(fut), fps, state, report, lock)
                    if found_lost is not None and not lost:
                        lost.append(found_lost)
            if lost:
                raise lost[0]
        except KeyboardInterrupt:
            # Second Ctrl-C: stop waiting for the files in flight. Once the gate is closed none of them can put
            # outputs in place, nor leave a temp file; those that already did are recorded (their calls only report
            # back after the commit), the rest stay "interrupted". Every wait is bounded: a thread may be blocked for
            # good.
            _let_go(gate, self.progress)
            for fut, job in running.items():
                passed = gate.passed(job.found.src)
                if passed and wait([fut], timeout=_LET_GO_S).done:
                    self._collect(fut, job, fps, state, report, lock)
                else:
                    report.results[job.index].status = "interrupted"
                    if passed:  # its outputs went in, unrecorded: the record kept lists those they replaced
                        state.unvouch(report.results[job.index].relative)
            raise
        finally:
            # Before the gate is closed again: a further signal may cut that short too, and the caller must still
            # know which files' threads may never return (the process then ends without waiting for them). Futures
            # that are done by then are left out there.
            self._abandoned.extend(running)  # none unless the run is ending early
            pool.shutdown(wait=False, cancel_futures=True)
            _let_go(gate, self.progress)  # again after a signal cut the first one short: it goes on where that stopped
            report.batches = batcher.stats()

    def _collect(self, fut: Future, job: Job, fps: Fingerprints, state: RunState, report: Report,
                 lock: OutputLock) -> FolderLost | None:
        """Record a finished file's outcome; the FolderLost it ended with, for the run to stop on (nothing written).

        Its record goes into the state file held open, wherever the folder has gone since its outputs went in, and
        lists those outputs as they are in that folder (RunState.open's folder_fd): moved, the folder keeps both, which
        agree; deleted, its outputs are no longer there to list and the file stops with the run instead (or, deleted
        once they are listed, the record goes with the folder: nothing is left that says otherwise)."""
        progress = self.progress
        result = report.results[job.index]
        src = job.found.src
        try:
            sid, outcome = fut.result()
        except KeyboardInterrupt:  # the pipeline's answer to should_stop(): nothing was written
            result.status = "interrupted"
            progress.file_done(result)
            return None
        except FolderLost as e:  # not this file's fault: the run says so once, for the folder
            result.status = "interrupted"
            progress.file_done(result)
            return e
        except Exception as e:  # noqa: BLE001 - one bad file must not end the batch; recorded and reported
            result.status, result.error = "failed", reason_of(e)
            progress.error(src, result.error)
            progress.file_done(result)
            return None
        try:
            if job.made is not None:
                record, outcome = _sidecar_record(job.base, outcome, state)
            else:  # outcome.notes hold no "redone: ..." (the run's reason, not the pipeline's): none is kept
                record = Record(
                    source=os.path.abspath(src), size=sid.size, mtime_ns=sid.mtime_ns, sha256=sid.sha256,
                    fingerprint=fps.current(src, outcome.lossless_master),  # as read: replaced since planning?
                    outputs=state.outputs_record(outcome.outputs, outcome.output_sha256), width=outcome.width,
                    height=outcome.height, megapixels=outcome.megapixels, mask_coverage=outcome.mask_coverage,
                    finished=now_iso(), notes=lasting_notes(outcome.notes), sidecar=outcome.sidecar,
                    mask=outcome.mask)
            state.record(result.relative, record)
        except OSError as e:  # e.g. a full disk: its outputs are in place, but a rerun must check them again
            lost = _folder_lost(lock)
            if lost is not None:  # deleted since its outputs went in: stopped with the run, not failed
                result.status = "interrupted"
                progress.file_done(result)
                return lost
            result.status, result.error = "failed", f"written, but cannot be recorded in the state: {reason_of(e)}"
            state.unvouch(result.relative)  # its record, kept, lists the outputs it replaced: not their sha256
            progress.error(src, result.error)
        else:
            result.status = "done"
        result.outputs = [str(p) for p in outcome.outputs]
        result.output_sha256 = [outcome.output_sha256.get(p) for p in outcome.outputs]
        result.width, result.height, result.megapixels = outcome.width, outcome.height, outcome.megapixels
        result.seconds = {k: round(v, 4) for k, v in outcome.seconds.items()}
        result.mask_coverage = outcome.mask_coverage
        if outcome.scan_blend is not None:
            result.scan_blend = [round(v, 4) for v in outcome.scan_blend]
        if job.made is not None:
            result.sidecar_only = True
            result.notes.append(_sidecar_only_note(job, outcome))
            result.notes.extend(n for n in job.base.notes if not n.startswith(SIDECAR_NOTE))
        result.notes.extend(outcome.notes)
        # a sidecar-only job did not read the source whole: its record's sha256, as a skip reports (the same size+mtime)
        result.sha256 = sid.sha256 if job.made is None or sid.sha256 else job.base.sha256
        result.sidecar = planning.carried_sidecar(src, job.sidecar and job.sidecar.name, outcome.outputs)
        if job.made is None:  # a sidecar-only job's is its record's, set by planning
            result.mask_source = planning.mask_source(self.cfg, outcome.mask)
        progress.file_done(result)
        return None


@dataclass
class _Ending:
    """What settling a run's end (Batch._settle) has found so far: the output folder lost, where the report still goes
    (None: nowhere), whether a file of the run's own could not be rewritten or removed, where the last run's report
    was kept."""

    report: Report
    out: Path
    lost: FolderLost | None
    report_path: Path | None
    unsaved: bool = False
    kept: Path | None = None

    def stop_on(self, found: FolderLost | None) -> None:
        """The folder found lost: its state is not rewritten there, and a report goes only where asked outside."""
        if found is not None:
            self.lost = found
            self.report.stopped = f"{found.reason}: stopped, nothing more written or recorded"
            if self.report_path is not None and _inside_either(self.report_path, self.out):
                self.report_path = None


def _hashed_source(job: Job) -> SourceId:
    """The job's source with its sha256, and the stat taken before that was read: planning's while the source stats as
    it did before planning read it (inode and ctime too: a copy with the same size and mtime renamed over it is another
    file), else stat'ed and read again now. ImageError when it cannot be (removed or made unreadable since planning)."""
    sid = job.known
    try:
        if sid is None or sid.sha256 is None or sid.stamp is None or SourceStamp.of(job.found.src) != sid.stamp:
            # Hashing reads the whole source once, which also brings it into the page cache for the decoder.
            sid = SourceId.of(job.found.src, with_hash=True)
    except OSError as e:  # its line, as the reader words it
        raise ImageError(job.found.src, f"cannot open: {e.strerror or e}") from e
    return sid


def _sidecar_record(base: Record, outcome: FileOutcome, state: RunState) -> tuple[Record, FileOutcome]:
    """(the record of a restoration whose sidecar alone was rewritten or removed: `base` with the sidecar's identity,
    the outputs as they are now (the restoration and its mask as recorded, with their sha256 as recorded, then the
    sidecar written, if one was, with its own) and the notes about the sidecar replaced; `outcome` with those outputs
    and sha256s). OSError as outputs_record."""
    images = [o for o in base.outputs if not is_sidecar_name(o.path)]
    kept = {state.out_dir / o.path: o.sha256 for o in images}
    outputs = list(kept) + list(outcome.outputs)
    digests = {p: sha for p, sha in kept.items() if sha is not None} | outcome.output_sha256
    notes = tuple(n for n in base.notes if not n.startswith(SIDECAR_NOTE)) + lasting_notes(outcome.notes)
    listed = state.outputs_record(outputs, digests)
    # an image's digest stays vouched for by the mtime it was recorded with (as planning found it), not by the one it
    # has now: one modified meanwhile loses it on the next run
    listed = tuple(dataclasses.replace(o, mtime_ns=i.mtime_ns) for o, i in zip(listed, images)) + listed[len(images):]
    record = dataclasses.replace(base, outputs=listed, sidecar=outcome.sidecar, notes=notes, finished=now_iso())
    return record, dataclasses.replace(outcome, outputs=outputs, output_sha256=digests)


def _sidecar_only_note(job: Job, outcome: FileOutcome) -> str:
    """The report's note on a file whose sidecar alone was rewritten or removed (its status is "done")."""
    written = [p for p in outcome.outputs if is_sidecar_name(p.name)]
    what = f"{written[0].name} written" if written else "its sidecar removed"
    return f"sidecar only ({job.reason}): {what}, the restoration unchanged"


_LET_GO_S = 5.0  # how long a second Ctrl-C waits for a commit in progress, or for a file to report it


def _let_go(gate: CommitGate, progress: Progress) -> None:
    """Close the commit gate (see pipeline.CommitGate.close), saying which temp files it could not remove."""
    _cannot_remove(gate.close(_LET_GO_S), progress)


def _cannot_remove(left: list[tuple[Path, OSError]], progress: Progress) -> None:
    for tmp, e in left:
        progress.error(tmp, f"cannot remove this partial file ({e.strerror or e})")


def _name_left(e: OSError, progress: Progress) -> bool:
    """Name the temp files that a failed write of the run's own file (its state, its report) could not remove either
    (io.PartialFiles), one error line each as for the outputs' (_let_go); -> whether there were any."""
    left = e.left if isinstance(e, oio.PartialFiles) else []
    _cannot_remove(left, progress)
    return bool(left)


def _read_regular(path: Path, root: Path, root_fd: int | None) -> bytes | None:
    """The bytes of the regular file at `path` (links followed; opened relative to `root_fd`, a descriptor held on
    `root`, when given), or None when there is none: nothing there, or something else (a FIFO, a device), never opened
    in a way that waits (a FIFO with no writer would hang the run for good, its lock held). OSError."""
    name = str(path) if root_fd is None else os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=root_fd).st_mode):
            return None
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=root_fd)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since its stat
            return None
        return f.read()


def _unstarted_report(data: bytes) -> bool:
    """Whether `data` is the report of a run that never started: it lists no file and says why it stopped."""
    try:
        d = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError included; nested too deeply for the parser
        return False
    return isinstance(d, dict) and d.get("files") == [] and bool(d.get("stopped"))


def _folder_lost(lock: OutputLock) -> FolderLost | None:
    """The output folder's loss, if lock.check_folder finds it now."""
    try:
        lock.check_folder()
    except FolderLost as e:
        return e
    return None


# --------------------------------------------------------------------------------------------------- where a run writes

def _both_ways(path: Path, folder: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    """(path, folder) as written (made absolute) and resolved: `in/out` where `in/out` is a link to a folder
    elsewhere is inside `in` as written (the walk of `in` would meet it), not once resolved."""
    return (Path(os.path.abspath(path)), Path(os.path.abspath(folder))), (path.resolve(), folder.resolve())


def _below(path: Path, folder: Path) -> bool:
    """Whether `path` lies below `folder` as written (made absolute), as io.TempFiles takes it."""
    return Path(os.path.abspath(folder)) in Path(os.path.abspath(path)).parents


def _inside_either(path: Path, folder: Path) -> bool:
    """Whether `path` lies below `folder`, as written or resolved (_both_ways)."""
    return any(folder_p in path_p.parents for path_p, folder_p in _both_ways(path, folder))


def check_out(out: Path, inputs: Sequence[Path]) -> None:
    """The scans are masters: outputs never go into an input folder (nor replace it), judged both by the paths as
    written and resolved (_both_ways). BadArgument otherwise."""
    for inp in inputs:
        if not inp.is_dir():
            continue
        for out_p, in_p in _both_ways(out, inp):
            if out_p == in_p:
                raise BadArgument(f"--out {out} is the input folder {inp}; write the restorations elsewhere")
            if in_p in out_p.parents:
                raise BadArgument(f"--out {out} is inside the input folder {inp}; choose an output folder outside "
                                  f"the scans so restorations never mix with the originals")


def check_masks(masks: Path, out: Path, inputs: Sequence[Path]) -> None:
    """The curated masks are read, never written, nor restored: --masks may not be the output folder, nor lie inside
    it or hold it (a --save-mask output could otherwise land on the very mask it was made from), nor be an input
    folder or lie inside one (its masks would be walked as scans); judged both by the paths as written and resolved
    (_both_ways). BadArgument otherwise."""
    for masks_p, out_p in _both_ways(masks, out):
        if masks_p == out_p or out_p in masks_p.parents or masks_p in out_p.parents:
            raise BadArgument(f"--masks {masks} and --out {out} are the same folder or one holds the other; keep the "
                              f"curated masks apart from the restorations")
    for inp in inputs:
        if inp.is_dir() and any(masks_p == in_p or in_p in masks_p.parents for masks_p, in_p in _both_ways(masks, inp)):
            raise BadArgument(f"--masks {masks} is inside the input folder {inp}: its masks would be restored as "
                              f"scans; keep them apart from the scans")


def check_report(report: Path, out: Path, inputs: Sequence[Path] = ()) -> None:
    """A report asked for by path (--report) can be written there: a .json file (not a folder, nor the output
    folder's state or lock file, nor a scan or an output, nor anywhere in an input folder, which holds the masters)
    under a folder that exists or can be created, and where a file can be made (_cannot_create_in); BadArgument
    otherwise.
    Checked before any work, so a bad path is refused at once rather than failing after the whole batch."""
    for inp in inputs:  # an existing folder is refused by the CLI already
        if inp.is_dir() and _inside_either(report, inp):
            raise BadArgument(f"--report {report} is inside the input folder {inp}; the scans' folders are never "
                              f"written to: put the report elsewhere (by default it goes to --out)")
    if report.resolve() == out.resolve():
        raise BadArgument(f"--report {report} is the output folder; give a file name, e.g. {report / 'report.json'}")
    if report.resolve() in (out.resolve() / STATE_NAME, out.resolve() / LOCK_NAME):
        raise BadArgument(f"--report {report} would replace the output folder's own {report.name}")
    if report.suffix.lower() != ".json":  # so that a typo never replaces a scan or a restoration with JSON
        raise BadArgument(f"--report {report}: the report is JSON; give a file name ending in .json")
    parent = Path(os.path.abspath(report)).parent
    while not os.path.lexists(parent):  # missing folders are created when the report is written
        parent = parent.parent
    if not parent.is_dir():
        raise BadArgument(f"--report {report}: {parent} is not a folder")
    cannot = _cannot_create_in(parent, report.name)
    if cannot is not None:
        raise BadArgument(f"--report {report}: {cannot}")


def _cannot_create_in(folder: Path, name: str) -> str | None:
    """Why no file can be created in `folder`, found by creating one there and removing it at once (None: it can).
    os.access asks the permission bits only, which grant root everything: /proc, /sys, a read-only mount or a full
    inode table refuse the file all the same. The file is hidden and named as the run's temp files are
    (io.atomic.temp_name: `.NAME.check.oldphoto-tmp-*`), so that one left by a kill in between is removed like theirs
    when it is in the output folder."""
    probe = temp_name(folder / f"{name}.check")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        return f"cannot create files in {folder} ({e.strerror or e})"
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError as e:  # made but not removable: say where it stays
        return f"the file made in {folder} to try it could not be removed ({e.strerror or e}): {probe}"
    return None
