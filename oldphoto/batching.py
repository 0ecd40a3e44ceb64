"""Device batches made of tiles from every photo in flight: detect -> restore -> upscale on a batch of tiles.

Each photo's tiled pass (passes.TiledPass) submits its tiles a row at a time and later asks for the results in
order. Whoever asks first for a result that is not there yet takes the device (MODEL_LOCK) and runs the queue
from its head, `batch` tiles at a time, whatever photo they came from. A run of small scans (a few tiles each)
with --jobs N therefore fills its batches from several photos instead of sending a few tiles per call; one
photo on its own gets exactly the batches it would get alone (they span its tile rows).

Nothing waits for a batch to fill: the device is only taken by a pass that needs a result, and then runs what
is queued. CUDA out-of-memory halves the batch size (per tile size, for the rest of the run); at one tile per
batch the tiles' owners are told (OutOfMemoryAtBatchOne) and retry with smaller tiles.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

import torch

from .ops.masks import dilate
from .report import DEVICE_NOTE
from .stages.base import NonFiniteOutput, release_memory, run_stage, timed

# Files in flight (--jobs) take turns on the networks: torch already spreads one pass over every core, so two
# concurrent passes would only oversubscribe the CPU (or GPU memory) and double the activations held; reading,
# decoding, encoding and writing of the other files still overlap with the pass.
MODEL_LOCK = threading.Lock()

_CPU = torch.device("cpu")


class OutOfMemoryAtBatchOne(Exception):
    """The device cannot hold even one tile of the current size; the owner retries with a smaller tile."""


@dataclass(frozen=True)
class BatchKey:
    """What tiles must share to go through the networks together."""

    tile: int  # tile edge T in pixels
    only_mask: bool  # detector only (no restore / upscale)
    threshold: float  # defect probability above which the restorer's mask is 1
    mask_dilate: int  # pixels the restorer's mask is grown by
    upscale: int  # output scale s of the upscaler (1: none)
    # the restorer's mask comes with the tiles (a curator's, --masks: already grown over the whole photo), the
    # detector does not run on them; threshold and mask_dilate then go unused
    curated: bool = False


@dataclass(eq=False)
class Ticket:
    """One submission (a row of n tiles) of one owner; filled in by whichever thread runs its tiles.

    seconds and notes are the owner's: each batch adds its out-of-memory notes, and its stage times in proportion
    to the tiles it ran for the owner; those times reach `seconds` when the owner collects the ticket, in the
    owner's thread, which times its own work into the same dict.
    """

    owner: object
    n: int
    seconds: dict[str, float]
    notes: list[str]
    images: list = field(init=False)  # per tile: (3, sT, sT) float32 CPU or None (only_mask)
    probs: list = field(init=False)  # per tile: (1, T, T) float32 CPU or None (no detector)
    left: int = field(init=False)  # tiles not yet run
    shared: dict[str, float] = field(init=False, default_factory=dict)  # stage times not yet added to seconds
    error: BaseException | None = None

    def __post_init__(self):
        self.images, self.probs, self.left = [None] * self.n, [None] * self.n, self.n

    @property
    def done(self) -> bool:
        return self.left == 0 or self.error is not None


@dataclass(eq=False)
class _Item:
    ticket: Ticket
    index: int
    key: BatchKey
    tile: torch.Tensor  # (3, T, T) float32 CPU in [0, 1]
    mask: torch.Tensor | None = None  # (1, T, T) float32 CPU {0, 1}: the restorer's mask, with key.curated


class TileBatcher:
    """Batches tiles of any number of photos through `models` (detector / restorer / upscaler) on `device`.

    batch_size: tiles per device call to start with (halved per tile size on CUDA out-of-memory).
    Thread-safe: every photo in flight submits and collects from its own thread.
    """

    def __init__(self, models, device: torch.device | str, batch_size: int):
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.models, self.device, self.batch_size = models, torch.device(device), int(batch_size)
        self._queue: deque[_Item] = deque()
        self._lock = threading.Lock()  # guards the queue and the batch sizes, never held during device work
        self._sizes: dict[int, int] = {}  # tile edge -> current batch size
        self.calls = 0  # device calls that succeeded ...
        self.tiles = 0  # ... the tiles they ran ...
        self.shared_calls = 0  # ... and how many of them held tiles of more than one photo

    def batch_for(self, tile: int) -> int:
        """Current batch size for tiles of edge `tile`."""
        with self._lock:
            return self._sizes.get(tile, self.batch_size)

    def submit(self, tiles: torch.Tensor, key: BatchKey, owner: object, seconds: dict[str, float],
               notes: list[str], masks: torch.Tensor | None = None) -> Ticket:
        """Queue tiles (n, 3, T, T) float32 CPU in [0, 1]; returns the ticket to collect them with. masks: with
        key.curated (and only then), each tile's mask for the restorer, (n, 1, T, T) float32 CPU, 1 = defect."""
        if tiles.ndim != 4 or tiles.shape[1] != 3 or tuple(tiles.shape[2:]) != (key.tile, key.tile):
            raise ValueError(f"expected tiles (n, 3, {key.tile}, {key.tile}), got {tuple(tiles.shape)}")
        if key.curated != (masks is not None) or (
                masks is not None and tuple(masks.shape) != (len(tiles), 1, key.tile, key.tile)):
            raise ValueError(f"expected {'masks (n, 1, T, T) with' if key.curated else 'no masks without'} curated "
                             f"tiles, got {None if masks is None else tuple(masks.shape)}")
        ticket = Ticket(owner, len(tiles), seconds, notes)
        with self._lock:
            self._queue.extend(_Item(ticket, i, key, tiles[i], None if masks is None else masks[i])
                               for i in range(len(tiles)))
        return ticket

    def pending(self, owner: object) -> int:
        """Tiles of `owner` still queued (not yet run)."""
        with self._lock:
            return sum(1 for it in self._queue if it.ticket.owner is owner)

    def cancel(self, owner: object) -> None:
        """Drop the queued tiles of `owner` (its pass failed or was stopped)."""
        with self._lock:
            self._queue = deque(it for it in self._queue if it.ticket.owner is not owner)

    def collect(self, ticket: Ticket) -> tuple[list, list]:
        """Wait for (running batches as needed) and return the ticket's (images, probs); raises its error."""
        while not ticket.done:
            with MODEL_LOCK:
                # Under the device lock nothing is mid-flight: the ticket is either done or still queued.
                if not ticket.done:
                    self._run_head(ticket)
        with self._lock:
            shared, ticket.shared = ticket.shared, {}
        for k, v in shared.items():
            ticket.seconds[k] = ticket.seconds.get(k, 0.0) + v
        if ticket.error is not None:
            raise ticket.error
        return ticket.images, ticket.probs

    # ---------------------------------------------------------------------------------------- device work

    def _run_head(self, wanted: Ticket) -> None:
        """Run one batch from the head of the queue (tiles sharing the head's key, in queue order)."""
        with self._lock:
            if not any(it.ticket is wanted for it in self._queue):
                raise RuntimeError("collecting a ticket whose tiles were cancelled")
            key = self._queue[0].key
            size = self._sizes.get(key.tile, self.batch_size)
            part = []
            for it in self._queue:
                if it.key == key:
                    part.append(it)
                    if len(part) == size:
                        break
        seconds: dict[str, float] = {}
        try:
            with torch.inference_mode():
                given = torch.stack([it.mask for it in part]) if key.curated else None
                images, probs = self._batch(torch.stack([it.tile for it in part]), key, seconds, given)
        except torch.OutOfMemoryError as exc:
            release_memory(self.device)
            self._out_of_memory(part, key, exc)
            return
        except NonFiniteOutput as exc:
            # NaN or inf in some tiles: their photos fail; the tiles of the others are run again without them
            culprits = {id(part[i].ticket.owner) for i in exc.rows}
            self._finish([it for it in part if id(it.ticket.owner) in culprits] or part, exc=exc)
            return
        except Exception as exc:  # noqa: BLE001 - a stage failure belongs to every owner in the batch; re-raised
            self._finish(part, exc=exc)
            return
        self._share(part, seconds)
        self._finish(part, images=images, probs=probs)

    def _batch(self, x: torch.Tensor, key: BatchKey, seconds: dict[str, float], given: torch.Tensor | None = None):
        """Tiles (n, 3, T, T) -> (output (n, 3, sT, sT) or None, prob (n, 1, T, T) or None), float32 on the CPU.
        given: the restorer's masks (n, 1, T, T) with key.curated: no detection then (prob None)."""
        n, dev, models, s, t = len(x), self.device, self.models, key.upscale, key.tile
        with timed(seconds, "tiling", _CPU):
            x = x.to(dev)
            given = None if given is None else given.to(dev)
        prob = None
        if models.detector is not None and not key.curated:
            with timed(seconds, "detect", dev):
                prob = run_stage("detector", models.detector, dev, (n, 1, t, t), x).clamp(0, 1)
        if key.only_mask:
            return None, prob.cpu()
        y = x
        if models.restorer is not None:
            if given is not None:
                mask = given  # grown over the whole photo already (passes.grow_mask)
            else:
                mask = (prob > key.threshold).float() if prob is not None else torch.zeros_like(x[:, :1])
                mask = dilate(mask, key.mask_dilate)
            with timed(seconds, "restore", dev):
                y = run_stage("restorer", models.restorer, dev, (n, 3, t, t), y, mask)
        if s > 1:
            with timed(seconds, "upscale", dev):
                y = run_stage("upscaler", models.upscaler, dev, (n, 3, s * t, s * t), y)
        return y.clamp(0, 1).cpu(), (prob.cpu() if prob is not None else None)

    def _out_of_memory(self, part: list[_Item], key: BatchKey, exc: BaseException) -> None:
        if len(part) == 1:
            self._finish(part, exc=OutOfMemoryAtBatchOne(f"out of memory with one {key.tile}-px tile"))
            return
        size = max(1, len(part) // 2)
        with self._lock:
            self._sizes[key.tile] = size
        for notes in {id(it.ticket.notes): it.ticket.notes for it in part}.values():  # once per photo
            notes.append(f"{DEVICE_NOTE} batch size reduced to {size}")

    def _share(self, part: list[_Item], seconds: dict[str, float]) -> None:
        """Set aside the batch's stage times for each owner, in proportion to its tiles in the batch (added to its
        seconds when it collects: the owner's thread may be writing that dict now)."""
        with self._lock:
            for ticket, c in Counter(it.ticket for it in part).items():  # tickets hash by identity
                for k, v in seconds.items():
                    ticket.shared[k] = ticket.shared.get(k, 0.0) + v * c / len(part)
            self.calls += 1
            self.tiles += len(part)
            self.shared_calls += len({id(it.ticket.owner) for it in part}) > 1

    def stats(self) -> dict:
        """For the report: {"calls", "tiles", "tiles_per_call", "shared_calls"} (shared: tiles of several photos)."""
        with self._lock:
            return {"calls": self.calls, "tiles": self.tiles,
                    "tiles_per_call": round(self.tiles / self.calls, 2) if self.calls else None,
                    "shared_calls": self.shared_calls}

    def _finish(self, part: list[_Item], images=None, probs=None, exc: BaseException | None = None) -> None:
        with self._lock:
            done = {id(it) for it in part}
            self._queue = deque(it for it in self._queue if id(it) not in done)
            for j, it in enumerate(part):
                tk = it.ticket
                if exc is not None:
                    tk.error = exc
                    continue
                tk.images[it.index] = None if images is None else images[j]
                tk.probs[it.index] = None if probs is None else probs[j]
                tk.left -= 1
