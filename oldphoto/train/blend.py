"""Training of the scan-blend gate (archs/blend_gate.py, ops/blend.py) on the frozen pipeline chain.

Data: `crops` synthetic pairs from the training photos (refine's mixture: the full recipe, a milder one, single
families, clean crops), each restored as the pipeline does it (the detector's mask at the restore threshold, dilated;
the restorer; `--tone photo` on the crop as a one-tile photo). Per crop only the gate's features and the terms of
the luma error as a function of the strengths are kept: out(s) - y = r0 - (1 - s_lo) L - (1 - s_hi) (1 - m) H is
linear in s, so its mean square is c - 2 w.b + w'Aw with w = 1 - s. The restored crops are cached in the run folder
(data.pt, named by the chain's sha256), so a rerun with other fitting settings skips the expensive part.

Loss per crop: log MSE(s) (mean over crops = mean PSNR up to a constant) + penalty * max(0, log MSE(s) - log
MSE(1, 1)): every dB a crop loses against the restorer's output as is costs (1 + penalty) times what a dB gained
earns, so the gate backs off the restoration only where it is sure. Full-batch AdamW; the best state on a held-back
share of the crops is kept. Validation: the gain over strengths (1, 1) on validation photos, heavy recipe, each single
family, and the second generator (never trained on).
run(cfg, log) -> summary; export(run_dir, name) -> weights/<name>.pt + MANIFEST.json entry.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import registry
from ..archs import build
from ..ops.blend import BLEND_FEATURES, blend_features, intact_low_band
from ..ops.color import luma
from ..pipeline import WEIGHT_NAMES
from ..stages.detect import Detector
from ..stages.blend import fitted_chain
from ..stages.restore import Restorer
from .chunked import chunked
from .data import PhotoPool, corpus_dir, split_corpus, validation_set
from .degrade import FAMILIES, DegradeConfig, family_recipe
from .degrade_second import SecondConfig, degrade_second
from .evaluate_restore import even_tone_crops
from .loop import export_best, read_run_info
from .pairs import RecipeMixture, pair_batch, stack_triples
from .refine import restorer_masks
from .run_files import atomic_torch_save, atomic_write_json, command_line, JsonlLog

ARCH = "blend_gate"


@dataclass(frozen=True)
class Config:
    out: str = "runs/blend"  # run folder: data.pt (restored crops' terms), best.pt, log.jsonl, config.json
    corpus: str = ""  # folder of clean photos ("": data.corpus_dir()); split into train/validation by split_seed
    split_seed: int = 0  # photo-level split (the same as every other model's)
    val_fraction: float = 0.15  # likewise
    seed: int = 11  # crops, degradations, held-back share, init
    vae1: str = WEIGHT_NAMES["vae1"]  # the frozen chain the gate judges (registry names; the pipeline's)
    mapping: str = WEIGHT_NAMES["mapping"]  # T
    vae2: str = WEIGHT_NAMES["vae2"]  # G_Y
    refiner: str = WEIGHT_NAMES["refiner"]  # "": none
    detector: str = WEIGHT_NAMES["detector"]  # its masks at the restorer's threshold, as in the pipeline
    crops: int = 3200  # training crops (multiple of 8), restored once and cached
    crop: int = 256  # their edge (the engine's tile)
    p_mild: float = 0.15  # refine's mixture (pairs.RecipeMixture): share of the milder recipe ...
    mild_scale: float = 0.3  # ... with every probability of the full one times this
    p_family: float = 0.35  # share of single families (or clean crops); the rest: the full recipe
    mask_dilate: int = 1  # the pipeline's default --mask-dilate
    hidden: int = 0  # gate: 0 = linear on the standardised features
    penalty: float = 20.0  # extra weight on the dB a crop loses against strengths (1, 1)
    lr: float = 3e-3  # AdamW, full batch
    weight_decay: float = 1e-2  # AdamW decoupled weight decay
    iters: int = 6000  # full-batch iterations
    holdout: float = 0.2  # share of the crops held back to pick the best state
    val_heavy: int = 48  # validation crops of the full recipe (seed 999, as benchmarks/joint_finetune_score.py)
    val_family: int = 12  # per single family and clean (seed 77)
    val_second: int = 48  # of the second generator (seed 1357)
    threads: int = 2  # torch CPU threads

    def __post_init__(self) -> None:
        if self.crops < 8 or self.crops % 8:
            raise ValueError(f"crops must be a positive multiple of 8 (restored 8 at a time), got {self.crops}")
        if not 0 < self.holdout < 1 or self.penalty < 0 or self.hidden < 0:
            raise ValueError(f"need 0 < holdout < 1, penalty >= 0 and hidden >= 0, got {self.holdout}, "
                             f"{self.penalty}, {self.hidden}")


def _chain(cfg: Config) -> tuple[Restorer, Detector, dict]:
    """The frozen restorer and detector, and {name: sha256} of each (+ the restore threshold) for the meta."""
    restorer = Restorer.from_registry(cfg.vae1, cfg.mapping, cfg.vae2, refiner=cfg.refiner or None)
    detector = Detector.from_registry(cfg.detector)
    return restorer, detector, fitted_chain(restorer, detector)


def error_terms(x: torch.Tensor, o: torch.Tensor, m: torch.Tensor, y: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The luma MSE of ops.blend.blend(x, o, m, s) against y as a quadratic in w = 1 - s: (A (B, 2, 2), b (B, 2),
    c (B,)) with MSE = c - 2 w.b + w'Aw (without blend's final clamp). All inputs (B, 3, H, W) [0, 1], m (B, 1,
    H, W) {0, 1}."""
    lx, lo, ly = luma(x.float()), luma(o.float()), luma(y.float())
    m = m.float()
    d = lo - lx
    low = intact_low_band(d, m)
    high = (1 - m) * (d - low)
    r0 = lo - ly

    def dot(a, b):
        return (a * b).flatten(1).mean(1)

    ll, lh, hh = dot(low, low), dot(low, high), dot(high, high)
    a = torch.stack([torch.stack([ll, lh], 1), torch.stack([lh, hh], 1)], 1)
    return a, torch.stack([dot(low, r0), dot(high, r0)], 1), dot(r0, r0)


