"""Defect detector training, evaluation and export.

run(cfg, log): trains the `unet_detector` on synthetic defects (full `degrade()`: defects on top of blur, noise,
fading), resumable from `cfg.out/ckpt.pt`; keeps the best validation checkpoint in `cfg.out/best.pt`.
evaluate(cfg, log): pixel precision / recall / F1 / IoU and F1 with 1-px tolerance on a fixed held-out set, for
the learned detector and for the classical top-hat/black-hat baseline (both tuned on the same set).
export(run_dir, name): best checkpoint -> weights/<name>.pt + MANIFEST.json entry with threshold and metrics.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import registry
from ..archs import build
from ..archs.unet_detector import widen_channels, widen_to_chroma
from ..errors import SettingsError
from ..ops.masks import dilate, tophat_response
from ..pipeline import WEIGHT_NAMES
from ..stages.detect import Detector, TwoScaleDetector
from . import data, degrade
from .chunked import chunked
from .content import ContentMix, clean_crop
from .degrade_second import SecondConfig, degrade_second
from .loop import (SupervisedRun, check_bf16, check_record, finish_evaluation, load_run_best,
                   load_run_last)
from .losses import (BALANCE_MODES, balanced_bce, focal_loss, hard_negative_bce, soft_dice_loss,
                     weighted_negative_bce)
from .mask_metrics import ThresholdSweep, scores_at
from .run_files import export_weights, save_grid, time_decay, warmup_linear_lr

ARCH = "unet_detector"
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # probability thresholds swept on validation
CLASSICAL_SIZES = (3, 5, 7, 9, 13, 17)  # top-hat element edges tried for the baseline
CLASSICAL_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(1, 41))  # luma differences tried for the baseline


@dataclass(frozen=True)
class Config:
    out: str = "runs/detector"  # run folder: ckpt.pt, best.pt, log.jsonl, config.json, samples/
    corpus: str = ""  # folder of clean photos ("": data.corpus_dir()); split into train/validation by split_seed
    split_seed: int = 0  # photo-level split (the same seed must be used by evaluate)
    seed: int = 1  # training randomness (crops, degradations, init)
    base: int = 12  # channels at full resolution; level i has min(base * 2**i, max_width)
    levels: int = 5  # U-Net levels (the coarsest runs at 1/2**(levels-1))
    max_width: int = 128  # channel cap for the coarse levels (keeps the weights small)
    blocks: int = 2  # 3x3 convs per level
    balance: str = "hed"  # class balance of the cross-entropy: "hed" | "hed_batch" (one α per batch) | "paper" | "none"
    dice_weight: float = 0.0  # weight of a soft-Dice term added to the cross-entropy (0: off)
    focal_weight: float = 0.0  # weight of a focal term added to the cross-entropy (0: off)
    ignore_ring: int = 0  # intact pixels within this many px of a defect are left out of the cross-entropy: the
    #                      F1 with 1 px tolerance does not count a mark there as a false alarm (0: off)
    hard_weight: float = 0.0  # weight of a cross-entropy over the batch's hardest intact pixels (its false alarms
    #                           of the moment; losses.hard_negative_bce) added to the balanced one (0: off)
    hard_share: float = 0.02  # share of the intact pixels that term takes
    edge_weight: float = 0.0  # weight of a cross-entropy over intact pixels on thin structures of the *clean*
    #                           crop (plank gaps, wires, twigs: content shaped like scratches), weighted by their
    #                           top-hat response (losses.weighted_negative_bce) (0: off; the random stream stays)
    edge_size: int = 13  # top-hat element edge (px): structures thinner than this count as thin
    edge_level: float = 0.3  # top-hat response (luma) at which a pixel gets full weight in that term
    crop: int = 128  # training crop edge in pixels
    batch: int = 8  # crops per step
    max_side: int = 2560  # photos are held in memory at this longest side (more distinct detail than 1536)
    scale_min: float = 0.15  # smallest zoom of a crop, relative to the photo held at max_side (wide views)
    scale_max: float = 1.0  # largest zoom (1: full detail)
    p_invert: float = 0.15  # chance to invert a degraded crop (negatives; swaps the polarity of every defect)
    p_gamma: float = 0.3  # chance of a random tone curve (gamma in gamma_range) on the degraded crop
    gamma_range: tuple[float, float] = (0.6, 1.6)  # log-uniform; other scanners and prints, other mid-tones
    lr: float = 2e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    warmup: int = 200  # linear warm-up steps
    steps: int = 20000  # total steps
    decay_steps: int = 0  # the last decay_steps before `steps` go down linearly to lr/50 (0: constant lr)
    val_every: int = 500  # steps between validations (and sample grids)
    val_count: int = 64  # validation crops used during training (the first of the fixed set)
    val_size: int = 256  # validation crop edge
    ckpt_minutes: float = 5.0  # wall minutes between checkpoints
    max_minutes: float = 0.0  # stop after this many wall minutes in this process (0: no limit)
    threads: int = 1  # torch CPU threads (other jobs share the machine)
    init_from: str = ""  # weights file (e.g. weights/detector-v1.pt) or run folder (its best.pt) that starts a
    #                      fresh run; same depth; a narrower one (smaller base / max_width) is widened so that the
    #                      new run starts exactly where it was (archs/unet_detector.widen_channels); "" -> random init
    channels_last: bool = True  # NHWC tensors: oneDNN convs ~25% faster on this CPU, same numbers
    bf16: bool = False  # bfloat16 autocast for the training forward (weights, loss, validation stay float32); only
    #                    where the CPU has native bf16 (AVX512-BF16 / AMX): emulated, it is ~5x slower
    p_sharp: float = 0.0  # share of training crops from degrade.sharp_recipe: the damage as usual but the
    #                       unstructured steps (blur, noise, fading, ...) rarer, so crisp content edges, which the
    #                       default mixture mostly blurs or buries in noise, are seen beside defects and not flagged
    sharp_scale: float = 0.25  # factor on the unstructured steps' probabilities for those crops
    p_ageing: float = 0.0  # probability of each ageing damage kind of the recipe (crazing, foxing, flaking: off in
    #                        the default recipe) in the training crops; 0 keeps the old random stream
    p_rotate: float = 0.0  # content steps on the clean crop before damage (train/content.py; all 0 keeps the old
    p_join: float = 0.0  #   random stream): a turn by any angle, two photos joined along a random boundary,
    p_permute: float = 0.0  # permuted colour channels, each with this probability; new content against memorising
    p_leaves: float = 0.0  # a procedural dead-leaves collage (train/leaves.py) instead of a photo crop; 0 keeps the
    #                        old random stream
    p_upscan: float = 0.0  # share of training crops made at 1/f of the crop size and enlarged f times: the same
    #                        print scanned at a higher resolution (wider defects over smoother content, which
    #                        detector-v10 half misses at f = 2); 0 keeps the old random stream
    upscan_range: tuple[float, float] = (1.3, 3.0)  # f, log-uniform
    chroma: bool = False  # also feed the colour-difference planes (archs/unet_detector.py); init_from a luma-only
    #                       detector starts with their weights at zero, i.e. exactly where that detector was
    widths: tuple[int, ...] = ()  # channels per level, finest first, instead of base / max_width / levels (e.g.
    #                               wider coarse levels only, which add context for few multiply-adds)
    device: str = "cpu"  # "cuda" trains on a GPU (bf16 there needs no CPU check); weights are saved as float32
    workers: int = 0  # processes synthesising batches, each with its own random stream (seed, start step, index);
    #                   0 synthesises in the training process (the old random stream). A GPU needs many: one core
    #                   makes ~40 crops of 256 px a second
    decay_minutes: float = 0.0  # with max_minutes: the lr decays linearly to lr/50 over the last decay_minutes of
    #                             this process's time (a fixed-time run, where the step rate is unknown ahead)

    def arch_kwargs(self) -> dict:
        channels = list(self.widths) or [min(self.base * 2**i, self.max_width) for i in range(self.levels)]
        kw = {"channels": channels, "blocks": self.blocks}
        return {**kw, "chroma": True} if self.chroma else kw

    def content_mix(self) -> ContentMix:
        return ContentMix(self.p_rotate, self.p_join, self.p_permute, self.p_leaves)


@dataclass(frozen=True)
class EvalConfig:
    weights: str = WEIGHT_NAMES["detector"]  # registry name to evaluate (ignored when `run` is set)
    run: str = ""  # evaluate this run folder's best.pt instead of registered weights
    corpus: str = ""  # "" : data.corpus_dir()
    split_seed: int = 0  # must match the training split, so the photos were never seen
    count: int = 160  # validation crops (several scales, see data.validation_set)
    size: int = 256  # crop edge
    seed: int = 1234  # fixes the validation crops and their degradations
    batch: int = 8  # crops per forward pass
    threads: int = 2  # torch CPU threads
    out: str = ""  # write the result as JSON here ("" : do not write)
    record: bool = False  # store the result as meta["evaluation"] of the weights' MANIFEST.json entry, and its
    #                       tuned threshold as meta["threshold"] (what the pipeline uses)
    undamaged: int = 64  # also count false alarms: the share of pixels flagged (at the tuned thresholds) on this
    #                      many crops of the same photos degraded by the recipe without any damage (0: skip)
    second: int = 96  # also score, at the tuned thresholds, this many crops of the same photos degraded by the
    #                   second generator (degrade_second: never trained on): how far the numbers carry (0: skip)
    two_scale: bool = True  # also score `--detect-scales 2` (stages.detect.TwoScaleDetector) at its fixed threshold:
    #                         as they are, enlarged (enlarge) and on the second generator's crops (second)
    enlarge: int = 2  # also score the learned detector, at its tuned threshold, on the same held-out crops enlarged
    #                   this many times (bicubic), as scanned at that many times the resolution, its probabilities
    #                   averaged back onto the crop's grid (0 or 1: skip)

    def __post_init__(self) -> None:
        check_record(self)


# ------------------------------------------------------------------ data

def _split(corpus: str, split_seed: int) -> tuple[list[Path], list[Path]]:
    root = Path(corpus).expanduser() if corpus else data.corpus_dir()
    return data.split_corpus(root, seed=split_seed)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) float in [0, 1] -> (C, H, W) float32."""
    if img.ndim == 2:
        img = img[..., None]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))


