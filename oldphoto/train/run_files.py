"""Files of a training run (runs/<name>/): atomic checkpoints, log.jsonl, sample grids, and weights export.

Everything written here can be read while a training job is writing: files are replaced atomically
(temp file in the same folder + os.replace), so a reader sees the old or the new version, never half of one.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import registry
from ..errors import SettingsError


def atomic_write_bytes(path: Path, write) -> None:
    """Call write(file object) on a temp file beside `path`, fsync, then replace `path` with it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; weights and logs are meant to be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(data, indent=1, sort_keys=True) + "\n").encode()))


class JsonlLog:
    """Appends one JSON object per line; each record gets the wall-clock time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 1), **record}) + "\n")

    def read(self) -> list[dict]:
        """The records; a last line cut short (the process was killed while appending it) is left out."""
        return self._read()[0]

    def _read(self) -> tuple[list[dict], bool]:
        """(the records, whether the file ends without its newline: a last line to rewrite, cut short or not)."""
        if not self.path.is_file():
            return [], False
        text = self.path.read_text()
        lines = [line for line in text.splitlines() if line.strip()]
        unended = bool(text) and not text.endswith("\n")
        if lines and unended:
            try:
                json.loads(lines[-1])
            except json.JSONDecodeError:
                lines.pop()
        return [json.loads(line) for line in lines], unended

    def keep_through(self, step: int) -> None:
        """Drop the records of steps after `step` (written after the checkpoint a resumed run restarts from, by a
        process killed before it could write a later one), so that they are not in the log twice."""
        records, unended = self._read()
        kept = [r for r in records if r.get("step", 0) <= step]
        if len(kept) < len(records) or unended:  # a torn line would glue onto the next record
            atomic_write_bytes(self.path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))


def save_grid(path: Path, columns: list[torch.Tensor]) -> None:
    """Write a PNG: each (B, 3, H, W) [0, 1] tensor of `columns` is one column, the batch runs down the rows."""
    if not columns or any(c.shape != columns[0].shape or c.dim() != 4 for c in columns):
        raise ValueError(f"save_grid: need equal (B, 3, H, W) tensors, got {[tuple(c.shape) for c in columns]}")
    grid = torch.cat([torch.cat(list(c.detach().float().cpu().clamp(0, 1)), dim=1) for c in columns], dim=2)
    pixels = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    atomic_write_bytes(path, lambda f: Image.fromarray(pixels).save(f, format="PNG"))


def rng_state(rng: np.random.Generator) -> dict:
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])


@contextmanager
def _manifest_lock(folder: Path):
    # Several trainers may export at once; the read-modify-write of MANIFEST.json must not interleave.
    # The lock file lives outside the folder (MANIFEST.json itself is replaced, so it cannot carry the lock).
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"oldphoto-manifest-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def export_weights(state_dict: dict[str, torch.Tensor], name: str, arch: str, arch_kwargs: dict, meta: dict,
                   weights: Path | None = None, replace: bool = False, data: bytes | None = None) -> Path:
    """Write weights/<name>.pt (float32 state dict) and add or update its MANIFEST.json entry; returns the file.

    The name is checked (registry.check_name) and the model is built and loaded strictly first, so a state dict
    that does not fit the arch is never published. An entry that holds other weights is never replaced (other
    entries may depend on its sha256) unless `replace` is given deliberately: SettingsError naming it.
    data: the bytes check_publishable returned for this same state_dict, so that it is serialised only once.
    """
    registry.check_name(name)
    model = registry.build(arch, **arch_kwargs)
    model.load_state_dict(state_dict, strict=True)
    folder = Path(weights) if weights is not None else registry.weights_dir()
    if data is None:
        data = _serialized(state_dict)
    digest = hashlib.sha256(data).hexdigest()  # of the bytes written to the file below
    path = folder / f"{name}.pt"
    with _manifest_lock(folder):
        manifest = _manifest(folder)
        if not replace:
            _check_unchanged(folder, manifest, name, digest)
        atomic_write_bytes(path, lambda f: f.write(data))
        manifest.setdefault("models", {})[name] = {
            "arch": arch, "arch_kwargs": arch_kwargs, "file": path.name, "sha256": digest, "meta": meta}
        atomic_write_json(folder / "MANIFEST.json", manifest)
    registry.entries.cache_clear()
    return path


def check_publishable(name: str, state_dict: dict[str, torch.Tensor], weights: Path | None = None,
                      hint: str = "") -> bytes:
    """SettingsError unless `state_dict` can be published as `name` (export_weights' checks of the name and of an
    existing entry with other weights), for exports that write several entries and must refuse before the first;
    `hint` is added to the message. Returns the bytes weights/NAME.pt would hold: give them to export_weights as
    `data`, so that the sha256 checked here is that of the bytes it writes."""
    registry.check_name(name)
    folder = Path(weights) if weights is not None else registry.weights_dir()
    data = _serialized(state_dict)
    _check_unchanged(folder, _manifest(folder), name, hashlib.sha256(data).hexdigest(), hint)
    return data


def _manifest(folder: Path) -> dict:
    """folder/MANIFEST.json as a dict ({"models": {}} when there is none yet)."""
    path = folder / "MANIFEST.json"
    return json.loads(path.read_text()) if path.is_file() else {"models": {}}


def _serialized(state_dict: dict[str, torch.Tensor]) -> bytes:
    """The bytes of weights/NAME.pt for `state_dict`: float tensors as float32, everything on the CPU."""
    clean = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu()
             for k, v in state_dict.items()}
    buf = io.BytesIO()
    torch.save(clean, buf)
    return buf.getvalue()


def _check_unchanged(folder: Path, manifest: dict, name: str, digest: str, hint: str = "") -> None:
    """SettingsError when the entry `name` exists, its file is there and it holds weights other than `digest`."""
    old = manifest.get("models", {}).get(name)
    if old is None or old.get("sha256") == digest or not (folder / old["file"]).is_file():
        return
    raise SettingsError(f"{folder / old['file']}: weights entry {name!r} already holds other weights (sha256 "
                        f"{old['sha256'][:12]}…) and is not replaced; publish under a new name{hint}")


def command_line() -> str:
    """The command that started this process (python -c scripts are named as such)."""
    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith(("oldphoto", "cli.py", "__main__.py")) else sys.argv
    prog = "oldphoto" if argv is not sys.argv else "python"
    return " ".join([prog, *argv])


def cosine_lr(base: float, final_fraction: float, progress: float) -> float:
    """Cosine decay from base (progress 0) to base * final_fraction (progress >= 1)."""
    p = min(max(progress, 0.0), 1.0)
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * p)))


def warmup_linear_lr(step: int, base: float, warmup: int, steps: int, decay_steps: int,
                     final_fraction: float) -> float:
    """Linear warm-up over the first `warmup` steps, then `base`, then a linear decay over the last `decay_steps`
    before `steps` down to base * final_fraction (decay_steps 0: no decay)."""
    if step < warmup:
        return base * (step + 1) / warmup
    start = steps - decay_steps
    if decay_steps > 0 and step >= start:
        return base * (1 - (1 - final_fraction) * min(1.0, (step - start) / decay_steps))
    return base


def time_decay(seconds_left: float, decay_seconds: float, final_fraction: float) -> float:
    """Factor on the lr of a fixed-time run: 1 until the last `decay_seconds`, then linear down to final_fraction
    when no time is left (where the step rate is not known ahead, e.g. on a lent GPU)."""
    if decay_seconds <= 0:
        raise ValueError(f"time_decay: decay_seconds must be positive, got {decay_seconds}")
    return final_fraction + (1 - final_fraction) * min(1.0, max(0.0, seconds_left / decay_seconds))


def start_run_dir(out: Path, cfg_dict: dict, arch_keys: tuple[str, ...]) -> None:
    """Create the run folder with config.json, or check that a resumed run keeps the same architecture."""
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())["config"]
        changed = [k for k in arch_keys if old.get(k) != cfg_dict.get(k)]
        if changed:
            raise SettingsError(f"{out}: cannot resume with a different architecture ({', '.join(changed)} changed); "
                                "use the run's settings or a new out=")
    atomic_write_json(cfg_path, {"config": cfg_dict, "command": command_line()})


def cli_equivalent(target: str, cfg_dict: dict, defaults: dict, skip: tuple[str, ...] = ("which",)) -> str:
    """`oldphoto train TARGET --set k=v ...` for the fields of cfg_dict that differ from the defaults."""
    sets = [f"--set {k}={v}" for k, v in cfg_dict.items() if k not in skip and defaults.get(k) != v]
    return " ".join(["oldphoto train", target, *sets])


def update_meta(name: str, key: str, value: Any, weights: Path | None = None) -> None:
    """Set meta[key] = value in the MANIFEST.json entry `name` (which must exist); the weights are not touched."""
    folder = Path(weights) if weights is not None else registry.weights_dir()
    with _manifest_lock(folder):
        manifest_path = folder / "MANIFEST.json"
        manifest = json.loads(manifest_path.read_text())
        if name not in manifest.get("models", {}):
            raise KeyError(f"{manifest_path}: no entry {name!r} to update")
        manifest["models"][name].setdefault("meta", {})[key] = value
        atomic_write_json(manifest_path, manifest)
    registry.entries.cache_clear()
