"""Versioned model weights: entries from weights/MANIFEST.json, checked against their sha256 on load."""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .archs import build
from .errors import SettingsError, WeightsError


NAME_PATTERN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # e.g. detector-v11: the entry and its file name NAME.pt


def check_name(name: str) -> str:
    """`name` when it can name a registry entry (and its file weights/NAME.pt): lowercase letters and digits in
    dash-separated parts, at most 64 characters; SettingsError otherwise (empty, a path, spaces, capitals)."""
    if not NAME_PATTERN.fullmatch(name) or len(name) > 64:
        raise SettingsError(f"invalid weights name {name!r}: use lowercase letters and digits in dash-separated "
                            f"parts, e.g. detector-v11")
    return name


def split_names(names: str, counts: tuple[int, ...], usage: str) -> list[str]:
    """The entry names in `names`, comma-separated (an export's --as): as many as one of `counts`, each a valid name
    (check_name) and none twice. SettingsError otherwise: f"{usage}, got {names!r}", or check_name's own message."""
    parts = [n.strip() for n in names.split(",")]
    if len(parts) not in counts:
        raise SettingsError(f"{usage}, got {names!r}")
    for part in parts:
        check_name(part)
    if len(set(parts)) != len(parts):  # one file and entry per name: a repeated name would publish over itself
        raise SettingsError(f"{usage}, got {names!r} (a name given twice)")
    return parts


def weights_dir() -> Path:
    """The folder holding MANIFEST.json: the repo's weights/ (editable install) or the packaged copy."""
    repo = Path(__file__).resolve().parent.parent / "weights"
    if (repo / "MANIFEST.json").is_file():
        return repo
    try:
        packaged = Path(str(resources.files("oldphoto.weights_data")))
    except ModuleNotFoundError as e:
        raise WeightsError(f"no weights folder found (looked in {repo})") from e
    if not (packaged / "MANIFEST.json").is_file():
        raise WeightsError(f"no MANIFEST.json in {repo} or {packaged}")
    return packaged


@dataclass(frozen=True)
class WeightsEntry:
    name: str  # e.g. "detector-v1"
    arch: str  # key in oldphoto.archs.ARCHS
    arch_kwargs: dict[str, Any]
    file: str  # file name inside the weights folder
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)  # threshold, metrics, training command, data recipe

    @property
    def path(self) -> Path:
        return weights_dir() / self.file


def _one_line(e: BaseException) -> str:
    """The exception as one line, "TypeName: message", for a WeightsError naming the cause."""
    return " ".join(f"{type(e).__name__}: {e}".split())


def _read_manifest(folder: Path) -> dict[str, WeightsEntry]:
    """The entries of folder/MANIFEST.json; WeightsError naming it when it cannot be read or lacks a field."""
    path = folder / "MANIFEST.json"
    try:
        data = json.loads(path.read_text())
        return {
            name: WeightsEntry(name=name, arch=e["arch"], arch_kwargs=dict(e.get("arch_kwargs", {})),
                               file=e["file"], sha256=e["sha256"], meta=dict(e.get("meta", {})))
            for name, e in data["models"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # JSON errors are ValueErrors
        raise WeightsError(f"{path}: not a readable weights manifest ({_one_line(e)})") from e


@lru_cache(maxsize=None)
def entries() -> dict[str, WeightsEntry]:
    return _read_manifest(weights_dir())


def get(name: str, arch: str | None = None) -> WeightsEntry:
    """The entry `name`; with `arch`, WeightsError unless the entry holds that architecture (a stage given the
    name of another kind of network would load it and fail at its first tile with an unrelated error, or never)."""
    table = entries()
    if name not in table:
        raise WeightsError(f"unknown model {name!r}; known: {', '.join(sorted(table)) or 'none'}")
    entry = table[name]
    if arch is not None and entry.arch != arch:
        raise WeightsError(f"model {name!r} is a {entry.arch!r} network, not the {arch!r} this stage needs")
    return entry


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_entry(entry: WeightsEntry, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the architecture, verify the file's sha256, load the state dict strictly, eval mode.

    The file is read once and the bytes checked are the bytes loaded: a file replaced between the check and the
    load (an export with replace, a copy in progress) cannot be loaded unchecked.
    """
    path = entry.path
    if not path.is_file():
        raise WeightsError(f"{path}: weights file missing for model {entry.name!r}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read the weights of model {entry.name!r} ({_one_line(e)})") from e
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise WeightsError(f"{path}: sha256 {digest[:12]}… does not match the manifest ({entry.sha256[:12]}…)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = build(entry.arch, **entry.arch_kwargs)
        model.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - re-raised: the unpickler fails in many ways on bytes that are no state dict
        # the file matches a wrong manifest entry: not a state dict, or for another arch or arch_kwargs
        raise WeightsError(f"{path}: cannot load model {entry.name!r} as {entry.arch!r} ({_one_line(e)})") from e
    return model.to(device).eval()


def load(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    return load_entry(get(name), device)
