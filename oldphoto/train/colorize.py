"""Colorizer training, evaluation and export.

run(cfg, log): trains `colorizer_unet` to predict Lab ab from L on crops of the corpus's colour photos, taken from
photos held at the working resolution (long side `work_size`), so training sees scenes at the scale inference does.
Loss (recorded in the weights' meta): class-rebalanced L1 on ab, each pixel weighted by the rarity of its true ab
bin in the training photos (weights mix the bin frequency with a uniform prior, as in Zhang et al. 2016, so
saturated colours are not averaged away), plus a term matching each image's mean chroma to the truth's, against
washed-out output. Resumable from `cfg.out/ckpt.pt`; the best validation state goes to `cfg.out/best.pt`.
evaluate(cfg, log): ab error (mean per-pixel L2 in ab) against predicting gray, and Hasler-Süsstrunk colourfulness
of the outputs against the originals, on whole held-out photos at the working resolution.
export(run_dir, name): best checkpoint -> weights/<name>.pt + MANIFEST.json entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ..archs import build
from ..ops.color import l_to_rgb, lab_to_rgb, rgb_to_lab
from ..stages.colorize import Colorizer
from . import data
from .chunked import chunked
from .loop import SupervisedRun, check_record, export_best, finish_evaluation, load_run_best
from .pairs import to_batch
from .run_files import save_grid, warmup_linear_lr

ARCH = "colorizer_unet"
AB_RANGE = 110.0  # |a|, |b| of sRGB colours stay below this (the histogram covers [-AB_RANGE, AB_RANGE))


@dataclass(frozen=True)
class Config:
    out: str = "runs/colorize"  # run folder: ckpt.pt, best.pt, log.jsonl, config.json, samples/
    corpus: str = "~/.cache/oldphoto/corpus"  # clean colour photos; split into train/validation by split_seed
    split_seed: int = 0  # photo-level split (evaluate must use the same)
    seed: int = 1  # training randomness (crops, init)
    base: int = 16  # channels at full resolution; level i has min(base * 2**i, max_width)
    levels: int = 5  # U-Net levels (the coarsest runs at 1/2**(levels-1))
    max_width: int = 160  # channel cap for the coarse levels (keeps the weights small)
    blocks: int = 2  # 3x3 convs per level
    in_stride: int = 2  # the network's finest level runs at 1/in_stride of the work resolution
    work_size: int = 512  # long side photos are held at, = the working resolution stored for inference
    crop: int = 160  # training crop edge, px at up to work_size
    scale_min: float = 0.4  # crops come from the photo rescaled by [scale_min, 1] (down to whole-scene views)
    batch: int = 12  # crops per step
    bin_size: float = 10.0  # ab histogram bin edge (Lab units) for the rarity weights
    rebalance: float = 0.5  # weight = 1 / ((1 - r) * p(bin) + r / bins): 1 = plain L1; 0 = full inverse frequency
    #                         (rare colours weigh most); 0.5 as in Zhang et al. 2016
    hist_sigma: float = 1.0  # Gaussian smoothing of the ab histogram, in bins
    chroma_weight: float = 0.5  # weight of |mean chroma(pred) - mean chroma(true)| per image (0: off)
    p_tone: float = 0.5  # chance to change the input L's tone curve (faded or contrasty restored prints)
    tone_gamma: tuple[float, float] = (0.75, 1.35)  # gamma range of that change (log-uniform)
    lr: float = 1e-3  # Adam peak learning rate
    warmup: int = 100  # linear warm-up steps
    steps: int = 3000  # total steps; the last third decays linearly to lr/20
    val_every: int = 200  # steps between validations (and sample grids)
    val_size: int = 256  # validation photos: centre square resized to this edge
    ckpt_minutes: float = 3.0  # wall minutes between checkpoints
    max_minutes: float = 0.0  # stop after this many wall minutes in this process (0: no limit)
    threads: int = 1  # torch CPU threads (other jobs share the machine)
    init_from: str = ""  # run folder (its best.pt) or weights file that starts a fresh run (same architecture), e.g.
    #                      a second phase with other loss weights; "" -> random init

    def arch_kwargs(self) -> dict:
        return {"channels": [min(self.base * 2**i, self.max_width) for i in range(self.levels)],
                "blocks": self.blocks, "ab_scale": 100.0, "in_stride": self.in_stride}


@dataclass(frozen=True)
class EvalConfig:
    weights: str = "colorize-v1"  # registry name to evaluate (ignored when `run` is set)
    run: str = ""  # evaluate this run folder's best.pt instead of registered weights
    corpus: str = "~/.cache/oldphoto/corpus"  # clean photos; the same split as training (split_seed)
    split_seed: int = 0  # must match the training split, so the photos were never seen
    size: int = 512  # held-out photos are read with this long side (the truth's resolution)
    work_size: int = 0  # working resolution of the colorizer (0: the weights' own)
    threads: int = 2  # torch CPU threads
    out: str = ""  # write the result as JSON here ("" : do not write)
    record: bool = False  # also store the result as meta["evaluation"] of the weights' MANIFEST.json entry

    def __post_init__(self) -> None:
        check_record(self)


# ------------------------------------------------------------------ colour statistics

def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Süsstrunk (2003) colourfulness of sRGB (B, 3, H, W) in [0, 1], on the 0-255 scale; shape (B,).
    About 0 for gray, ~33 "moderately", ~59 "quite", ~82 "highly" colourful."""
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"colorfulness: expected (B, 3, H, W), got shape {tuple(rgb.shape)}")
    r, g, b = (rgb.double() * 255).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return (std + 0.3 * mean).float()


