"""Which scans of the input folders a restore run takes: --include / --exclude patterns and a --files-from list.

Patterns are globs matched against paths relative to an input folder, with POSIX separators:
- `*` any run of characters but `/`, `?` one such character, `[abc]` / `[!abc]` one character of (not of) a set;
  `**` as a whole segment any number of folders (none included): `**/derivatives/*`, `box12/**`.
- A pattern without `/` is matched against the name of the file and of each folder on the way to it (in any
  folder); with `/` against the path from the input folder down to the file or to each folder above it.
  A trailing `/` makes a pattern match folders only (`rejected/`: every folder named rejected).
- A folder that matches stands for everything below it: --include 'box12/' takes all of box12, --exclude
  'rejected/*' or 'rejected/**' leaves out every file at any depth under rejected/, and such a folder is not even
  entered (its unreadable subfolders, say, are no problem of the run's).
- Case is ignored (masters come as .TIF and .tif) and names are compared in Unicode NFC (macOS writes NFD).
- A file is taken when it matches some --include (or none is given) and no --exclude.

The walk (walk.discover) applies them to the images it finds; hidden names and non-images are never taken, whatever
the patterns say. Files named on the command line are a selection already: the patterns and the list do not apply to
them. With --files-from only the listed files are looked up (the folders are not walked), and the patterns apply to
them too. Nothing here changes what a file's outputs are: the selection is not part of the settings fingerprint.
"""

from __future__ import annotations

import codecs
import itertools
import re
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Sequence

from .errors import BadArgument


@dataclass(frozen=True)
class Pattern:
    """One --include or --exclude glob (parse_pattern), as the module's docstring says it matches."""

    text: str  # as given
    # it has a `/` between two names (not a trailing one, nor that of a leading './'): matched against the relative
    # path, not the name
    anchored: bool
    folders_only: bool  # it ended in `/`
    regex: re.Pattern[str]
    # of a pattern ending in '/**': the folder it names everything below of, which stands for all that (so the walk
    # need not enter it)
    above: re.Pattern[str] | None = None

    def matches(self, parts: Sequence[str], folder: bool) -> bool:
        """Whether the file (folder: the folder) whose path below the input folder has these `parts` matches."""
        if self.folders_only and not folder:
            return False
        subject = unicodedata.normalize("NFC", "/".join(parts) if self.anchored else parts[-1])
        return (self.regex.fullmatch(subject) is not None
                or folder and self.above is not None and self.above.fullmatch(subject) is not None)


def parse_pattern(text: str) -> Pattern:
    """`text` as a Pattern; ValueError (one line) for an empty pattern, an absolute one, or one that goes up (`..`)."""
    if not text.strip():
        raise ValueError("empty pattern")
    if text.startswith("/"):
        raise ValueError(f"{text!r} is absolute: patterns match paths relative to the input folder (e.g. 'box12/*')")
    folders_only = text.endswith("/")
    segments = [s for s in text.split("/") if s not in ("", ".")]  # 'a//b', './a' and 'a/' as 'a/b', 'a' and 'a'
    if ".." in segments:
        raise ValueError(f"{text!r} goes up with '..': patterns match paths below the input folder")
    if not segments:
        raise ValueError(f"{text!r} matches nothing: give a name or a path below the input folder")
    try:
        above = _regex(segments[:-1]) if len(segments) > 1 and segments[-1] == "**" else None
        return Pattern(text, len(segments) > 1, folders_only, _regex(segments), above)
    except ValueError as e:  # a reversed range in a set, '[z-a]' (_set)
        raise ValueError(f"{text!r} is not a valid pattern ({e} in a [...] set)") from None


