"""What a restore run does to each image found, and why, settled before any model runs: the state's decisions,
outputs recognised by their provenance after a lost state file, conflicts refused. A dry run (`preview`) lists the
same plan as verdicts. Reports through progress.Progress; never prints.

pipeline (torch, the models) is imported where a function needs it: the CLI imports this module for every command.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from . import io as oio
from .config import RestoreConfig
from .errors import BadArgument, CannotRun, ImageError, OldPhotoError, reason_of
from .io.mask_file import MaskError, MaskId, find_mask
from .io.mask_file import check_header as check_mask_header
from .io.sidecar import SidecarId, is_sidecar_name, style_of
from .lock import held_by
from .progress import Progress
from .report import FileResult, Report
from .selection import Selection
from .state import Decision, EditedOutput, Record, RunState, SourceId, StateError, fingerprint, now_iso
from .walk import Found, OutputClaims, discover, out_base

if TYPE_CHECKING:
    from .io import Provenance
    from .pipeline import Models


@dataclass(frozen=True, eq=False)
class Fingerprints:
    """The settings fingerprints (state.fingerprint) of a source's outputs under one run's settings and models: the
    one its record gets, and those that earlier versions recorded for the very same outputs, which count as current
    too (RunState.decide's `also`). One run's: compared and hashed as an object (not by its models and their
    description, which have no equality worth the name and no hash)."""

    cfg: RestoreConfig
    models: Models
    described: dict  # models.describe(), as in the report
    # source path -> is it a lossless WebP (io.lossless_webp), looked up once a run: planning and the record agree
    lossless: dict = dataclasses.field(default_factory=dict, repr=False)

    def current(self, src: Path, lossless: bool | None = None) -> str:
        """The fingerprint of `src`'s outputs; lossless: whether it is a lossless WebP as the job read it (its record
        says what was written, should the master have been replaced since planning looked), None: as planning saw it."""
        return fingerprint(self._settings(src, lossless), self.described)

    def former(self, src: Path) -> tuple[str, ...]:
        """The fingerprints of the same outputs as earlier versions recorded them (pipeline.former_settings)."""
        from . import pipeline

        return tuple(fingerprint(s, self.described) for s in pipeline.former_settings(self._settings(src), src.suffix))

    def _settings(self, src: Path, read: bool | None = None) -> dict:
        """The settings recorded for a source: a PNG or TIFF output does not depend on --jpeg-quality, nor does the
        WebP output of a lossless WebP master (lossless too: its chunk headers are read to know), and a --format that
        writes what keep would is keep (as in the outputs' XMP: process_file records the same). read: the source as
        the job read it was a lossless WebP, or not (None: looked up here)."""
        from . import pipeline

        fmt = pipeline.planned_format(src.suffix, self.cfg)
        lossless = False
        if fmt == "WEBP" and not self.cfg.only_mask:
            if read is not None:
                self.lossless[src] = read
            elif src not in self.lossless:
                self.lossless[src] = oio.lossless_webp(src)
            lossless = self.lossless[src]
        return pipeline.recorded_settings(self.cfg, self.models, fmt, src.suffix, lossless)


def setup(cfg: RestoreConfig, report: Report) -> tuple[Models, Fingerprints]:
    """(the models, the fingerprints of a source's outputs); fills the report's device, models and fingerprint.
    BadArgument: the device is not there; CannotRun: the models cannot be loaded."""
    from . import pipeline  # torch and the models: only a restore run needs them

    try:
        dev = pipeline.resolve_device(cfg.device)
    except OldPhotoError as e:
        raise BadArgument(str(e)) from None  # e.g. --device cuda on a machine without CUDA
    try:
        models = pipeline.load_models(cfg, dev)
    except OldPhotoError as e:
        raise CannotRun(str(e)) from None
    report.device = str(dev)
    report.models = models.describe()
    report.fingerprint = fingerprint(pipeline.recorded_settings(cfg, models), report.models)
    return models, Fingerprints(cfg, models, report.models)


@dataclass
class Job:
    """A file the run works on."""

    index: int  # position in the report
    found: Found
    reason: str  # why it runs: "new", "overwrite", "settings changed", "output missing: ..." (state.Decision)
    known: SourceId | None = None  # the source as planning read it (its sha256 when planning had to hash it)
    sidecar: Path | None = None  # its XMP sidecar, carried to its restoration (none with --only-mask)
    stale: tuple[Path, ...] = ()  # sidecars of earlier runs beside its restoration that no longer go with it
    # only the sidecar beside its restoration is written or removed (state.Decision "sidecar"): the record it updates
    # (the state's, or one recognised from the outputs' provenance) and the restoration's provenance, which the new
    # sidecar describes it by (pipeline.update_sidecar); None for a job that restores
    base: Record | None = None
    made: Provenance | None = None
    mask: Path | None = None  # its curated mask (--masks), restored with instead of the detector's; None: none
    # notes that describe its work ("redone: REASON", no curated mask): the runner adds them to its report entry when
    # it starts, so a file a stop or --stop-after left unstarted does not read as redone
    notes: tuple[str, ...] = ()


def curated_mask(cfg: RestoreConfig, rel: Path) -> tuple[Path, str] | None:
    """(the path, the name in the mask folder, POSIX) of the curated mask of the scan at `rel` below its input folder
    (cfg.masks / its path without suffix + .mask.png, as --only-mask with --out cfg.masks writes it: walk.out_base;
    io.mask_file.find_mask), None when there is none or --masks is not in use. MaskError when two are there."""
    if cfg.masks is None:
        return None
    path = find_mask(out_base(cfg.masks, rel))
    return None if path is None else (path, path.relative_to(cfg.masks).as_posix())


def mask_source(cfg: RestoreConfig, mask: MaskId | None) -> str:
    """The report's `mask_source` of a restoration made with the curated mask `mask` (None: the detector's)."""
    return "detector" if mask is None or cfg.masks is None else str(cfg.masks / mask.name)


def _no_mask_note(cfg: RestoreConfig, rel: Path) -> str:
    """The note on a scan restored with the detector's mask although --masks is in use."""
    return f"no curated mask {out_base(cfg.masks, rel)}.mask.png: restored with the detector's mask"


def carried_sidecar(src: Path, sidecar: str | None, outputs: Sequence[str | Path]) -> str | None:
    """The report's `sidecar` of a file: its XMP sidecar named `sidecar` (beside `src`), when one of its `outputs` is
    that sidecar carried (io.sidecar: no image output ends in .xmp); else None."""
    if sidecar is None or not any(is_sidecar_name(Path(o).name) for o in outputs):
        return None
    return str(src.with_name(sidecar))


def plan(inputs: Sequence[Path], out: Path, cfg: RestoreConfig, fps: Fingerprints, state: RunState, report: Report,
         progress: Progress, stop: Callable[[], bool], select: Selection = Selection()) -> list[Job]:
    """Report entries for every image found; the jobs that need work. Conflicts and up-to-date files are
    settled here, before any model runs. After a stop request the remaining files are left "pending".
    select: the images of the input folders to take (report.selection says what it left out)."""
    disc = discover(inputs, exclude=out, select=select)
    if select:
        report.selection = {**select.describe(), "left_out": disc.left_out, "folders_left_out": disc.folders_left_out}
    for p in disc.named_over:
        progress.note(f"note: {p}: named as an input, so taken, though {select.filters} would leave it out")
    for p in disc.ignored:
        progress.note(f"note: {p}: not a supported image type (.jpg .jpeg .png .tif .tiff .webp .jp2 .j2k), ignored")
    # a source's sidecar is a master too: no output may land on it
    claims = OutputClaims([f.src for f in disc.found] + [f.sidecar for f in disc.found if f.sidecar is not None],
                          folders=[p for p in inputs if p.is_dir()])
    claimed = _claim_outputs(disc.found, out, cfg, claims)
    jobs: list[Job] = []
    for found in disc.found:
        result = FileResult(source=str(found.src), relative=found.rel.as_posix())
        report.results.append(result)
        if stop():
            continue
        sidecar = None if cfg.only_mask else found.sidecar  # masks and overlays get none
        if found.sidecar_note and not cfg.only_mask:
            result.notes.append(found.sidecar_note)
        try:
            planned = claimed[found.src]
            if isinstance(planned, ImageError):
                raise planned
            rel = found.rel.as_posix()
            mask = curated_mask(cfg, found.rel)
            if cfg.overwrite:
                decision, base, restoration = Decision("run", "overwrite"), None, None
            else:
                decision, base, restoration = _decision(state, rel, found.src, planned, out, cfg, fps, sidecar, mask)
            if decision.action == "skip":
                _fill_skipped(result, state, rel, decision)
                result.mask_source = mask_source(cfg, state.records[rel].mask)
                stale: tuple[Path, ...] = ()
            else:
                stale, decision = _stale_sidecars(state, rel, found.src, planned, decision, claims, cfg)
        except ImageError as e:
            result.status, result.error = "failed", e.reason
            progress.error(found.src, e.reason)
            continue
        except OSError as e:  # e.g. the source vanished or became unreadable since the walk, the state file cannot grow
            result.status, result.error = "failed", reason_of(e)
            progress.error(found.src, result.error)
            continue
        if decision.action == "sidecar":
            result.mask_source = mask_source(cfg, base.mask)
            jobs.append(Job(len(report.results) - 1, found, decision.reason, decision.source, sidecar, stale, base,
                            restoration))
        elif decision.action != "skip":
            said = [f"redone: {decision.reason}"] if decision.reason not in ("new", "overwrite") else []
            if cfg.masks is not None and mask is None:
                said.append(_no_mask_note(cfg, found.rel))
            jobs.append(Job(len(report.results) - 1, found, decision.reason, decision.source, sidecar, stale,
                            mask=None if mask is None else mask[0], notes=tuple(said)))
    for problem in disc.problems:
        report.results.append(FileResult(source=str(problem.path), relative="", status="failed",
                                         error=problem.reason))
        progress.error(problem.path, problem.reason)
    return jobs


def _decision(state: RunState, rel: str, src: Path, planned: list[Path], out: Path, cfg: RestoreConfig,
              fps: Fingerprints, sidecar: Path | None, mask: tuple[Path, str] | None,
              ) -> tuple[Decision, Record | None, Provenance | None]:
    """(what the run does to the source `src`, known as `rel`, whose outputs are `planned`, without --overwrite: the
    state's decision, its outputs changed since recognised as made since (_made_since), or as its own after a lost
    state file (_recognised); for a "sidecar" one: the record it goes on from, the restoration's provenance).
    ImageError: a conflict (outputs of another file, edited since, or not oldphoto's), saying why; OSError."""
    base: Record | None = None
    wanted, earlier = fps.current(src), fps.former(src)
    touched = _touched(planned, out, cfg)
    decision = state.decide(rel, src, wanted, earlier, sidecar, mask, cfg.masks is not None, touched)
    made: dict[Path, Provenance] = {}
    if decision.kept:  # changed since oldphoto wrote them, unless their XMP says it made them since
        decision, base, made = _made_since(state, rel, src, planned, wanted, earlier, decision, sidecar, mask)
    if decision.action == "conflict":  # outputs of another file, or edited since: its reason says so
        raise ImageError(src, decision.reason)
    # Outputs the state does not know as this file's (the state file was lost): those whose XMP shows that oldphoto
    # made them from this very file are its own (all there and made with these settings: up to date, or only the
    # sidecar beside them to write; else redone, as with their record).
    foreign = [p for p in planned if p.exists() and state.owner_of(p) != rel]
    if decision.action in ("run", "sidecar") and foreign:
        theirs, known = _made_from(state, src, [p for p in foreign if p not in made], rel, decision)
        made.update(theirs)
        for p in foreign:
            if p not in made:
                raise ImageError(src, f"{p} already exists and was not made from this file by oldphoto; use "
                                      f"--overwrite to replace it")
        # the source was stat'ed and read for its sha256 here, those outputs' XMP too: neither recognising nor the
        # run reads them again
        decision = dataclasses.replace(decision, source=known)
    if decision.action == "run" and foreign:
        decision, base = _recognised(state, rel, src, planned, wanted, decision, earlier, made, sidecar, mask)
        if decision.reason == "new":  # its own outputs are replaced: say why, as their record would
            missing = next((p for p in planned if not p.exists()), None)
            why = f"output missing: {Path(os.path.relpath(missing, out)).as_posix()}" if missing else "settings changed"
            decision = dataclasses.replace(decision, reason=why)
    elif decision.action == "sidecar" and base is None:
        # its images stay, with their digests (one found at another mtime was read: the same bytes)
        base = decision.refreshed or state.records[rel]
    restoration = None
    if decision.action == "sidecar":
        decision, restoration = _describable(decision, base, planned[0], (wanted, *earlier), made)
    return decision, base, restoration


def _touched(planned: list[Path], out: Path, cfg: RestoreConfig) -> frozenset[str]:
    """The outputs below `out` (POSIX, as a state record lists them) a redo of the file whose outputs are `planned`
    writes or may remove: those, and a sidecar of an earlier run beside its restoration (_stale_sidecars)."""
    from . import pipeline

    beside = [] if cfg.only_mask else pipeline.sidecar_outputs(planned[0])
    return frozenset(Path(os.path.relpath(p, out)).as_posix() for p in [*planned, *beside])


def _claim_outputs(found: Sequence[Found], out: Path, cfg: RestoreConfig, claims: OutputClaims,
                   ) -> dict[Path, list[Path] | ImageError]:
    """By source: the output paths planned for it, claimed in `claims`, or the ImageError saying why they cannot be
    (OutputClaims.claim: a path another source, or a master, holds)."""
    from . import pipeline

    claimed: dict[Path, list[Path] | ImageError] = {}
    # Outputs are claimed first by masters in a format oldphoto writes, then by those in one it does not (JPEG 2000),
    # whose restoration never has their own name: a TIFF master keeps a.tif over the a.jp2 access copy beside it.
    for f in sorted(found, key=lambda each: pipeline.borrows_suffix(each.src.suffix)):
        sidecar = None if cfg.only_mask else f.sidecar  # masks and overlays get none
        try:
            # The suffix as written: the pipeline keeps it with --format keep (when it matches the content).
            planned = pipeline.output_paths(out_base(out, f.rel), f.src.suffix, cfg,
                                            None if sidecar is None else style_of(f.src.name, sidecar.name))
            claims.claim(f.src, planned)
            claimed[f.src] = planned
        except ImageError as e:
            claimed[f.src] = e
    return claimed


def _recognised(state: RunState, rel: str, src: Path, planned: list[Path], fp: str, decision: Decision,
                also: tuple[str, ...], made: dict[Path, Provenance], sidecar: Path | None,
                mask: tuple[Path, str] | None, skip: str = "", curated: MaskId | None = None,
                ) -> tuple[Decision, Record | None]:
    """Outputs this state has no record of that their XMP shows oldphoto made from this very source with these
    settings and models (the state file was lost). With the sidecar beside the restoration that goes with the source's
    XMP sidecar `sidecar` as it is now (none: none), they are recorded again and skipped, instead of refused; the
    restoration and its mask alone recognised, only that sidecar is to be written or removed: a "sidecar" decision,
    with the record recognised (kept to the job: recorded once the sidecar is settled); else `decision` as it was.
    decision.source: the source as planning read it, with its sha256; made: the provenance already read from some of
    the outputs (RunState.made_from). mask: the source's curated mask (path, name), which the outputs must say they
    were made with (None: the detector's). skip: the reason of the skip (_RECOGNISED_REASON when not given).
    curated: that mask as already read, with its sha256 (None: read here)."""
    skip = skip or _RECOGNISED_REASON
    known = decision.source
    try:
        info = oio.probe(src)
        carried = None if sidecar is None else SidecarId.of(sidecar, with_hash=True)
        if curated is None and mask is not None:
            curated = MaskId.of(*mask, with_hash=True)
    except (ImageError, OSError):
        return decision, None  # the source, its sidecar or its mask cannot be read now: the run will say why
    size = (info.width, info.height)
    rec = state.recognise(src, planned, fp, size, rel, known, also, made, carried, curated)
    if rec is not None and carried is not None:  # its sidecar beside it, current
        state.record(rel, rec)
        return Decision("skip", skip), None
    if rec is None:  # the restoration and its mask alone?
        rec = state.recognise(src, [p for p in planned if not is_sidecar_name(p.name)], fp, size, rel, known, also,
                              made, mask=curated)
        if rec is None:
            return decision, None
    from . import pipeline

    # the sidecars beside the restoration that oldphoto made from this source (one the source no longer has too)
    beside = pipeline.sidecar_outputs(planned[0])
    ours = {p: prov for p, prov in made.items() if p in beside}
    ours.update(state.made_from(src, [p for p in beside if p not in ours], rel, known.sha256)[0])
    theirs = [prov.sidecar_sha256 for prov in ours.values()]
    if carried is None and not theirs:  # none then or now (the images' own SidecarSHA256 may name one since removed)
        state.record(rel, rec)
        return Decision("skip", skip), None
    now = None if carried is None else carried.sha256
    why = ("sidecar removed" if carried is None else f"sidecar added: {carried.name}" if not theirs
           else f"sidecar changed: {carried.name}" if now not in theirs else f"sidecar rewritten: {carried.name}")
    return Decision("sidecar", why, source=known), rec


_RECOGNISED_REASON = "up to date (recognised from its outputs' provenance)"
# a file the state file has, whose outputs a run put in place but could not record (_made_since)
_UNRECORDED_REASON = "up to date (its unrecorded outputs recognised from their provenance)"


def _made_since(state: RunState, rel: str, src: Path, planned: list[Path], fp: str, also: tuple[str, ...],
                decision: Decision, sidecar: Path | None, mask: tuple[Path, str] | None,
                ) -> tuple[Decision, Record | None, dict[Path, Provenance]]:
    """(the decision, the record a "sidecar" one goes on from when it is not the state's, the provenances read) for a
    file whose outputs `decision.kept` (a skip or a conflict: RunState.decide) are not as recorded. Those whose XMP
    says oldphoto made them, as the last change, from this very source under these settings and models (`fp`, or one
    of `also`) with its curated mask `mask` as it is now, and later than the record (their event after it was
    finished; a sidecar: or carrying another of the source's sidecars than recorded, as one rewritten alone), are no
    edit: a run that put them in place was stopped before it could record them (killed, a full disk, a second
    Ctrl-C). An edit that keeps the packet of the outputs recorded (captions a cataloguing tool wrote into the sidecar
    beside the restoration, bytes appended) stays one. All of them so, the file is recognised as after a
    lost state file (_recognised: recorded again and skipped, or only the sidecar beside the restoration to write);
    else a conflict goes on as the decision `then` it would be without them (a "sidecar" one redone: the record it
    would go on from lists them as they were), or fails for the others alone. A skip not so recognised stays as it
    is. OSError, ImageError: the source or its mask cannot be read."""
    rec = state.records[rel]
    carried = None if rec.sidecar is None else rec.sidecar.sha256
    # Their XMP first: only an output that says it was made under these settings after the record (or a sidecar
    # carrying another scan sidecar) has the scan and its curated mask read for their sha256, so a rerun over an edit
    # that kept oldphoto's packet (the usual kept edit) stays a stat per file
    read: dict[Path, Provenance] = {}
    for e in decision.kept:
        p = state.out_dir / e.path
        prov = oio.read_provenance(p) if p.is_file() else None
        if (prov is not None and set(prov.parameters) == {"settings", "models"}
                and fingerprint(prov.parameters["settings"], prov.parameters["models"]) in (fp, *also)
                and (_later(prov.when, rec.finished) or (is_sidecar_name(p.name) and prov.sidecar_sha256 != carried))):
            read[p] = prov
    if not read:
        return decision, None, {}
    made, known = _made_from(state, src, list(read), rel, decision, read)
    curated = None if mask is None else MaskId.of(*mask, with_hash=True)
    ours = {Path(os.path.relpath(p, state.out_dir)).as_posix() for p, prov in made.items()
            if prov.mask_sha256 == (None if curated is None else curated.sha256)}
    if not ours:
        return decision, None, made
    edited = [e for e in decision.kept if e.path not in ours]
    if not edited:
        then, base = _recognised(state, rel, src, planned, fp, Decision("run", "", source=known), also, made,
                                 sidecar, mask, _UNRECORDED_REASON, curated)
        if then.action != "run":
            return then, base, made
    if decision.then is None:  # a skip: its outputs as they are, each noted
        return decision, None, made
    action, why = decision.then.action, decision.then.reason
    if edited:
        return dataclasses.replace(decision, reason=state.edited_reason(edited, action, why), kept=tuple(edited),
                                   source=known), None, made
    return Decision("run", why, source=known), None, made


def _made_from(state: RunState, src: Path, outputs: list[Path], rel: str, decision: Decision,
               read: dict[Path, Provenance] | None = None) -> tuple[dict[Path, Provenance], SourceId]:
    """(RunState.made_from's provenances of those of `outputs` oldphoto made from `src`, read: as there; the source as
    `decision` read it, stat'ed here when it did not, with its sha256 when it was read for them), so that neither
    planning nor the run reads it again. OSError, ImageError: the source cannot be read."""
    known = decision.source if decision.source is not None else SourceId.of(src)
    made, sha = state.made_from(src, outputs, rel, known.sha256, read)
    return made, dataclasses.replace(known, sha256=sha)


def _describable(decision: Decision, base: Record, restoration: Path, fps: tuple[str, ...],
                 made: dict[Path, Provenance]) -> tuple[Decision, Provenance | None]:
    """(a "sidecar" decision as it stands, the restoration's provenance, by which the sidecar describes it) when the
    restoration's XMP says oldphoto made it, as the last change, from the recorded source under these settings and
    models, with its ids and time, the instance being the one its event made; else a "run" decision (its XMP could
    not hold that entry, another tool changed it since, or saved it as a new instance without a step of its own):
    the file is redone, as before sidecars were rewritten alone. made: provenances already read."""
    try:
        prov = made[restoration] if restoration in made else oio.read_provenance(restoration)
    except OSError:
        prov = None
    if (prov is not None and prov.source_sha256 == base.sha256 and prov.document_id and prov.instance_id
            and prov.instance_id == prov.event_instance_id and set(prov.parameters) == {"settings", "models"}
            and fingerprint(prov.parameters["settings"], prov.parameters["models"]) in fps and _zoned(prov.when)):
        return decision, prov
    return dataclasses.replace(decision, action="run"), None


def _later(stamp: str | None, than: str) -> bool:
    """Whether the ISO 8601 time `stamp` (an stEvt:when, with its offset) is after `than` (a record's finished): in
    whole seconds, as both are written, so one in the same second is not."""
    try:
        return stamp is not None and datetime.fromisoformat(stamp) > datetime.fromisoformat(than)
    except (ValueError, TypeError):  # TypeError: one of them without its offset
        return False


def _zoned(stamp: str | None) -> bool:
    """Whether `stamp` is an ISO 8601 time with its offset, as provenance_xmp writes stEvt:when."""
    try:
        return stamp is not None and datetime.fromisoformat(stamp).tzinfo is not None
    except ValueError:
        return False


def _stale_sidecars(state: RunState, rel: str, src: Path, planned: list[Path], decision: Decision,
                    claims: OutputClaims, cfg: RestoreConfig) -> tuple[tuple[Path, ...], Decision]:
    """(sidecars beside the restored photo's name that earlier runs made from this source and this run does not
    write: the source's sidecar was removed or renamed since, so they no longer describe the restoration; the decision
    with the source's sha256 when it had to be read for them). Ours by this source's record, else by their XMP (a lost
    state file); another tool's sidecar there is left alone. The pipeline removes them as the outputs go in."""
    if cfg.only_mask:
        return (), decision
    from . import pipeline

    there = [p for p in pipeline.sidecar_outputs(planned[0]) if p not in planned and p.is_file()
             and not claims.taken(p, src)]
    stale = [p for p in there if state.owner_of(p) == rel]
    unknown = [p for p in there if state.owner_of(p) is None]
    if unknown:
        made, known = _made_from(state, src, unknown, rel, decision)
        stale += [p for p in unknown if p in made]
        decision = dataclasses.replace(decision, source=known)
    claims.claim(src, stale)  # no other source of this run may write there meanwhile
    return tuple(stale), decision


# the notes on a file skipped by its outputs' provenance: the state file has no record of it (lost), or its record
# is older than its outputs, which a run put in place but could not record (killed, a full disk, a second Ctrl-C)
_RECOGNISED_NOTES = {
    _RECOGNISED_REASON: "not in the state file: recognised from the provenance in its outputs' XMP",
    _UNRECORDED_REASON: "outputs put in place by a run that could not record them: recognised from the provenance "
                        "in their XMP",
}


def _fill_skipped(result: FileResult, state: RunState, rel: str, decision: Decision) -> None:
    """The report entry `result` of the file `rel` skipped by `decision`, from its record (as refreshed, which the
    state then keeps): the skip's own notes (what was touched but unchanged, recognised, kept, not vouched for), then
    the record's; the outputs' sha256 as recorded, but None for those changed, or perhaps changed, since."""
    rec = decision.refreshed or state.records[rel]
    if decision.refreshed is not None:
        before = state.records[rel]
        state.record(rel, decision.refreshed)  # same content, new mtime or path: remember it so we hash only once
        if rec.source != before.source:
            result.notes.append(f"source moved but unchanged (same sha256 as {before.source})")
        elif rec.mtime_ns != before.mtime_ns:
            result.notes.append("source touched but unchanged (same sha256)")
        if rec.sidecar != before.sidecar:
            result.notes.append(f"sidecar {rec.sidecar.name} touched but unchanged (same sha256)")
        if rec.mask != before.mask:
            result.notes.append(f"mask {rec.mask.name} touched but unchanged (same sha256)")
    if decision.reason in _RECOGNISED_NOTES:
        result.notes.append(_RECOGNISED_NOTES[decision.reason])
    result.notes.extend(kept_note(state.out_dir / e.path, e) for e in decision.kept)
    # its record keeps their digests as written (a redo reads them to tell an edit from a touch): said on every skip
    result.notes.extend(f"output modified since it was recorded (same size): its sha256 is not given: {p}"
                        for p in decision.unvouched)
    unknown = {e.path for e in decision.kept} | set(decision.unvouched)
    result.status = "skipped"
    result.outputs = [str(state.out_dir / o.path) for o in rec.outputs]
    # as recorded (a skip reads no output), but for those changed, or perhaps changed, since: not the bytes there
    result.output_sha256 = [None if o.path in unknown else o.sha256 for o in rec.outputs]
    result.width, result.height, result.megapixels = rec.width, rec.height, rec.megapixels
    result.mask_coverage, result.sha256 = rec.mask_coverage, rec.sha256
    result.sidecar = carried_sidecar(Path(result.source), rec.sidecar and rec.sidecar.name, result.outputs)
    result.notes.extend(rec.notes)  # what the outputs are like, as the run that made them said (after the skip's own)


_KEPT_TAIL = ": kept; --overwrite replaces it"


def kept_note(path: Path, edited: EditedOutput) -> str:
    """The note on a skipped file's output `edited` (at `path`) changed since oldphoto wrote it, said on every run
    that finds it so (its record keeps the size written): the folder holds work that is not oldphoto's."""
    return (f"{path} changed since oldphoto wrote it ({edited.size} bytes, {edited.recorded} as written)"
            f"{_KEPT_TAIL}")


# --------------------------------------------------------------------------------------------------- dry run

@dataclass(frozen=True)
class Verdict:
    """What a run would do to one file now, and why: a dry run's line."""

    action: str  # "run" | "sidecar" (only the restoration's XMP sidecar rewritten) | "skip" (up to date) | "fail"
    where: str  # the file as the report names it: its path below its input folder, else the path given
    why: str | None = None  # why it would run (state.Decision's reason) or fail
    recognised: bool = False  # up to date by its outputs' provenance, not by a record of the state file
    kept: tuple[str, ...] = ()  # up to date: the notes on its outputs changed since oldphoto wrote them (kept_note)


@dataclass(frozen=True)
class Preview:
    blocked: str | None  # why a run now would not start (a live run holds the output folder, its lock cannot be made)
    verdicts: Iterator[Verdict]  # a file each, in the report's order; a file to run has its header read as it comes
    selection: dict | None = None  # what the selection left out (Report.selection)


def preview(inputs: Sequence[Path], out: Path, cfg: RestoreConfig, progress: Progress,
            select: Selection = Selection()) -> Preview:
    """What a run with these settings would do to each file, and why; writes nothing (no output, state, report or
    lock). Raises BadArgument and CannotRun as the run would at its start (device, models, an unreadable state file);
    a run that would be blocked is reported through `progress`, and the verdicts say what it would do once that is
    settled."""
    report = Report(out_dir=str(out), inputs=[str(p) for p in inputs], settings=cfg.settings(), started=now_iso())
    _, fps = setup(cfg, report)
    try:
        state = RunState.load(out, read_only=True)
    except StateError as e:
        raise CannotRun(str(e)) from None
    try:
        holder = held_by(out)
        blocked = holder and f"output folder is in use by {holder}"
    except OSError as e:  # the lock cannot be read (a folder, unreadable) or made: the run stops at once, as here
        blocked = f"cannot create or lock the output folder ({e.strerror or e})"
    if blocked:
        progress.error(out, f"{blocked}: a run now would not start")
    jobs = {job.index: job for job in plan(inputs, out, cfg, fps, state, report, progress, lambda: False, select)}
    return Preview(blocked, _verdicts(report, jobs, cfg.max_pixels, progress), report.selection)


def _verdicts(report: Report, jobs: dict[int, Job], max_pixels: int, progress: Progress) -> Iterator[Verdict]:
    for i, result in enumerate(report.results):
        where = result.relative or result.source
        if i in jobs:
            problem = _header_problem(Path(result.source), max_pixels, jobs[i].mask)
            if problem:
                result.status, result.error = "failed", problem
                progress.error(result.source, problem)
        if i in jobs and result.status != "failed":
            yield Verdict("run" if jobs[i].made is None else "sidecar", where, jobs[i].reason)
        elif result.status == "skipped":
            yield Verdict("skip", where, recognised=any(n in result.notes for n in _RECOGNISED_NOTES.values()),
                          kept=tuple(n for n in result.notes if n.endswith(_KEPT_TAIL)))
        else:
            yield Verdict("fail", where, result.error)


def _header_problem(src: Path, max_pixels: int, mask: Path | None = None) -> str | None:
    """Why the run would refuse `src` from its header alone (not an image, damaged, too large), or that of its
    curated mask `mask` (not a PNG or TIFF, damaged, not the scan's size), or None."""
    try:
        info = oio.probe(src, max_pixels)
    except ImageError as e:
        return e.reason
    try:
        if mask is not None:
            check_mask_header(mask, (info.width, info.height), max_pixels)
    except MaskError as e:
        return e.reason
    return None
