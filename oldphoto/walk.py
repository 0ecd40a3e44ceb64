"""Find the images to restore under the command-line inputs and keep their output names unique.

Inputs are files or folders. Folders are walked recursively in sorted (code point) order so runs are
deterministic; each image gets a relative path that is mirrored under the output folder. Hidden names,
system files (Thumbs.db, desktop.ini), sidecars and other non-images are skipped without a word: the
decision is made on the extension alone. A name of an image that is a broken symbolic link, or no regular file (a
FIFO, a socket, a device), is a problem: a scan the run cannot read, not something else. An image's XMP sidecar
(NAME.EXT.xmp, or Adobe's NAME.xmp when no other file shares NAME) is found beside it, to be carried to its
restoration (match_sidecars). A Selection (selection.py: --include, --exclude, --files-from) narrows what the folders
give.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from .errors import ImageError
from .io.sidecar import SUFFIX, is_sidecar_name
from .selection import FileList, Selection

# compared in lower case; .jp2 (a JP2 file) and .j2k (a bare JPEG 2000 codestream) are read, never written
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".jp2", ".j2k"})


class Found(NamedTuple):
    src: Path  # the image as given or as reached by the walk (not resolved: symlinks kept)
    rel: Path  # relative path mirrored under --out: the file name for a file input, path below the folder otherwise
    sidecar: Path | None = None  # its XMP sidecar (match_sidecars)
    sidecar_note: str | None = None  # why a sidecar beside it is not taken for its own (one line), if one is not


@dataclass
class Discovery:
    found: list[Found] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # explicit file inputs that are not supported images
    # folders that could not be listed, images that cannot be read (a broken link, a FIFO), --files-from lines that
    # name no image
    problems: list[ImageError] = field(default_factory=list)
    left_out: int = 0  # images of the input folders the selection's patterns leave out
    folders_left_out: int = 0  # folders the selection's patterns leave out, never entered
    named_over: list[Path] = field(default_factory=list)  # images named as inputs that the patterns would leave out


def is_image_name(name: str) -> bool:
    """True for a supported image extension (case-insensitive); hidden names are decided by the caller."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def match_sidecars(files: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
    """{file name: (its XMP sidecar's name or None, a note on a sidecar not taken for it or None)} for the files
    among `files` (the regular files of one folder, hidden ones left out) that have a sidecar or a note.

    NAME.EXT.xmp (darktable, digiKam, ExifTool's %f.%e.xmp) belongs to the file NAME.EXT, and wins over NAME.xmp.
    NAME.xmp (Adobe's naming: Lightroom, Bridge, Capture One; digiKam's option) belongs to the one file whose name
    less its extension is NAME; when several share NAME (scan.tif and scan.jpg, or a raw file and its JPEG, the case
    Adobe's tools write such sidecars for: they describe the raw) it is taken for none of them, with a note: carried
    with every one it might describe, captions or person tags of one photo would be given to another. The .xmp is
    matched in any case; two sidecars of one file that differ only in it are ambiguous too."""
    names = sorted(files)
    others = [n for n in names if not is_sidecar_name(n)]
    exact = set(others)
    by_stem: dict[str, list[str]] = defaultdict(list)
    for n in others:
        by_stem[os.path.splitext(n)[0]].append(n)
    claims: dict[str, list[tuple[str, bool]]] = defaultdict(list)  # file -> [(sidecar, names it exactly)]
    out: dict[str, tuple[str | None, str | None]] = {}
    for x in sorted(n for n in names if is_sidecar_name(n)):
        base = x[: -len(SUFFIX)]
        if base in exact:
            claims[base].append((x, True))
        elif len(by_stem.get(base, ())) == 1:
            claims[by_stem[base][0]].append((x, False))
        elif base in by_stem:
            for n in by_stem[base]:
                out[n] = (None, f"XMP sidecar {x} not carried: {', '.join(by_stem[base])} share its name, which does "
                                f"not say whose it is; name it {n}.xmp to carry it with {n}")
    for n, found in claims.items():
        full = [x for x, exactly in found if exactly]
        stems = [x for x, exactly in found if not exactly]
        if len(full) > 1 or (not full and len(stems) > 1):
            two = full if len(full) > 1 else stems
            out[n] = (None, f"XMP sidecars {', '.join(two)} not carried: two for one file, differing only in case")
        elif full:
            out[n] = (full[0], f"XMP sidecar {stems[0]} not carried: {full[0]}, named after this very file, is "
                               f"carried instead" if stems else None)
        else:
            out[n] = (stems[0], None)
    for n, note in _case_notes(names, others, exact, by_stem, {f: x for f, (x, _) in out.items() if x}).items():
        if out.get(n, (None, None))[1] is None:  # a note on the sidecar it has, or has not, comes first
            out[n] = (out.get(n, (None, None))[0], note)
    return out


