"""Find the images to restore under the command-line inputs and keep their output names unique.

Inputs are files or folders. Folders are walked recursively in sorted (code point) order so runs are
deterministic; each image gets a relative path that is mirrored under the output folder. Hidden names,
system files (Thumbs.db, desktop.ini), sidecars and other non-images are skipped without a word: the
decision is made on the extension alone.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from .errors import ImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"})  # compared in lower case


class Found(NamedTuple):
    src: Path  # the image as given or as reached by the walk (not resolved: symlinks kept)
    rel: Path  # relative path mirrored under --out: the file name for a file input, path below the folder otherwise


@dataclass
class Discovery:
    found: list[Found] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # explicit file inputs that are not supported images
    problems: list[ImageError] = field(default_factory=list)  # folders that could not be listed


def is_image_name(name: str) -> bool:
    """True for a supported image extension (case-insensitive); hidden names are decided by the caller."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or below it (both resolved)."""
    return path == folder or folder in path.parents


def _walk_folder(root: Path, into: Discovery, exclude: Path | None = None) -> None:
    """Depth-first walk following folder symlinks; a folder already seen (same device + inode) is not
    entered again, which is what stops symlink loops and double visits. A folder that resolves to `exclude`
    (resolved: the output folder) or below it is not entered, unless the root itself is there."""
    seen: set[tuple[int, int]] = set()
    found: list[Found] = []
    if exclude is not None and _inside(root.resolve(), exclude):
        exclude = None  # the walk was asked for inside it: the caller's choice

    def visit(folder: Path, rel: Path) -> None:
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
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            path = folder / entry.name
            try:
                # stat() follows symlinks: a link to a folder is walked, a dangling link is neither.
                mode = entry.stat().st_mode
            except FileNotFoundError:
                continue  # dangling symlink
            except OSError as e:
                into.problems.append(ImageError(path, f"cannot stat ({e.strerror or e})"))
                continue
            if stat.S_ISDIR(mode):
                if exclude is None or not _inside(path.resolve(), exclude):
                    visit(path, rel / entry.name)
            elif stat.S_ISREG(mode) and is_image_name(entry.name):
                found.append(Found(path, rel / entry.name))

    visit(root, Path())
    found.sort(key=lambda f: f.rel.parts)
    into.found.extend(found)


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
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), None)
    return f"not a regular file or folder ({kind})" if kind else "not a regular file or folder"


def discover(inputs: Sequence[Path], exclude: Path | None = None) -> Discovery:
    """Images under `inputs`, in input order, each folder's images sorted by relative path.

    exclude: a folder the walk never descends into, however it is reached (a symlink in an input tree that
    points to the output folder must not feed the outputs back in as inputs).

    The same image reached twice with the same relative path (e.g. a file given twice) is listed once;
    distinct images that would get the same output are left to `OutputClaims` to refuse.
    """
    result = Discovery()
    exclude = None if exclude is None else Path(exclude).resolve()
    for inp in inputs:
        inp = Path(inp)
        if inp.is_dir():
            _walk_folder(inp, result, exclude)
        elif inp.is_file():
            if is_image_name(inp.name):
                result.found.append(Found(inp, Path(inp.name)))
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
