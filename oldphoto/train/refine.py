"""Training of the image-space refiner F(x, r, m) on top of the frozen latent restoration r = G_Y(T(E_RX(x), m)).

Pairs come from the same degradation synthesis as every model; the mask handed to the restorer is the detector's
(as in the pipeline: its restore threshold, dilated) for `detector_share` of the samples and the ground truth
for the rest. The frozen restorer runs once per pair; pairs are kept in a rotating buffer (mapping.PairBuffer).
Loss: L1 in RGB against the clean photo. The sha256 of every frozen network is recorded at the run's start and
exported with the weights, so Restorer.from_registry refuses a refiner with networks it was not trained on.
run(cfg, log): resumable from cfg.out/ckpt.pt; best validation state in cfg.out/best.pt.
export(run_dir, name): best checkpoint -> weights/<name>.pt + MANIFEST.json entry.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import registry
from ..archs import build
from ..ops.color import luma
from ..ops.masks import dilate
from ..pipeline import WEIGHT_NAMES
from ..stages.detect import Detector
from ..stages.restore import Restorer, restore_threshold
from .chunked import chunked
from .data import PhotoPool, corpus_dir, split_corpus, validation_set
from .loop import SupervisedRun, check_bf16, export_best, last_as_best, read_run_info
from .mapping import PairBuffer, quality
from .metrics import ssim
from .pairs import RecipeMixture, check_mixture, pair_batch, stack_triples
from .run_files import save_grid, warmup_linear_lr

ARCH = "refiner"


@dataclass(frozen=True)
class Config:
    out: str = "runs/refine"  # run folder: ckpt.pt, best.pt, log.jsonl, config.json, samples/
    corpus: str = ""  # folder of clean photos ("": data.corpus_dir()); split into train/validation by split_seed
    split_seed: int = 0  # photo-level split (the same as every other model's)
    val_fraction: float = 0.15  # likewise
    seed: int = 1  # training randomness (crops, degradations, init)
    vae1: str = WEIGHT_NAMES["vae1"]  # frozen restorer whose outputs are refined (registry names; the pipeline's)
    mapping: str = WEIGHT_NAMES["mapping"]  # T
    vae2: str = WEIGHT_NAMES["vae2"]  # G_Y
    detector: str = WEIGHT_NAMES["detector"]  # masks as at inference for detector_share of the samples
    #                                            ("": ground truth only)
    detector_share: float = 0.5  # share of samples restored with the detector's mask
    mask_dilate: int = 1  # grow the detector's mask like the pipeline's default (RestoreConfig.mask_dilate)
    width: int = 16  # refiner channels at full resolution
    crop: int = 256  # training crop edge (the engine's tile)
    batch: int = 4  # crops per step
    buffer: int = 128  # restored pairs kept in memory (0: fresh pairs every step)
    fresh: int = 2  # new pairs entering the buffer per step
    lr: float = 1e-3  # Adam peak learning rate
    warmup: int = 100  # linear warm-up steps
    steps: int = 6000  # total steps
    decay_steps: int = 3000  # the last decay_steps go down linearly to lr/20
    val_n: int = 16  # validation crops (fixed; from validation photos, detector masks as at inference)
    val_size: int = 256  # their edge
    val_seed: int = 1234  # their crop and degradation seed
    val_every: int = 250  # steps between validations (and sample grids)
    ckpt_minutes: float = 5.0  # wall minutes between checkpoints
    max_minutes: float = 0.0  # stop after this many wall minutes in this process (0: no limit)
    threads: int = 1  # torch CPU threads (other jobs share the machine)
    bf16: bool = False  # bfloat16 autocast for the refiner's training forward; only with native CPU bf16
    p_mild: float = 0.0  # share of fresh pairs degraded by a milder recipe (every probability of the default
    #                      DegradeConfig times mild_scale): scans that are mostly intact teach the refiner when to
    #                      keep the scan's own detail, which the heavy default mixture rarely rewards
    mild_scale: float = 0.3  # factor on the degradation probabilities for those pairs
    p_family: float = 0.0  # share of fresh pairs with one family of the recipe alone (degrade.FAMILIES, or none:
    #                        a clean crop), so every kind of scan, mildly damaged ones included, is seen on its own
    ssim_weight: float = 0.0  # adds ssim_weight * (1 - SSIM on luma) to the L1: keeping the scan's detail also
    #                           keeps its noise, which L1 alone barely penalises and SSIM does
    bands: bool = False  # refiner with separate gates for the low and high band of x - r (archs/refiner.py)
    init_from: str = ""  # a refine run folder (its best.pt) or checkpoint that starts a fresh run

    def __post_init__(self) -> None:
        if self.crop % 4 or self.val_size % 4:
            raise ValueError(f"crop and val_size must be multiples of 4, got {self.crop} and {self.val_size}")
        check_mixture(self.p_mild, self.p_family)
        if not 0 <= self.detector_share <= 1 or self.batch < 1 or self.buffer < 0 or self.ssim_weight < 0:
            raise ValueError(f"need 0 <= detector_share <= 1, batch >= 1, buffer >= 0, ssim_weight >= 0, got {self}")


def load_networks(cfg, refiner: str = "") -> tuple[Restorer, Detector | None, dict]:
    """The registered networks a run restores with (cfg.vae1, cfg.mapping, cfg.vae2, the `refiner` if any, and
    cfg.detector unless ""), and what the run records of them, {role: {"name", "sha256"}}, so that a resumed run
    and the export can tell whether they are still the same (refine and joint runs alike)."""
    restorer = Restorer.from_registry(cfg.vae1, cfg.mapping, cfg.vae2, refiner=refiner or None)
    detector = Detector.from_registry(cfg.detector) if cfg.detector else None
    roles = ("vae1", "mapping", "vae2", "refiner")  # the order of restorer.entries
    nets = {k: {"name": e.name, "sha256": e.sha256} for k, e in zip(roles, restorer.entries)}
    if detector is not None:
        nets["detector"] = {"name": detector.entry.name, "sha256": detector.entry.sha256}
    return restorer, detector, nets


def restorer_masks(restorer: Restorer, detector: Detector | None, x: torch.Tensor, m_gt: torch.Tensor,
                   use_detector: torch.Tensor, dilate_px: int) -> torch.Tensor:
    """The masks handed to the restorer: the detector's (restore threshold, dilated) where use_detector (B,) is
    true, else the ground truth. x (B, 3, H, W) [0, 1], m_gt (B, 1, H, W) {0, 1} -> (B, 1, H, W) {0, 1}."""
    if detector is None or not bool(use_detector.any()):
        return m_gt
    with torch.no_grad():
        m_det = dilate(detector.binarize(detector(x), restore_threshold(restorer, detector)), dilate_px)
    return torch.where(use_detector.view(-1, 1, 1, 1), m_det.to(m_gt.dtype), m_gt)


def make_pairs(restorer: Restorer, detector: Detector | None, x: torch.Tensor, y: torch.Tensor, m_gt: torch.Tensor,
               use_detector: torch.Tensor, dilate_px: int) -> tuple[torch.Tensor, ...]:
    """(x, r, m, y): scan, its latent restoration with mask m, the mask, the clean photo (all (B, C, H, W))."""
    m = restorer_masks(restorer, detector, x, m_gt, use_detector, dilate_px)
    return x, restorer(x, m).clone(), m, y  # clone: a normal tensor, not an inference-mode one


def _arch_kwargs(cfg: Config) -> dict:
    return {"width": cfg.width, "bands": True} if cfg.bands else {"width": cfg.width}


def _lr_at(step: int, cfg: Config) -> float:
    return warmup_linear_lr(step, cfg.lr, cfg.warmup, cfg.steps, cfg.decay_steps, 1 / 20)


def run(cfg: Config, log: Callable[[str], None]) -> dict:
    """Train (or resume) the refiner; returns {"step", "best": validation metrics, "out"}."""
    check_bf16(cfg.bf16)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    info_path = out / "config.json"
    if info_path.is_file():  # a resumed run must refine the outputs of the networks it started with
        started = json.loads(info_path.read_text()).get("networks", {})
        for key in ("vae1", "mapping", "vae2"):
            if key in started and started[key]["name"] != getattr(cfg, key):
                raise ValueError(f"{out} was started on {key} {started[key]['name']}, not {getattr(cfg, key)}")
    restorer, detector, nets = load_networks(cfg)
    torch.manual_seed(cfg.seed)
    arch_kwargs = _arch_kwargs(cfg)
    model = build(ARCH, **arch_kwargs).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    trainer = SupervisedRun(out, model, opt, rng, cfg, arch_kwargs, log, cfg.init_from)
    corpus = Path(cfg.corpus).expanduser() if cfg.corpus else corpus_dir()
    train_paths, val_paths = split_corpus(corpus, cfg.val_fraction, cfg.split_seed)
    mixture = RecipeMixture(cfg.p_mild, cfg.mild_scale, cfg.p_family)
    trainer.write_config(ARCH, networks=nets,
                         data={"corpus": str(corpus), "split_seed": cfg.split_seed, "train_photos": len(train_paths),
                               "validation_photos": [p.name for p in val_paths], "crop": cfg.crop,
                               **mixture.describe()},
                         loss="L1(F(x, r, m), y) in RGB"
                         + (f" + {cfg.ssim_weight} (1 - SSIM on luma)" if cfg.ssim_weight else "")
                         + "; r = G_Y(T(E_RX(x), m)) of the frozen networks")
    pool = PhotoPool(train_paths)

    x_val, y_val, m_val_gt = stack_triples(validation_set(val_paths, cfg.val_n, cfg.val_size, cfg.val_seed))
    everyone = torch.ones(len(x_val), dtype=torch.bool)
    _, r_val, m_val, _ = make_pairs(restorer, detector, x_val, y_val, m_val_gt, everyone, cfg.mask_dilate)
    restored = quality(r_val, y_val)
    log(f"refine: validation restorer alone PSNR luma {restored['psnr_y']:.2f} dB, SSIM {restored['ssim_y']:.3f}")

    def fresh_pairs(k: int) -> tuple[torch.Tensor, ...]:
        x, y, m = pair_batch(pool, rng, k, cfg.crop, mixture.pick(rng))
        use_det = torch.from_numpy(rng.random(k) < cfg.detector_share)
        return make_pairs(restorer, detector, x, y, m, use_det, cfg.mask_dilate)

    buffer = PairBuffer(cfg.buffer, fresh_pairs, rng) if cfg.buffer else None

    def step_fn() -> tuple[dict, dict]:
        t0 = time.monotonic()
        if buffer is not None:
            buffer.refresh(cfg.fresh)
            x, r, m, y = buffer.sample(cfg.batch)
        else:
            x, r, m, y = fresh_pairs(cfg.batch)
        t_data = time.monotonic() - t0
        cl = torch.channels_last
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = model(x.contiguous(memory_format=cl), r.contiguous(memory_format=cl), m.contiguous(memory_format=cl))
        l1 = F.l1_loss(pred.float(), y)
        terms = {"l1": l1, "total": l1}
        if cfg.ssim_weight > 0:
            terms["ssim"] = ssim(luma(pred.float()), luma(y), dtype=torch.float32).mean()
            terms["total"] = l1 + cfg.ssim_weight * (1 - terms["ssim"])
        return terms, {"sec_data": round(t_data, 3)}

    @torch.no_grad()
    def on_validation(step: int, terms: dict) -> dict:
        pred = chunked(model, 4, x_val, r_val, m_val, model=model)
        metrics = quality(pred, y_val)
        metrics["gain_over_restorer_db"] = metrics["psnr_y"] - restored["psnr_y"]
        log(f"step {step} loss {float(terms['total'].detach()):.4f} val PSNR luma {metrics['psnr_y']:.2f} dB "
            f"({metrics['gain_over_restorer_db']:+.2f} over the restorer), SSIM {metrics['ssim_y']:.3f}")
        save_grid(out / "samples" / f"step{step:06d}.png",
                  [x_val[:4], r_val[:4], pred[:4].clamp(0, 1), y_val[:4]])
        return metrics

    return trainer.train(lambda step: _lr_at(step, cfg), step_fn, on_validation,
                         lambda m, best: best is None or m["psnr_y"] > best["psnr_y"])


def export(run_dir: str | Path, name: str = "refine-v1", weights: Path | None = None, checkpoint: str = "best") -> Path:
    """Publish the run's best (or, with checkpoint="last", its final) state as weights/<name>.pt with its
    MANIFEST.json entry; returns the file.

    The meta names the frozen networks (with sha256) the refiner was trained on: Restorer.from_registry checks them.
    """
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, ARCH)
    networks = info["networks"]
    for key, net in networks.items():
        if registry.get(net["name"]).sha256 != net["sha256"]:
            raise ValueError(f"{run_dir} was trained on {key} {net['name']} {net['sha256'][:12]}…, which the registry "
                             f"no longer holds")
    return export_best(run_dir, name, ARCH, lambda best: {
        **networks,
        "role": "image-space fusion after the latent restoration: " + (
            "out = r + a_lo low(x - r) + a_hi (x - r - low(x - r)) + d, low = Gaussian (sigma 2 px) over intact pixels"
            if info["arch_kwargs"].get("bands") else "out = r + a (x - r) + d"),
        "input": "x (B, 3, T, T) scan [0, 1], r (B, 3, T, T) restoration [0, 1], m (B, 1, T, T) {0, 1}; T % 4 == 0",
        "checkpoint": checkpoint},
        weights, last_as_best(run_dir, _arch_kwargs(Config(**info["config"]))) if checkpoint == "last" else None)