def ab_error(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel Euclidean distance in ab between (B, 2, H, W) maps (Lab units); shape (B,)."""
    if pred.shape != true.shape or pred.dim() != 4 or pred.shape[1] != 2:
        raise ValueError(f"ab_error: expected two (B, 2, H, W) maps, got {tuple(pred.shape)} and {tuple(true.shape)}")
    return (pred - true).pow(2).sum(1).sqrt().flatten(1).mean(1)


def _bins(cfg: Config) -> int:
    return int(round(2 * AB_RANGE / cfg.bin_size))


def _bin_index(ab: torch.Tensor, cfg: Config) -> torch.Tensor:
    """ab (B, 2, H, W) -> flat bin index (B, H, W) of a bins x bins grid over [-AB_RANGE, AB_RANGE)^2."""
    n = _bins(cfg)
    idx = ((ab + AB_RANGE) / cfg.bin_size).floor().long().clamp(0, n - 1)
    return idx[:, 0] * n + idx[:, 1]


def rarity_weights(ab_samples: list[torch.Tensor], cfg: Config) -> torch.Tensor:
    """Per-bin loss weights (bins*bins,) from ab maps (each (B, 2, H, W)): w = 1 / ((1-r) p + r / Q) with p the
    smoothed bin frequency and Q the number of bins ever seen, rescaled so the expected weight over p is 1."""
    n = _bins(cfg)
    counts = torch.zeros(n * n, dtype=torch.float64)
    for ab in ab_samples:
        counts += torch.bincount(_bin_index(ab, cfg).flatten(), minlength=n * n).double()
    if counts.sum() == 0:
        raise ValueError("rarity_weights: no ab samples")
    p = counts.view(1, 1, n, n) / counts.sum()
    if cfg.hist_sigma > 0:
        r = torch.arange(-3, 4, dtype=torch.float64)
        k = torch.exp(-(r**2) / (2 * cfg.hist_sigma**2))
        k = k / k.sum()
        p = F.conv2d(F.conv2d(p, k.view(1, 1, 7, 1), padding=(3, 0)), k.view(1, 1, 1, 7), padding=(0, 3))
    p = p.flatten()
    p = p / p.sum()
    seen = max(1, int((p > 1e-7).sum()))
    w = 1.0 / ((1 - cfg.rebalance) * p + cfg.rebalance / seen)
    w = w / (p * w).sum()
    return w.float()


def colorize_loss(pred: torch.Tensor, true: torch.Tensor, weights: torch.Tensor,
                  cfg: Config) -> dict[str, torch.Tensor]:
    """Loss terms for ab predictions vs truth, both (B, 2, H, W) in Lab units; "total" is minimised.
    l1: rarity-weighted L1 (per 100 Lab units); chroma: per-image mean chroma mismatch (per 100 units)."""
    w = weights.to(pred.device)[_bin_index(true, cfg)].unsqueeze(1)
    terms = {"l1": (w * (pred - true).abs()).mean() / 100.0}
    total = terms["l1"]
    if cfg.chroma_weight > 0:
        chroma = lambda ab: (ab.pow(2).sum(1) + 1e-6).sqrt().flatten(1).mean(1)  # noqa: E731
        terms["chroma"] = (chroma(pred) - chroma(true)).abs().mean() / 100.0
        total = total + cfg.chroma_weight * terms["chroma"]
    terms["total"] = total
    return terms


# ------------------------------------------------------------------ data

def _split(corpus: str, split_seed: int) -> tuple[list[Path], list[Path]]:
    return data.split_corpus(Path(corpus).expanduser(), seed=split_seed)


def tone_jitter(l: torch.Tensor, rng: np.random.Generator, cfg: Config) -> torch.Tensor:
    """Random gamma on L (B, 1, H, W) in [0, 100], per image with probability p_tone: restored prints seldom
    have the tone curve of a modern digital photo, and colour should follow content, not exact grey levels."""
    out = l.clone()
    lo, hi = np.log(cfg.tone_gamma[0]), np.log(cfg.tone_gamma[1])
    for i in range(len(l)):
        if rng.random() < cfg.p_tone:
            out[i] = 100.0 * (l[i] / 100.0).clamp(0, 1) ** float(np.exp(rng.uniform(lo, hi)))
    return out


def sample_batch(pool: data.PhotoPool, rng: np.random.Generator, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch: input L (B, 1, S, S) in [0, 100] (tone-jittered) and true ab (B, 2, S, S)."""
    rgb = to_batch([pool.random_crop(rng, cfg.crop, scale_range=(cfg.scale_min, 1.0)) for _ in range(cfg.batch)])
    lab = rgb_to_lab(rgb)
    return tone_jitter(lab[:, :1], rng, cfg), lab[:, 1:]


def square_views(paths: list[Path], size: int, max_side: int) -> torch.Tensor:
    """Centre squares of the photos resized to size x size: (N, 3, size, size) in [0, 1] (fixed validation set)."""
    out = []
    for p in sorted(paths):
        img = data.load_photo(p, max_side)
        h, w = img.shape[:2]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        sq = Image.fromarray(img[y:y + s, x:x + s]).resize((size, size), Image.Resampling.LANCZOS)
        out.append(np.asarray(sq, dtype=np.float32) / 255.0)
    return to_batch(out)


# ------------------------------------------------------------------ validation

@torch.no_grad()
def predict_ab(model: nn.Module, l: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """L (N, 1, H, W) -> ab (N, 2, H, W) in eval mode."""
    return chunked(model, batch, l, model=model)


def score(pred_ab: torch.Tensor, lab: torch.Tensor) -> dict:
    """Metrics of ab predictions (N, 2, H, W) against the true Lab (N, 3, H, W)."""
    true_ab = lab[:, 1:]
    err = float(ab_error(pred_ab, true_ab).mean())
    gray = float(ab_error(torch.zeros_like(true_ab), true_ab).mean())
    cf_pred = float(colorfulness(lab_to_rgb(torch.cat((lab[:, :1], pred_ab), 1))).mean())
    cf_true = float(colorfulness(lab_to_rgb(lab)).mean())
    return {"ab_err": err, "gray_ab_err": gray, "ab_err_ratio": err / max(gray, 1e-9),
            "colorfulness": cf_pred, "colorfulness_true": cf_true, "colorfulness_ratio": cf_pred / max(cf_true, 1e-9)}


def _better(m: dict, best: dict | None) -> bool:
    """Lowest ab error among states at least half as colourful as the truth (washed-out ones rank after)."""
    if best is None:
        return True
    ok, best_ok = m["colorfulness_ratio"] >= 0.5, best["colorfulness_ratio"] >= 0.5
    return (ok, -m["ab_err"]) > (best_ok, -best["ab_err"])


# ------------------------------------------------------------------ training

def _lr_at(step: int, cfg: Config) -> float:
    # linear decay to lr/20 over the last third
    return warmup_linear_lr(step, cfg.lr, cfg.warmup, cfg.steps, cfg.steps // 3, 1 / 20)


def run(cfg: Config, log: Callable[[str], None]) -> dict:
    """Train (or resume) the colorizer; returns {"step", "best": validation metrics, "out"}."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build(ARCH, **cfg.arch_kwargs())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    train_paths, val_paths = _split(cfg.corpus, cfg.split_seed)
    pool = data.PhotoPool(train_paths, max_side=cfg.work_size)
    # Rarity weights from every training photo at a reduced size (deterministic: they depend on the data only).
    weights = rarity_weights([rgb_to_lab(to_batch([p[::4, ::4].astype(np.float32) / 255.0]))[:, 1:]
                              for p in pool.photos], cfg)
    val_rgb = square_views(val_paths, cfg.val_size, cfg.work_size)
    val_lab = rgb_to_lab(val_rgb)
    trainer = SupervisedRun(out, model, opt, rng, cfg, cfg.arch_kwargs(), log, cfg.init_from)
    trainer.write_config(
        ARCH, data={"corpus": cfg.corpus, "split_seed": cfg.split_seed, "train_photos": len(train_paths),
                    "val_photos": len(val_paths), "pool_max_side": cfg.work_size},
        loss="rarity-weighted L1 on ab (Zhang et al. style rebalancing) + chroma_weight * per-image mean-chroma L1")

    def step_fn() -> tuple[dict, dict]:
        t0 = time.monotonic()
        l, ab = sample_batch(pool, rng, cfg)
        t_data = time.monotonic() - t0
        return colorize_loss(model(l), ab, weights, cfg), {"sec_data": round(t_data, 3)}

    def validate(step: int, terms: dict) -> dict:
        pred = predict_ab(model, val_lab[:, :1])
        m = score(pred, val_lab)
        log(f"step {step} loss {float(terms['total'].detach()):.4f} val ab err {m['ab_err']:.2f} "
            f"(gray {m['gray_ab_err']:.2f}, ratio {m['ab_err_ratio']:.3f}) colourfulness "
            f"{m['colorfulness']:.1f}/{m['colorfulness_true']:.1f}")
        n = min(6, len(val_lab))
        save_grid(out / "samples" / f"step{step:06d}.png",
                  [l_to_rgb(val_lab[:n, :1]), lab_to_rgb(torch.cat((val_lab[:n, :1], pred[:n]), 1)), val_rgb[:n]])
        return m

    return trainer.train(lambda step: _lr_at(step, cfg), step_fn, validate, _better)


# ------------------------------------------------------------------ evaluation

def _load_colorizer(cfg: EvalConfig) -> tuple[Colorizer, dict]:
    if cfg.run:
        model, ck = load_run_best(cfg.run, ARCH)
        work = cfg.work_size or ck["config"]["work_size"]
        return Colorizer(model, work), {"run": str(cfg.run), "step": ck["step"]}
    col = Colorizer.from_registry(cfg.weights, work_size=cfg.work_size or None)
    return col, {"weights": cfg.weights, "sha256": col.entry.sha256}


def evaluate(cfg: EvalConfig, log: Callable[[str], None]) -> dict:
    """Whole held-out photos (long side cfg.size): ab error vs gray prediction and colourfulness vs originals."""
    torch.set_num_threads(cfg.threads)
    colorizer, source = _load_colorizer(cfg)
    _, val_paths = _split(cfg.corpus, cfg.split_seed)
    per_photo, errs, grays, cfs, cf_trues = [], [], [], [], []
    t0 = time.monotonic()
    for p in val_paths:
        rgb = to_batch([data.load_photo(p, cfg.size).astype(np.float32) / 255.0])
        lab = rgb_to_lab(rgb)
        pred = colorizer(lab[:, :1])
        m = score(pred, lab)
        errs.append(m["ab_err"])
        grays.append(m["gray_ab_err"])
        cfs.append(m["colorfulness"])
        cf_trues.append(m["colorfulness_true"])
        per_photo.append({"photo": p.name, **{k: round(v, 3) for k, v in m.items()}})
        log(f"{p.name}: ab err {m['ab_err']:.2f} (gray {m['gray_ab_err']:.2f}) colourfulness "
            f"{m['colorfulness']:.1f} / {m['colorfulness_true']:.1f}")
    err, gray, cf, cf_true = map(lambda v: float(np.mean(v)), (errs, grays, cfs, cf_trues))
    result = {
        **source, "photos": len(val_paths), "size": cfg.size, "work_size": colorizer.work_size,
        "ab_err": err, "gray_ab_err": gray, "ab_err_reduction": 1 - err / gray,
        "colorfulness": cf, "colorfulness_true": cf_true, "colorfulness_ratio": cf / cf_true,
        "targets": {"ab_err_reduction>=0.10": 1 - err / gray >= 0.10, "colorfulness_ratio>=0.5": cf / cf_true >= 0.5},
        "seconds": round(time.monotonic() - t0, 1), "per_photo": per_photo,
    }
    log(f"ab error {err:.2f} vs gray {gray:.2f} ({100 * (1 - err / gray):.1f}% lower); colourfulness {cf:.1f} vs "
        f"{cf_true:.1f} ({cf / cf_true:.2f}x)")
    return finish_evaluation(cfg, result)


# ------------------------------------------------------------------ export

def export(run_dir: str | Path, name: str = "colorize-v1", weights: Path | None = None) -> Path:
    """Publish the run's best checkpoint as weights/<name>.pt with its MANIFEST.json entry; returns the file."""
    return export_best(run_dir, name, ARCH, lambda best: {
        "work_size": best["config"]["work_size"],
        "input": "CIE L* (1, 1, h, w) in [0, 100] at work resolution; output ab (1, 2, h, w) in Lab units"}, weights)