def _augment(img: np.ndarray, rng: np.random.Generator, cfg: Config) -> np.ndarray:
    """Photometric changes that keep the mask valid: inversion (negatives: every defect's polarity swaps) and a
    monotonic tone curve."""
    if rng.random() < cfg.p_invert:
        img = 1.0 - img
    if rng.random() < cfg.p_gamma:
        lo, hi = cfg.gamma_range
        img = np.power(img, np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
    return img


def training_recipe(cfg: Config) -> degrade.DegradeConfig:
    """The default recipe, with the ageing damage kinds at cfg.p_ageing each."""
    return degrade.ageing_recipe(cfg.p_ageing)


Batch = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


def content_edges(clean: np.ndarray, cfg: Config) -> np.ndarray:
    """(H, W, 3) clean crop in [0, 1] -> (H, W) float32 in [0, 1]: its thin structures (top-hat response of the
    luma, full at cfg.edge_level), where a detector is most tempted to see scratches in intact content."""
    t = torch.from_numpy(np.ascontiguousarray(clean.transpose(2, 0, 1)))[None]
    r = tophat_response(t, cfg.edge_size)[0, 0].numpy()
    return np.clip(r / cfg.edge_level, 0, 1).astype(np.float32)


def enlarge(img: np.ndarray, size: int | tuple[int, int], binary: bool = False) -> np.ndarray:
    """(h, w) or (h, w, C) float in [0, 1] -> the same at size (an edge, or (H, W)): bicubic (clipped), or bilinear
    and thresholded at 0.5 for a binary mask, so a defect keeps its shape at the new scale."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    t = (t[None, None] if img.ndim == 2 else t.permute(2, 0, 1)[None])
    size = (size, size) if isinstance(size, int) else tuple(size)
    t = F.interpolate(t, size=size, mode="bilinear" if binary else "bicubic", align_corners=False)
    t = (t > 0.5).float() if binary else t.clamp(0, 1)
    return t[0, 0].numpy() if img.ndim == 2 else t[0].permute(1, 2, 0).numpy()


def sample_batch(pool: data.PhotoPool, rng: np.random.Generator, cfg: Config) -> Batch:
    """A training batch: degraded crops (B, 3, S, S) in [0, 1], their defect masks (B, 1, S, S) in {0, 1} and,
    with cfg.edge_weight, the clean crops' thin structures (B, 1, S, S) in [0, 1] (content_edges; else None)."""
    xs, ys, es = [], [], []
    dcfg = training_recipe(cfg)
    sharp = degrade.sharp_recipe(cfg.sharp_scale, dcfg)
    mix = cfg.content_mix()
    for _ in range(cfg.batch):
        size = cfg.crop
        if cfg.p_upscan and rng.random() < cfg.p_upscan:  # p_upscan 0: the old random stream
            lo, hi = cfg.upscan_range
            size = max(16, round(cfg.crop / float(np.exp(rng.uniform(np.log(lo), np.log(hi))))))
        clean = clean_crop(pool, rng, size, (cfg.scale_min, cfg.scale_max), mix)
        recipe = sharp if cfg.p_sharp and rng.random() < cfg.p_sharp else dcfg  # p_sharp 0: the old random stream
        d = degrade.degrade(clean, rng, recipe)
        image, mask = d.image, d.mask
        if size != cfg.crop:
            image, mask, clean = enlarge(image, cfg.crop), enlarge(mask, cfg.crop, True), enlarge(clean, cfg.crop)
        k = int(rng.integers(4))  # the pool never flips upside down; defects run every way, so rotate
        xs.append(_to_tensor(np.rot90(_augment(image, rng, cfg), k)))
        ys.append(_to_tensor(np.rot90(mask, k)))
        if cfg.edge_weight:  # no random draws: the stream is the same with or without it
            es.append(_to_tensor(np.rot90(content_edges(clean, cfg), k)))
    return torch.stack(xs), torch.stack(ys), (torch.stack(es) if es else None)


class BatchStream(torch.utils.data.IterableDataset):
    """Endless training batches (sample_batch) for a DataLoader: worker k of a run started at `start_step` draws
    from np.random.default_rng([seed, start_step, k]). Workers are forked, so they share the photo pool's memory."""

    def __init__(self, pool: data.PhotoPool, cfg: Config, start_step: int):
        super().__init__()
        self.pool, self.cfg, self.start_step = pool, cfg, start_step

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.cfg.seed, self.start_step, info.id if info is not None else 0])
        while True:
            yield sample_batch(self.pool, rng, self.cfg)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker start: leave Ctrl-C and SIGTERM to the main process. Both also reach the workers when
    sent to the whole process group (a terminal's Ctrl-C, systemd, `timeout`); the main process stops at a step
    boundary, checkpoints and shuts the workers down, which a worker dying first would turn into a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def batch_source(pool: data.PhotoPool, rng: np.random.Generator, cfg: Config, start_step: int
                 ) -> Callable[[], Batch]:
    """next batch (images, masks, content edges or None) on the CPU: from cfg.workers processes, or made here
    from `rng` (workers 0)."""
    if cfg.workers == 0:
        return lambda: sample_batch(pool, rng, cfg)
    loader = torch.utils.data.DataLoader(BatchStream(pool, cfg, start_step), batch_size=None,
                                         num_workers=cfg.workers, prefetch_factor=4, multiprocessing_context="fork",
                                         pin_memory=cfg.device.startswith("cuda"), worker_init_fn=ignore_stop_signals)
    it = iter(loader)
    return lambda: next(it)


def load_validation(corpus: str, split_seed: int, count: int, size: int, seed: int,
                    recipe: Any = degrade.DegradeConfig(), generator: data.Generator = degrade.degrade,
                    training_photos: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out set: images (N, 3, S, S) and masks (N, 1, S, S), from photos training never sees,
    degraded by `generator` with `recipe` (default: the training recipe). `training_photos`: the same kind of set
    made from the training photos instead (to measure how much of a score is memorised content)."""
    train_paths, val_paths = _split(corpus, split_seed)
    paths = train_paths if training_photos else val_paths
    items = data.validation_set(paths, count, size, seed, recipe, generator=generator)
    return torch.stack([_to_tensor(x) for x, _, _ in items]), torch.stack([_to_tensor(m) for _, _, m in items])


# ------------------------------------------------------------------ losses and metrics

def detector_loss(logits: torch.Tensor, target: torch.Tensor, cfg: Config, edges: torch.Tensor | None = None
                  ) -> dict[str, torch.Tensor]:
    """Loss terms for (B, 1, H, W) logits vs target masks; "total" is what is minimised. `edges` (B, 1, H, W) in
    [0, 1]: the clean crops' thin structures, needed when cfg.edge_weight > 0 (sample_batch gives them)."""
    valid = None
    if cfg.ignore_ring > 0:  # the band just outside each defect: neither taught as defect nor as intact
        defect = (target > 0.5).float()
        valid = 1 - (dilate(defect, cfg.ignore_ring) - defect)
    terms = {"bce": balanced_bce(logits, target, cfg.balance, valid=valid)}
    total = terms["bce"]
    if cfg.dice_weight > 0:
        terms["dice"] = soft_dice_loss(logits, target)
        total = total + cfg.dice_weight * terms["dice"]
    if cfg.focal_weight > 0:
        terms["focal"] = focal_loss(logits, target)
        total = total + cfg.focal_weight * terms["focal"]
    if cfg.hard_weight > 0:
        terms["hard"] = hard_negative_bce(logits, target, cfg.hard_share)
        total = total + cfg.hard_weight * terms["hard"]
    if cfg.edge_weight > 0:
        if edges is None:
            raise ValueError("detector_loss: edge_weight > 0 needs the clean crops' edges (sample_batch gives them)")
        terms["edge"] = weighted_negative_bce(logits, target, edges)
        total = total + cfg.edge_weight * terms["edge"]
    terms["total"] = total
    return terms


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> probabilities (N, 1, H, W) on the CPU, in eval mode, batch by batch on the
    model's device."""
    dev = next(model.parameters()).device
    return chunked(lambda t: torch.sigmoid(model(t.to(dev)).float()).cpu(), batch, images, model=model)


def score_learned(prob: torch.Tensor, masks: torch.Tensor) -> dict:
    """Metrics of the learned detector at the threshold maximising F1 (1 px tolerance) on this set."""
    sweep = ThresholdSweep(THRESHOLDS, tolerance=1)
    sweep.add(prob, masks)
    best = sweep.best("f1_tol")
    best["best_exact_f1"] = float(sweep.table()["f1"].max())
    return best


def score_classical(images: torch.Tensor, masks: torch.Tensor, batch: int = 16) -> dict:
    """The top-hat/black-hat baseline with its element size and threshold tuned on this set (max F1, 1 px tol)."""
    best: dict | None = None
    for size in CLASSICAL_SIZES:
        sweep = ThresholdSweep(CLASSICAL_THRESHOLDS, tolerance=1)
        for i in range(0, len(images), batch):
            sweep.add(tophat_response(images[i:i + batch], size), masks[i:i + batch])
        cand = sweep.best("f1_tol")
        cand["size"] = size
        if best is None or cand["f1_tol"] > best["f1_tol"]:
            best = cand
    assert best is not None
    return best


# ------------------------------------------------------------------ schedule

def _lr_at(step: int, cfg: Config) -> float:
    return warmup_linear_lr(step, cfg.lr, cfg.warmup, cfg.steps, cfg.decay_steps, 1 / 50)


# ------------------------------------------------------------------ training

def run(cfg: Config, log: Callable[[str], None]) -> dict:
    """Train (or resume) the detector; returns {"step", "best": validation metrics, "out"}."""
    if cfg.balance not in BALANCE_MODES:
        raise SettingsError(f"balance must be one of {BALANCE_MODES}, got {cfg.balance!r}")
    if not (0 <= cfg.p_sharp <= 1 and 0 <= cfg.sharp_scale <= 1):
        raise SettingsError(f"p_sharp and sharp_scale must be in [0, 1], got {cfg.p_sharp} and {cfg.sharp_scale}")
    if not (0 <= cfg.p_upscan <= 1 and 1 <= cfg.upscan_range[0] <= cfg.upscan_range[1]):
        raise SettingsError(f"need 0 <= p_upscan <= 1 and 1 <= upscan_range[0] <= upscan_range[1], "
                            f"got {cfg.p_upscan} and {cfg.upscan_range}")
    if not 0 <= cfg.p_ageing <= 1:
        raise SettingsError(f"p_ageing must be in [0, 1], got {cfg.p_ageing}")
    if cfg.ignore_ring < 0:
        raise SettingsError(f"ignore_ring must be >= 0 pixels, got {cfg.ignore_ring}")
    if cfg.hard_weight < 0 or not 0 < cfg.hard_share <= 1 or cfg.edge_weight < 0:
        raise SettingsError(f"need hard_weight >= 0, 0 < hard_share <= 1, edge_weight >= 0, "
                            f"got {cfg.hard_weight}, {cfg.hard_share}, {cfg.edge_weight}")
    if cfg.edge_size < 3 or cfg.edge_size % 2 == 0 or cfg.edge_level <= 0:
        raise SettingsError(f"edge_size must be odd and >= 3 and edge_level > 0, "
                            f"got {cfg.edge_size}, {cfg.edge_level}")
    cfg.content_mix()  # ValueError for a probability outside [0, 1]
    if cfg.workers < 0 or cfg.decay_minutes < 0 or (cfg.decay_minutes and not cfg.decay_minutes <= cfg.max_minutes):
        raise SettingsError(f"workers >= 0 and 0 <= decay_minutes <= max_minutes required, got workers "
                            f"{cfg.workers}, decay_minutes {cfg.decay_minutes}, max_minutes {cfg.max_minutes}")
    device = torch.device(cfg.device)
    if device.type == "cpu":
        check_bf16(cfg.bf16)
    out = Path(cfg.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build(ARCH, **cfg.arch_kwargs()).to(device=device, memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    template = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def adapt(state: dict) -> dict:
        return widen_channels(widen_to_chroma(state) if cfg.chroma else state, template)

    trainer = SupervisedRun(out, model, opt, rng, cfg, cfg.arch_kwargs(), log, cfg.init_from, adapt)
    recipe = training_recipe(cfg)
    sharp = {"sharp_degrade": asdict(degrade.sharp_recipe(cfg.sharp_scale, recipe))} if cfg.p_sharp else {}
    trainer.write_config(ARCH, degrade=asdict(recipe), **sharp)

    train_paths, _ = _split(cfg.corpus, cfg.split_seed)
    pool = data.PhotoPool(train_paths, max_side=cfg.max_side)
    val_x, val_y = load_validation(cfg.corpus, cfg.split_seed, cfg.val_count, cfg.val_size, EvalConfig.seed)
    next_batch = batch_source(pool, rng, cfg, trainer.step)
    t_process = time.monotonic()

    def lr_at(step: int) -> float:
        lr = _lr_at(step, cfg)
        if cfg.decay_minutes:
            lr *= time_decay(cfg.max_minutes * 60 - (time.monotonic() - t_process), cfg.decay_minutes * 60, 1 / 50)
        return lr

    def step_fn() -> tuple[dict, dict]:
        t0 = time.monotonic()
        x, y, edges = next_batch()
        x = x.to(device, non_blocking=True).contiguous(memory_format=layout)
        y = y.to(device, non_blocking=True)
        edges = None if edges is None else edges.to(device, non_blocking=True)
        t_data = time.monotonic() - t0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(x)
        return detector_loss(logits.float(), y, cfg, edges), {"sec_data": round(t_data, 3),
                                                              "defect_share": round(float(y.mean()), 4)}

    def on_validation(step: int, terms: dict) -> dict:
        prob = predict(model, val_x)
        m = score_learned(prob, val_y)
        log(f"step {step} loss {terms['total'].item():.4f} val F1(tol) {m['f1_tol']:.3f} "
            f"F1 {m['f1']:.3f} IoU {m['iou']:.3f} @ {m['threshold']:.2f}")
        save_grid(out / "samples" / f"step{step:06d}.png",
                  [val_x[:4], val_y[:4].expand(-1, 3, -1, -1), prob[:4].expand(-1, 3, -1, -1)])
        return m

    return trainer.train(lr_at, step_fn, on_validation,
                         lambda m, best: best is None or m["f1_tol"] > best["f1_tol"])


# ------------------------------------------------------------------ evaluation

def evaluate_model(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, batch: int = 8) -> dict:
    """Learned detector vs classical baseline on (N, 3, H, W) images / (N, 1, H, W) masks.

    Returns {"learned": metrics at its tuned threshold, "classical": metrics at its tuned size and threshold,
    "learned_seconds_per_mp": inference speed, "defect_share": share of defect pixels in the set}.
    """
    t0 = time.perf_counter()
    prob = predict(model, images, batch)
    sec_per_mp = (time.perf_counter() - t0) / (images[:, 0].numel() / 1e6)
    return {
        "learned": score_learned(prob, masks),
        "classical": score_classical(images, masks),
        "learned_seconds_per_mp": round(sec_per_mp, 3),
        "defect_share": round(float((masks > 0.5).float().mean()), 5),
        "crops": len(images),
        "crop_size": images.shape[-1],
    }


def false_alarms(model: nn.Module, res: dict, cfg: EvalConfig) -> dict:
    """Share of pixels each detector flags, at the thresholds `res` tuned, on validation crops degraded by the
    recipe without damage (p_structured 0): what a curator sees marked on intact content."""
    recipe = replace(degrade.DegradeConfig(), p_structured=0.0)
    images, _ = load_validation(cfg.corpus, cfg.split_seed, cfg.undamaged, cfg.size, cfg.seed, recipe)
    learned = predict(model, images, cfg.batch) > res["learned"]["threshold"]
    c = res["classical"]
    classical = chunked(lambda t: tophat_response(t, c["size"]) > c["threshold"], cfg.batch, images)
    return {"learned": round(float(learned.float().mean()), 5), "classical": round(float(classical.float().mean()), 5),
            "crops": len(images)}


def second_generator_set(cfg: EvalConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cfg.second held-out crops (images, masks) degraded by the second generator (degrade_second.degrade_second)."""
    return load_validation(cfg.corpus, cfg.split_seed, cfg.second, cfg.size, cfg.seed, SecondConfig(),
                           generator=degrade_second)


def second_generator(model: nn.Module, res: dict, images: torch.Tensor, masks: torch.Tensor, cfg: EvalConfig
                     ) -> dict:
    """Both detectors at the thresholds `res` tuned, on the second generator's crops (second_generator_set):
    F1 / precision / recall with the 1 px tolerance."""
    c = res["classical"]
    scores = {"learned": (predict(model, images, cfg.batch), res["learned"]["threshold"]),
              "classical": (chunked(lambda t: tophat_response(t, c["size"]), cfg.batch, images), c["threshold"])}
    out: dict = {"crops": len(images), "defect_share": round(float(masks.mean()), 5)}
    for k, (score, threshold) in scores.items():
        t = scores_at(score, masks, threshold)
        out[k] = {name: round(t[name], 4) for name in ("f1_tol", "precision_tol", "recall_tol")}
    return out


def enlarged(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, threshold: float, factor: int,
             batch: int = 8, two_scale: bool = False) -> dict:
    """The learned detector on images (N, 3, S, S) enlarged `factor` times (bicubic, clipped to [0, 1]), its
    probabilities area-averaged back to (N, 1, S, S) and scored against masks at `threshold`: F1 / precision /
    recall with the 1 px tolerance. How far a detector trained at one scan resolution carries to a finer one.
    two_scale: the network run as `--detect-scales 2` runs it (stages.detect.TwoScaleDetector)."""
    stage = TwoScaleDetector(Detector(model)) if two_scale else None

    def fn(t: torch.Tensor) -> torch.Tensor:
        big = F.interpolate(t, scale_factor=factor, mode="bicubic", align_corners=False).clamp(0, 1)
        if stage is not None:
            return F.avg_pool2d(stage(big), factor).cpu()
        dev = next(model.parameters()).device
        return F.avg_pool2d(torch.sigmoid(model(big.to(dev)).float()), factor).cpu()

    t = scores_at(chunked(fn, batch, images, model=model), masks, threshold)
    return {"factor": factor, **{name: round(t[name], 4) for name in ("f1_tol", "precision_tol", "recall_tol")}}


def two_scale_scores(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, cfg: EvalConfig,
                     second: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """The network run as `--detect-scales 2` runs it, at that mode's fixed threshold (chosen on selection crops,
    not here): F1 / precision / recall with the 1 px tolerance on the held-out crops, on the same enlarged
    cfg.enlarge times, and on `second` (the second generator's (images, masks), when given). The full-size pass
    is run again rather than taken from evaluate_model's probabilities: the stage runs its BatchNorm-folded copy
    of the network, and what is scored here is what the pipeline computes (a few seconds per 10 MP)."""
    stage = TwoScaleDetector(Detector(model))
    keys = ("f1_tol", "precision_tol", "recall_tol")

    def scored(images: torch.Tensor, masks: torch.Tensor) -> dict:
        t = scores_at(chunked(stage, cfg.batch, images), masks, stage.threshold)
        return {k: round(t[k], 4) for k in keys}

    out = {"threshold": stage.threshold, "half_weight": stage.half_weight, **scored(images, masks)}
    if cfg.enlarge > 1:
        out["enlarged"] = enlarged(model, images, masks, stage.threshold, cfg.enlarge, cfg.batch, two_scale=True)
    if second is not None:
        out["second_generator"] = scored(*second)
    return out


def evaluate(cfg: EvalConfig, log: Callable[[str], None]) -> dict:
    """Evaluate registered weights (or a run's best.pt) and the classical baseline on the fixed held-out set."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _evaluate(cfg, log)
    finally:
        torch.set_num_threads(threads_before)


def _evaluate(cfg: EvalConfig, log: Callable[[str], None]) -> dict:
    if cfg.run:
        model, _ = load_run_best(cfg.run, ARCH)
        what = f"{cfg.run}/best.pt"
    else:
        model = registry.load(cfg.weights)
        what = cfg.weights
    images, masks = load_validation(cfg.corpus, cfg.split_seed, cfg.count, cfg.size, cfg.seed)
    res = evaluate_model(model, images, masks, cfg.batch)
    if cfg.undamaged:
        res["false_alarms"] = false_alarms(model, res, cfg)
        log(f"false alarms on {cfg.undamaged} undamaged crops: learned {100 * res['false_alarms']['learned']:.2f}% "
            f"of the pixels, classical {100 * res['false_alarms']['classical']:.2f}%")
    second = second_generator_set(cfg) if cfg.second else None  # synthesised once, scored twice below
    if second is not None:
        res["second_generator"] = sg = second_generator(model, res, *second, cfg)
        log(f"second generator ({cfg.second} crops, never trained on): learned F1(1px tol) "
            f"{sg['learned']['f1_tol']:.3f} (P {sg['learned']['precision_tol']:.3f}, "
            f"R {sg['learned']['recall_tol']:.3f}), classical {sg['classical']['f1_tol']:.3f}")
    if cfg.enlarge > 1:
        res["enlarged"] = en = enlarged(model, images, masks, res["learned"]["threshold"], cfg.enlarge, cfg.batch)
        log(f"the same crops enlarged x{cfg.enlarge}: learned F1(1px tol) {en['f1_tol']:.3f} "
            f"(P {en['precision_tol']:.3f}, R {en['recall_tol']:.3f})")
    if cfg.two_scale:
        res["two_scale"] = ts = two_scale_scores(model, images, masks, cfg, second)
        log(f"two scales (--detect-scales 2, half pass weighted {ts['half_weight']}) at {ts['threshold']}: "
            f"F1(1px tol) {ts['f1_tol']:.3f}"
            + (f", enlarged {ts['enlarged']['f1_tol']:.3f}" if "enlarged" in ts else "")
            + (f", second generator {ts['second_generator']['f1_tol']:.3f}" if "second_generator" in ts else ""))
    res["evaluated"] = what
    res["eval_config"] = asdict(cfg)
    for k in ("learned", "classical"):
        m = res[k]
        log(f"{k:9s} F1(1px tol) {m['f1_tol']:.3f}  F1 {m['f1']:.3f}  P {m['precision']:.3f}  R {m['recall']:.3f}  "
            f"IoU {m['iou']:.3f}  threshold {m['threshold']:.2f}" + (f"  size {m['size']}" if "size" in m else ""))
    return finish_evaluation(cfg, res, also={"threshold": res["learned"]["threshold"]})


def validation_curve(run_dir: str | Path) -> dict[int, float]:
    """{step: validation F1 (1 px tolerance)} from a run's log.jsonl, for comparing runs at equal steps."""
    curve = {}
    for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "val" in rec:
            curve[int(rec["step"])] = round(float(rec["val"]["f1_tol"]), 4)
    return curve


# ------------------------------------------------------------------ export

def export(run_dir: str | Path, name: str, weights_dir: str | Path | None = None,
           eval_cfg: EvalConfig | None = None, log: Callable[[str], None] | None = None,
           checkpoint: str = "best") -> Path:
    """Best checkpoint of `run_dir` (checkpoint="last": its final state, ckpt.pt) -> `<weights>/<name>.pt`
    (float32 state_dict) + its MANIFEST.json entry; "last" is for when a larger selection set than the run's own
    in-training one preferred the final state (meta["checkpoint"] says which was published).

    Re-evaluates on the fixed held-out set to store the tuned threshold and both detectors' metrics in the meta.
    Safe while the run is training: the loop replaces best.pt and ckpt.pt atomically and reads each once here.
    """
    run_dir = Path(run_dir)
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    model, ck = (load_run_best if checkpoint == "best" else load_run_last)(run_dir, ARCH)
    tcfg = ck["config"]
    ecfg = eval_cfg or EvalConfig(run=str(run_dir), corpus=tcfg["corpus"], split_seed=tcfg["split_seed"])
    images, masks = load_validation(ecfg.corpus, ecfg.split_seed, ecfg.count, ecfg.size, ecfg.seed)
    res = evaluate_model(model, images, masks, ecfg.batch)
    if log is not None:
        log(f"export {name}: learned F1(tol) {res['learned']['f1_tol']:.3f} vs classical "
            f"{res['classical']['f1_tol']:.3f}")
    notes_path = run_dir / "notes.json"  # free-form findings kept with the run (e.g. the loss comparison)
    info_path = run_dir / "config.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    train_paths, val_paths = _split(tcfg["corpus"], tcfg["split_seed"])
    meta = {
        "threshold": res["learned"]["threshold"],
        "threshold_rule": "maximises F1 with 1 px tolerance on the validation set",
        "metrics": res,
        "command": ck.get("command", info.get("command", "")),
        "history": ck.get("history", []),  # every start of the run: from which step, with which settings
        "config": tcfg,
        "data": {"corpus": str(train_paths[0].parent) if train_paths else tcfg["corpus"],
                 "split_seed": tcfg["split_seed"], "train_photos": len(train_paths),
                 "validation_photos": [p.name for p in val_paths],
                 "degrade": info.get("degrade", {}), "validation": asdict(ecfg),
                 **({"sharp_degrade": info["sharp_degrade"]} if "sharp_degrade" in info else {})},
        "seed": tcfg["seed"],
        "steps": ck["step"],
        "wall_seconds": round(ck["wall"], 1),
        "params": sum(p.numel() for p in model.parameters()),
        "checkpoint": checkpoint,
    }
    if notes_path.is_file():
        meta["notes"] = json.loads(notes_path.read_text())
    return export_weights(model.state_dict(), name, ARCH, ck["arch_kwargs"], meta,
                          Path(weights_dir) if weights_dir is not None else None)