def _regex(segments: list[str]) -> re.Pattern[str]:
    """The regular expression of a glob's segments, case-insensitive, in NFC.

    Each run of stars but the last is matched at the first place its following text fits, never retried (the
    greedy glob match, right since the next star takes up whatever lies between): tried every way, as a plain
    regular expression would, '*a*a*a*a*a*b' took minutes against a 120-character name."""
    segments = [unicodedata.normalize("NFC", s) for s in segments]  # before a set's ranges are read
    path = len(segments) > 1  # a '**' is folders, not a name's '*'
    if path:  # '**/**' is one '**': any number of folders twice is any number of them
        segments = [s for i, s in enumerate(segments) if not (s == "**" and i and segments[i - 1] == "**")]
    names = itertools.count()
    pieces: list[str | None] = []  # None: a '**' before the last segment
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**" and path:
            pieces.append(".+" if last else None)  # last, everything below (at least one name)
        else:
            pieces.append(_segment(seg, names) + ("" if last else "/"))
    body = _first_fit("(?:[^/]+/)*", pieces, names)  # any number of whole folders
    return re.compile(body, re.IGNORECASE | re.DOTALL)


def _first_fit(star: str, pieces: list, names: Iterator[int]) -> str:
    """The regular expression of `pieces` (regular expressions, None where `star` goes): each `star` but the last
    takes the least that lets the text up to the next one match, and is never tried again (a lookahead's group, as
    atomic groups came only in Python 3.11); the last is a plain one (what follows it must end the text)."""
    chunks = [""]
    for piece in pieces:
        if piece is None:
            chunks.append("")
        else:
            chunks[-1] += piece
    if len(chunks) == 1:
        return chunks[0]
    out = chunks[0]
    for chunk in chunks[1:-1]:
        g = f"g{next(names)}"
        out += f"(?=(?P<{g}>{star}?{chunk}))(?P={g})"
    return out + star + chunks[-1]


def _segment(seg: str, names: Iterator[int]) -> str:
    """The regular expression of one path segment of a glob (no `/` in it); `names` numbers its groups."""
    pieces: list[str | None] = []  # None: a '*'
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            while i + 1 < len(seg) and seg[i + 1] == "*":
                i += 1  # '**' inside a name is one '*'
            pieces.append(None)
        elif c == "?":
            pieces.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < len(seg) and seg[j] == "!":
                j += 1
            if j < len(seg) and seg[j] == "]":
                j += 1  # a ']' first in the set is one of its characters
            j = seg.find("]", j)
            if j < 0:
                pieces.append(re.escape(c))  # no closing ']': a plain '['
            else:
                pieces.append(_set(seg[i + 1:j]))
                i = j
        else:
            pieces.append(re.escape(c))
        i += 1
    return _first_fit("[^/]*", pieces, names)


def _set(inner: str) -> str:
    """The regular expression of a glob's set, `inner` what lies between its brackets: every character itself but
    a '!' first (not of the set) and a '-' between two (a range). Each character escaped, so that none means what it
    would in a regular expression's set ('^' first, '\\', '[', set operations such as '--' and '&&'), and a negated
    set never joins its '/' to a '-' of the glob's ('[!-a]' is not '[^/-a]'). ValueError for a reversed range."""
    negate = inner.startswith("!")
    chars = inner[1:] if negate else inner
    out, k = "", 0
    while k < len(chars):
        if k + 2 < len(chars) and chars[k + 1] == "-":
            a, b = chars[k], chars[k + 2]
            if a > b:
                raise ValueError(f"bad character range {a}-{b}")
            out += f"{re.escape(a)}-{re.escape(b)}"
            k += 3
        else:
            out += re.escape(chars[k])
            k += 1
    return f"[^/{out}]" if negate else f"[{out}]"


@dataclass(frozen=True)
class FileList:
    """A --files-from list: its entries, each (line number, the path as written)."""

    name: str  # the list as given ("-": standard input), for messages
    entries: tuple[tuple[int, str], ...]

    @property
    def shown(self) -> str:
        return "<stdin>" if self.name == "-" else self.name