def blend_mse(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
    """(B,) luma MSE at strengths (B, 2), from error_terms."""
    w = 1 - strengths
    return c - 2 * (w * b).sum(1) + torch.einsum("ni,nij,nj->n", w, a, w)


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10(mse.clamp_min(1e-10))


@torch.no_grad()
def restored_terms(restorer: Restorer, detector: Detector, x: torch.Tensor, y: torch.Tensor, m_gt: torch.Tensor,
                   dilate_px: int) -> dict:
    """Restore (x, y, m) as the pipeline does (detector masks, --tone photo per crop) -> {"features", "a", "b",
    "c"}."""
    m = restorer_masks(restorer, detector, x, m_gt, torch.ones(len(x), dtype=torch.bool), dilate_px)
    o = even_tone_crops(chunked(restorer, 8, x, m).clamp(0, 1), x, m)
    a, b, c = error_terms(x, o, m, y)
    return {"features": blend_features(x, o, m), "a": a, "b": b, "c": c}


def _cat(parts: list[dict]) -> dict:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _training_data(cfg: Config, restorer, detector, networks, train_paths, log) -> dict:
    path = Path(cfg.out) / "data.pt"
    key = {"networks": networks, "crops": cfg.crops, "crop": cfg.crop, "seed": cfg.seed, "p_mild": cfg.p_mild,
           "mild_scale": cfg.mild_scale, "p_family": cfg.p_family, "mask_dilate": cfg.mask_dilate,
           "features": list(BLEND_FEATURES), "split_seed": cfg.split_seed, "val_fraction": cfg.val_fraction}
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        if cached["key"] == json.dumps(key, sort_keys=True):
            log(f"blend: {len(cached['data']['c'])} restored crops from {path}")
            return cached["data"]
        log(f"blend: {path} was made with other settings or networks; restoring anew")
    pool, rng = PhotoPool(train_paths), np.random.default_rng(cfg.seed)
    mixture = RecipeMixture(cfg.p_mild, cfg.mild_scale, cfg.p_family)
    parts, t0 = [], time.time()
    for i in range(0, cfg.crops, 8):
        x, y, m = pair_batch(pool, rng, 8, cfg.crop, mixture.pick(rng))
        parts.append(restored_terms(restorer, detector, x, y, m, cfg.mask_dilate))
        if (i // 8) % 25 == 0:
            log(f"blend: restored {i + 8}/{cfg.crops} crops ({time.time() - t0:.0f} s)")
    data = _cat(parts)
    atomic_torch_save({"key": json.dumps(key, sort_keys=True), "data": data}, path)
    return data


def _validation_sets(cfg: Config, restorer, detector, val_paths) -> dict:
    specs = {"heavy": (cfg.val_heavy, 999, DegradeConfig(), None), "clean": (cfg.val_family, 77, family_recipe(), None)}
    specs.update({f: (cfg.val_family, 77, family_recipe(f), None) for f in FAMILIES})
    specs["second"] = (cfg.val_second, 1357, None, degrade_second)
    sets = {}
    for name, (n, seed, recipe, generator) in specs.items():
        extra = {"generator": generator, "cfg": SecondConfig()} if generator else {"cfg": recipe}
        x, y, m = stack_triples(validation_set(val_paths, n, cfg.crop, seed, **extra))
        sets[name] = restored_terms(restorer, detector, x, y, m, cfg.mask_dilate)
    return sets


def gains(gate: torch.nn.Module, sets: dict) -> dict:
    """{set: mean PSNR gain (dB, luma) of the gate's strengths over (1, 1)}, plus the mean over single families."""
    out = {}
    with torch.no_grad():
        for name, d in sets.items():
            s = gate(d["features"])
            out[name] = round(float((_psnr(blend_mse(d["a"], d["b"], d["c"], s))
                                     - _psnr(d["c"])).clamp(max=60).mean()), 3)
    singles = [v for k, v in out.items() if k not in ("heavy", "second")]
    out["single_families_mean"] = round(sum(singles) / len(singles), 3)
    return out


def _loss(gate, data: dict, idx: torch.Tensor, penalty: float) -> torch.Tensor:
    s = gate(data["features"][idx])
    log_mse = torch.log(blend_mse(data["a"][idx], data["b"][idx], data["c"][idx], s).clamp_min(1e-10))
    log_one = torch.log(data["c"][idx].clamp_min(1e-10))
    return (log_mse + penalty * (log_mse - log_one).clamp_min(0)).mean()


def run(cfg: Config, log: Callable[[str], None]) -> dict:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    restorer, detector, networks = _chain(cfg)
    corpus = Path(cfg.corpus).expanduser() if cfg.corpus else corpus_dir()
    train_paths, val_paths = split_corpus(corpus, cfg.val_fraction, cfg.split_seed)
    t0 = time.time()
    data = _training_data(cfg, restorer, detector, networks, train_paths, log)
    keep = torch.isfinite(data["features"]).all(1) & (data["c"] > 1e-9)  # clean crops restored exactly: no error
    data = {k: v[keep] for k, v in data.items()}
    torch.manual_seed(cfg.seed)
    n = len(data["c"])
    order = torch.randperm(n)
    held, fit = order[: int(n * cfg.holdout)], order[int(n * cfg.holdout):]
    arch_kwargs = {"n_features": len(BLEND_FEATURES), "hidden": cfg.hidden}
    gate = build(ARCH, **arch_kwargs)
    gate.set_standardisation(data["features"][fit])
    opt = torch.optim.AdamW(gate.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    logger = JsonlLog(out / "log.jsonl")
    best, best_state, best_iter = math.inf, None, 0
    for it in range(cfg.iters + 1):
        if it % 50 == 0:
            with torch.no_grad():
                held_loss = float(_loss(gate, data, held, cfg.penalty))
            if held_loss < best:
                best, best_iter = held_loss, it
                best_state = {k: v.clone() for k, v in gate.state_dict().items()}
            logger.write({"step": it, "held_loss": round(held_loss, 5)})
        if it == cfg.iters:
            break
        opt.zero_grad()
        _loss(gate, data, fit, cfg.penalty).backward()
        opt.step()
    gate.load_state_dict(best_state)
    with torch.no_grad():
        held_gain = float((_psnr(blend_mse(data["a"][held], data["b"][held], data["c"][held],
                                           gate(data["features"][held]))) - _psnr(data["c"][held])).mean())
    log(f"blend: best state at iteration {best_iter}, held-back crops {held_gain:+.3f} dB over strengths (1, 1)")
    val = {"held_back_gain_db": round(held_gain, 3),
           "gain_db": gains(gate, _validation_sets(cfg, restorer, detector, val_paths))}
    log(f"blend: validation gains (dB) {val['gain_db']}")
    cfg_dict = asdict(cfg)
    atomic_write_json(out / "config.json", {
        "config": cfg_dict, "command": command_line(), "networks": networks,
        "data": {"corpus": str(corpus), "split_seed": cfg.split_seed, "train_photos": len(train_paths),
                 "validation_photos": [p.name for p in val_paths], "crops": cfg.crops, "crop": cfg.crop,
                 "used_crops": n, **RecipeMixture(cfg.p_mild, cfg.mild_scale, cfg.p_family).describe()},
        "loss": f"log MSE(s) + {cfg.penalty} max(0, log MSE(s) - log MSE(1, 1)), luma, per crop"})
    best_ckpt = {"model": best_state, "step": best_iter, "val": val, "config": cfg_dict, "arch_kwargs": arch_kwargs,
                 "history": [{"command": command_line()}], "command": command_line(), "wall": time.time() - t0}
    atomic_torch_save(best_ckpt, out / "best.pt")
    return {"best_iteration": best_iter, **val}


def export(run_dir: str | Path, name: str = "blend-v1", weights: Path | None = None) -> Path:
    """Publish the run's best state as weights/<name>.pt with its MANIFEST.json entry (the chain it was fitted on
    in meta.networks: the pipeline refuses the gate beside another chain)."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, ARCH, needs=("crops", "penalty"))
    networks = info["networks"]
    for key, digest in networks.items():
        if key != "restore_threshold" and registry.get(key).sha256 != digest:
            raise ValueError(f"{run_dir} was fitted on {key} {digest[:12]}…, which the registry no longer holds")
    return export_best(run_dir, name, ARCH, lambda best: {
        "networks": networks, "features": list(BLEND_FEATURES),
        "role": "scan-blend strengths (s_lo, s_hi) per photo for ops.blend.blend: out = o - (1 - s_lo) L - "
                "(1 - m)(1 - s_hi) H, L the low band of the restorer's change over intact pixels, H the rest"},
        weights)