def _case_notes(names: list[str], others: list[str], exact: set[str], by_stem: dict[str, list[str]],
                carried: dict[str, str]) -> dict[str, str]:
    """{file: a note} for the sidecars among `names` that name no file but one in another case (lower.jpg.xmp beside
    lower.JPG, LOWER.xmp beside lower.jpg): not carried, as the name decides, but a share that ignores case (SMB,
    macOS) would take them for that file's, so its notes say how to name them to carry them, or which sidecar
    (`carried`: each file's) is carried instead, named after the file itself (NAME.EXT.xmp wins over NAME.xmp)."""
    folded: dict[str, list[str]] = defaultdict(list)
    folded_stems: dict[str, list[str]] = defaultdict(list)
    for n in others:
        folded[n.casefold()].append(n)
        folded_stems[os.path.splitext(n)[0].casefold()].append(n)
    notes: dict[str, str] = {}
    for x in (n for n in names if is_sidecar_name(n)):
        base = x[: -len(SUFFIX)]
        if base in exact or base in by_stem:
            continue  # it names a file exactly: match_sidecars settled it
        targets = [(n, n + SUFFIX) for n in folded.get(base.casefold(), ())]
        stems = folded_stems.get(base.casefold(), [])
        if not targets and len(stems) == 1:
            targets = [(stems[0], os.path.splitext(stems[0])[0] + SUFFIX)]
        for n, name in targets:
            if name not in names and carried.get(n) == n + SUFFIX:
                name = carried[n]
            how = f"{name}, named after it, is carried instead" if name in names else f"rename it to {name} to carry it"
            notes.setdefault(n, f"XMP sidecar {x} not carried: its name differs in case from this file's; {how}")
    return notes


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or below it (both resolved)."""
    return path == folder or folder in path.parents


def _walk_folder(root: Path, into: Discovery, exclude: Path | None = None, select: Selection = Selection()) -> None:
    """Depth-first walk following folder symlinks; a folder already seen (same device + inode) is not
    entered again, which is what stops symlink loops and double visits. A folder that resolves to `exclude`
    (resolved: the output folder) or below it is not entered, unless the root itself is there; nor is one that
    `select` prunes. The images `select` does not take are counted, not found."""
    seen: set[tuple[int, int]] = set()
    found: list[Found] = []
    if exclude is not None and _inside(root.resolve(), exclude):
        exclude = None  # the walk was asked for inside it: the caller's choice

    def visit(folder: Path, rel: Path, included: bool) -> None:
        try:
            st = folder.stat()
        except OSError as e:
            into.problems.append(ImageError(folder, f"cannot open folder ({e.strerror or e})"))
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            into.problems.append(ImageError(folder, f"cannot list folder ({e.strerror or e})"))
            return
        files: list[str] = []  # regular files, for the images' sidecars
        images: list[Found] = []
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            path = folder / entry.name
            parts = (*rel.parts, entry.name)
            try:
                # stat() follows symlinks: a link to a folder is walked, a dangling link is neither.
                mode = entry.stat().st_mode
            except FileNotFoundError:
                # a dangling link with a scan's name (a scan moved, its drive not mounted) is not passed over silently;
                # a file removed since the folder was listed is simply no longer there
                if is_image_name(entry.name) and _is_link(entry) and _taken(select, parts, included, into):
                    into.problems.append(ImageError(path, f"broken symbolic link (to {_link_target(path)}, "
                                                          f"which does not exist)"))
                continue
            except OSError as e:
                into.problems.append(ImageError(path, f"cannot stat ({e.strerror or e})"))
                continue
            if stat.S_ISDIR(mode):
                if select.prunes(parts):
                    into.folders_left_out += 1
                elif exclude is None or not _inside(path.resolve(), exclude):
                    visit(path, rel / entry.name, included or select.includes_folder(parts))
            elif stat.S_ISREG(mode):
                # every file of the folder, taken or not, for its images' sidecars: which sidecar is whose must not
                # depend on the selection (the outputs would)
                files.append(entry.name)
                if is_image_name(entry.name) and _taken(select, parts, included, into):
                    images.append(Found(path, rel / entry.name))
            elif is_image_name(entry.name) and _taken(select, parts, included, into):
                into.problems.append(ImageError(path, _not_regular(mode)))  # never opened: a FIFO could make a
                # read wait for good
        found.extend(_with_sidecars(images, match_sidecars(files)))

    visit(root, Path(), False)
    found.sort(key=lambda f: f.rel.parts)
    into.found.extend(found)


def _taken(select: Selection, parts: tuple[str, ...], included: bool, into: Discovery) -> bool:
    """select.takes, a file it leaves out counted."""
    if select.takes(parts, included):
        return True
    into.left_out += 1
    return False


def _look_up(listed: FileList, roots: Sequence[Path], into: Discovery, exclude: Path | None, select: Selection,
             ) -> list[list[Found]]:
    """The images a --files-from list names under each of the folders `roots` (a list each, sorted by relative
    path), without walking them; an entry that names no image there is a problem of its own, named LIST:LINE.
    A relative entry is looked for under every root, an absolute one under the root it is in (as written, or with
    the links in the root's own path resolved). Each name is taken as the folder spells it (_on_disk), so a listed
    file gets the relative path, and so the outputs, records and curated mask, that the walk would give it. The
    selection's patterns apply; a file they leave out is counted."""
    found: list[list[Found]] = [[] for _ in roots]
    folders = _Listings()
    sidecars: dict[str, dict[str, tuple[str | None, str | None]]] = {}
    # as the walk: a root in the output folder was asked for, so the files in it are not refused
    outs = [None if exclude is None or _inside(root.resolve(), exclude) else exclude for root in roots]
    for n, entry in listed.entries:
        where = Path(f"{listed.shown}:{n}")
        hits, reason = _listed_paths(entry, roots, folders)
        if not hits:
            into.problems.append(ImageError(where, f"{entry!r}: {reason}"))
            continue
        for i, rel in hits:
            path = roots[i] / rel
            problem = _not_a_listed_image(path, rel, outs[i])
            if problem is not None:
                into.problems.append(ImageError(where, f"{entry!r}: {problem}"))
            elif select.selects(rel.parts):
                found[i].extend(_with_sidecars([Found(path, rel)], _sidecars_beside(path, sidecars)))
            else:
                into.left_out += 1
    for each in found:
        each.sort(key=lambda f: f.rel.parts)
    return found


class _Listings:
    """The names in the folders a --files-from list looks in, each folder listed once (a list of 100 000 scans of
    one folder must not list it 100 000 times)."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str] | None] = {}
        self._folded: dict[str, dict[str, list[str]]] = {}  # NFC, case-folded name -> the names, made on a miss

    def names(self, folder: str) -> frozenset[str] | None:
        """The names in `folder`; None when it cannot be listed (a folder one may enter but not list, a file)."""
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = None
        return self._names[folder]

    def alike(self, folder: str, name: str) -> list[str]:
        """The names in `folder` (listed) equal to `name` in Unicode NFC and ignoring case."""
        if folder not in self._folded:
            folded: dict[str, list[str]] = {}
            for other in self._names[folder] or ():
                folded.setdefault(unicodedata.normalize("NFC", other).casefold(), []).append(other)
            self._folded[folder] = folded
        return self._folded[folder].get(unicodedata.normalize("NFC", name).casefold(), [])


def _on_disk(root: Path, parts: Sequence[str], folders: _Listings) -> tuple[Path | None, str]:
    """(The path below `root` that a list's `parts` name, spelled as its folders spell it, "") or (None, why not).
    A name is taken as written when its folder has it, else the one name there equal to it in Unicode NFC (a list
    exported in NFC, a name written in NFD by macOS); one that differs only in case is not taken (a case-sensitive
    file system may hold both), but named. A folder that cannot be listed takes the name as written."""
    folder, spelled = str(root), []
    for part in parts:
        there = folders.names(folder)
        if there is not None and part not in there:
            alike = folders.alike(folder, part)
            same = [n for n in alike if unicodedata.normalize("NFC", n) == unicodedata.normalize("NFC", part)]
            if len(same) != 1:
                cased = ", ".join("/".join((*spelled, n)) for n in sorted(alike))
                return None, f"not found: {cased} there differs in case" if alike else "not found"
            part = same[0]
        spelled.append(part)
        folder = os.path.join(folder, part)
    if there is None and not os.path.lexists(folder):
        return None, "not found"
    return Path(*spelled), ""


def _listed_paths(entry: str, roots: Sequence[Path], folders: _Listings) -> tuple[list[tuple[int, Path]], str]:
    """([(index of a root, the entry's path below it, as on disk)] for the roots it names something under, why none
    if none)."""
    if "\0" in entry:
        return [], "not a path (it holds a NUL character)"
    norm = os.path.normpath(entry)
    if os.path.isabs(norm):
        for i, root in enumerate(roots):
            for base in dict.fromkeys((os.path.abspath(root), os.path.realpath(root))):
                rel = os.path.relpath(norm, base)
                if rel == os.curdir:
                    return [], "an input folder: list the images in it"
                if rel.split(os.sep)[0] != os.pardir:
                    spelled, why = _on_disk(root, rel.split(os.sep), folders)
                    return ([(i, spelled)], "") if spelled is not None else ([], why + _hint(entry))
        return [], "not inside an input folder"
    if norm == os.curdir or norm.split(os.sep)[0] == os.pardir:
        return [], "not a path below the input folder"
    if not roots:
        return [], "no input folder given to look for it in"
    hits, why = [], "not found"
    for i, root in enumerate(roots):
        spelled, reason = _on_disk(root, norm.split(os.sep), folders)
        if spelled is not None:
            hits.append((i, spelled))
        elif why == "not found":
            why = reason  # a name that differs in case, said rather than a bare "not found"
    if why == "not found":
        why += f" in the input folder {roots[0]}" if len(roots) == 1 else " in any input folder"
    return hits, why + _hint(entry, roots)


def _hint(entry: str, roots: Sequence[Path] = ()) -> str:
    """What may be wrong with a listed path that names nothing, from the way it is written."""
    here = os.path.abspath(entry)
    if not os.path.isabs(entry) and os.path.lexists(here) and any(_inside(Path(here), Path(os.path.abspath(r)))
                                                                   for r in roots):
        # `find archive -name '*.tif' > list` writes archive/box12/a.tif for the input folder archive
        return " (a path from the current folder: write it below the input folder, or absolute)"
    if entry != entry.strip():
        return " (the line begins or ends with white space, taken as part of the name)"
    if "\\" in entry:
        return " (a '\\' is part of a name here: folders are separated by '/')"
    return ""


def _not_a_listed_image(path: Path, rel: Path, exclude: Path | None) -> str | None:
    """Why the listed `path` (`rel` below its input folder; there, if only as a link) is not taken, or None: a broken
    link, a folder, something else than a regular file, no image's name, a hidden name (never walked), a file in the
    output folder."""
    no_image = None if is_image_name(path.name) else f"not a supported image type ({' '.join(sorted(IMAGE_SUFFIXES))})"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return no_image or (f"broken symbolic link (to {_link_target(path)}, which does not exist)"
                            if path.is_symlink() else "not found")
    except OSError as e:
        return no_image or f"cannot stat ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        return "a folder: list the images in it"
    if no_image:
        return no_image
    if not stat.S_ISREG(mode):
        return _not_regular(mode)
    if any(_is_hidden(part) for part in rel.parts):
        return "hidden (a name on its path begins with '.'): the walk never takes it"
    if exclude is not None and _inside(path.resolve(), exclude):
        return "inside the output folder"
    return None


def _with_sidecars(images: list[Found], matched: dict[str, tuple[str | None, str | None]]) -> list[Found]:
    """`images` (of one folder) with their sidecars and notes from match_sidecars."""
    out = []
    for f in images:
        sidecar, note = matched.get(f.src.name, (None, None))
        out.append(f._replace(sidecar=None if sidecar is None else f.src.with_name(sidecar), sidecar_note=note))
    return out


def _sidecars_beside(image: Path, listed: dict[str, dict[str, tuple[str | None, str | None]]],
                     ) -> dict[str, tuple[str | None, str | None]]:
    """match_sidecars over the folder of an image given by name; a folder that cannot be listed gives a note.
    listed: the answers for the folders listed so far, by absolute path (each folder is listed once: a shell glob
    may give thousands of images of one folder by name)."""
    folder = os.path.abspath(image.parent)
    if folder not in listed:
        try:
            with os.scandir(folder) as it:
                files = [e.name for e in it if not _is_hidden(e.name) and e.is_file()]  # is_file follows links
        except OSError as e:
            return {image.name: (None, f"XMP sidecar: its folder cannot be listed to look for one "
                                       f"({e.strerror or e})")}
        listed[folder] = match_sidecars(files)
    return listed[folder]


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "a missing file"


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"))


def _not_a_file_or_folder(path: Path) -> str:
    """Why an input that is neither a file nor a folder is not read: gone, or something reading could block on."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "no such file or folder"
    except OSError as e:
        return f"cannot stat ({e.strerror or e})"
    return _not_regular(mode)


def _not_regular(mode: int) -> str:
    """Why something of `mode` (st_mode), neither a regular file nor a folder, is not read."""
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), None)
    return f"not a regular file or folder ({kind})" if kind else "not a regular file or folder"


def discover(inputs: Sequence[Path], exclude: Path | None = None, select: Selection = Selection()) -> Discovery:
    """Images under `inputs`, in input order, each folder's images sorted by relative path.

    exclude: a folder the walk never descends into, however it is reached (a symlink in an input tree that
    points to the output folder must not feed the outputs back in as inputs).
    select: the images of the input folders to take (selection.py); those named as inputs are taken whatever it says.
    With a --files-from list the folders are not walked: only the files it names are looked up in them.

    The same image reached twice with the same relative path (e.g. a file given twice) is listed once;
    distinct images that would get the same output are left to `OutputClaims` to refuse.
    """
    result = Discovery()
    exclude = None if exclude is None else Path(exclude).resolve()
    listed: dict[str, dict[str, tuple[str | None, str | None]]] = {}  # the folders of images given by name
    # each input's kind asked once: the lists _look_up gives are taken one a folder, in the same order
    kinds = [(Path(p), Path(p).is_dir()) for p in inputs]
    folders = [inp for inp, is_folder in kinds if is_folder]
    chosen = None if select.listed is None else iter(_look_up(select.listed, folders, result, exclude, select))
    for inp, is_folder in kinds:
        if is_folder:
            if chosen is None:
                _walk_folder(inp, result, exclude, select)
            else:
                result.found.extend(next(chosen))
        elif inp.is_file():
            if is_image_name(inp.name):
                if (select.include or select.exclude) and not select.takes((inp.name,)):
                    result.named_over.append(inp)  # taken all the same: said, since `scans/*` names some this way
                result.found.extend(_with_sidecars([Found(inp, Path(inp.name))], _sidecars_beside(inp, listed)))
            else:
                result.ignored.append(inp)
        else:
            result.problems.append(ImageError(inp, _not_a_file_or_folder(inp)))
    unique: list[Found] = []
    keys: set[tuple[str, Path]] = set()
    for f in result.found:
        key = (os.path.realpath(f.src), f.rel)
        if key not in keys:
            keys.add(key)
            unique.append(f)
    result.found = unique
    return result


def out_base(out_dir: Path, rel: Path) -> Path:
    """Output path without extension: out_dir / rel minus its image suffix (the pipeline adds its own)."""
    return out_dir / rel.with_suffix("")


def _claim_key(path: Path) -> str:
    # Case-folded so that outputs stay distinct on case-insensitive file systems (SMB shares, macOS).
    return os.path.normcase(os.path.abspath(path)).casefold()


class OutputClaims:
    """Remembers which source owns each output path so that no output is written twice in one run,
    no output ever lands on an input file, and none lands in an input folder (through a link in the output tree)."""

    def __init__(self, sources: Iterable[Path] = (), folders: Iterable[Path] = ()):
        self._owner: dict[str, Path] = {}
        self._sources = {_claim_key(Path(os.path.realpath(s))): Path(s) for s in sources}
        self._folders = [Path(os.path.realpath(f)) for f in folders]

    def taken(self, output: Path, src: Path) -> bool:
        """Whether another source than `src` has claimed `output`."""
        owner = self._owner.get(_claim_key(output))
        return owner is not None and owner != src

    def claim(self, src: Path, outputs: Sequence[Path]) -> None:
        """Reserve `outputs` for `src`; raises ImageError(src, ...) naming the conflict, reserving nothing."""
        keys = []
        for out in outputs:
            key = _claim_key(out)
            real = _claim_key(Path(os.path.realpath(out)))
            if key in self._sources or real in self._sources:
                raise ImageError(src, f"output {out} would overwrite an input file")
            where = Path(os.path.realpath(out.parent))
            inside = next((f for f in self._folders if _inside(where, f)), None)
            if inside is not None:
                raise ImageError(src, f"output {out} would be written into the input folder {inside} "
                                      f"(a link in the output folder leads there)")
            if key in self._owner and self._owner[key] != src:
                raise ImageError(src, f"output {out} is already produced from {self._owner[key]}; rename one of them")
            keys.append(key)
        for key in keys:
            self._owner[key] = src