def parse_list(name: str, data: bytes) -> FileList:
    """The entries of a list file's bytes: one path a line (LF or CRLF; a UTF-8 byte order mark, as spreadsheet
    exports write, ignored), taken as written otherwise (a name may begin or end with a space); blank lines and
    lines starting with '#' left out. BadArgument when it is not UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's and Notepad's "Unicode text"
        raise BadArgument(f"--files-from {_named(name)}: UTF-16 text, not UTF-8: save the list as UTF-8")
    # the mark taken off before decoding: utf-8-sig's error offsets count from after it, not in `data`
    body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body[:e.start].count(b"\n") + 1
        raise BadArgument(f"--files-from {_named(name)}: not UTF-8 text (byte 0x{body[e.start]:02x} on line "
                          f"{line})") from None
    entries = []
    for n, line in enumerate(text.split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line
        if line.strip() and not line.startswith("#"):
            entries.append((n, line))
    return FileList(name, tuple(entries))


def read_list(name: str, stdin: BinaryIO | None = None) -> FileList:
    """The list file `name` ("-": `stdin`) read and parsed (parse_list); BadArgument, one line, when it cannot be."""
    try:
        if name == "-":
            if stdin is None:
                raise BadArgument("--files-from -: no standard input to read the list from")
            data = stdin.read()
        else:
            with open(name, "rb") as f:
                data = f.read()
    except OSError as e:
        raise BadArgument(f"--files-from {_named(name)}: cannot read the list ({e.strerror or e})") from None
    return parse_list(name, data)


def _named(name: str) -> str:
    return "- (standard input)" if name == "-" else name


@dataclass(frozen=True)
class Selection:
    """The scans a run takes of its input folders (module docstring); the default takes every image."""

    include: tuple[Pattern, ...] = ()
    exclude: tuple[Pattern, ...] = ()
    listed: FileList | None = None  # only these files are looked up

    @classmethod
    def build(cls, include: Sequence[str] = (), exclude: Sequence[str] = (), listed: FileList | None = None,
              ) -> "Selection":
        """From the options' values; BadArgument naming the option and the pattern it refuses (parse_pattern)."""
        parsed: dict[str, tuple[Pattern, ...]] = {}
        for option, texts in (("include", include), ("exclude", exclude)):
            try:
                parsed[option] = tuple(parse_pattern(t) for t in texts)
            except ValueError as e:
                raise BadArgument(f"--{option}: {e}") from None
        return cls(parsed["include"], parsed["exclude"], listed)

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude or self.listed is not None)

    @property
    def filters(self) -> str:
        """The pattern options given, as a user would read them: '--include/--exclude', '--exclude', ''."""
        return "/".join(o for o, given in (("--include", self.include), ("--exclude", self.exclude)) if given)

    def prunes(self, parts: Sequence[str]) -> bool:
        """Whether the folder at `parts` below the input folder is left out, with everything below it."""
        return any(p.matches(parts, folder=True) for p in self.exclude)

    def includes_folder(self, parts: Sequence[str]) -> bool:
        """Whether the folder at `parts` matches an --include: everything below it is included."""
        return any(p.matches(parts, folder=True) for p in self.include)

    def takes(self, parts: Sequence[str], included_above: bool = False) -> bool:
        """Whether the image at `parts` below the input folder is taken, the folders above it not pruned;
        included_above: a folder above it matched an --include."""
        if self.include and not included_above and not any(p.matches(parts, folder=False) for p in self.include):
            return False
        return not any(p.matches(parts, folder=False) for p in self.exclude)

    def selects(self, parts: Sequence[str]) -> bool:
        """`takes` with the folders above the image looked at too (for a path met other than by a walk)."""
        above = [parts[:k] for k in range(1, len(parts))]
        if any(self.prunes(folder) for folder in above):
            return False
        return self.takes(parts, any(self.includes_folder(folder) for folder in above))

    def describe(self) -> dict:
        """The selection as the report records it."""
        return {"include": [p.text for p in self.include], "exclude": [p.text for p in self.exclude],
                "files_from": None if self.listed is None else self.listed.shown}
