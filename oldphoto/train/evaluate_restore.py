"""Evaluation of latent restoration on fixed held-out crops (`oldphoto eval restore`).

Validation photos (data.split_corpus) are never trained on; `n` crops of `size` px with the full degrade()
recipe and a fixed seed. Compared against the clean target y, on Rec. 601 luma (PSNR, SSIM) and RGB (PSNR):
  degraded     the input x itself
  baseline     classical mask + push-pull/diffusion inpainting + bilateral denoise + contrast stretch
  baseline_no_stretch   the same without the stretch (stronger on this data; targets use the stronger one)
  vae2_ceiling G_Y(E_Y(y)): what the decoder can render at best (of the VAE2 a jointly tuned one started from)
  full         G_Y(T(E_RX(x), m)) with the detector's mask (ground truth when no detector is registered), as the
               pipeline makes it by default: --tone photo and --scan-blend auto on each crop as a one-tile photo
  full_no_blend  the same with --scan-blend off
  full_gt_mask the same with the ground-truth mask
  full_tone_oracle  full with a gain and offset per crop and channel fitted to y: what is left when tone is not
               counted (a diagnostic; it needs y)
  no_global    full, with the partial non-local branch switched off (same weights)
  no_mask      full, with an all-zero mask
Results go to <out>/results.json and, with `record`, into the mapping's manifest entry (meta["evaluation"]).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import registry
from ..config import DETECT_SCALES, TONE_STRENGTH, RestoreConfig
from ..ops.color import from_float, to_float
from ..ops.masks import dilate
from ..passes import even_tone, keep_intact, scan_blend
from ..pipeline import WEIGHT_NAMES
from ..stages.blend import ScanBlend, fitted_chain
from ..stages.detect import Detector, TwoScaleDetector
from ..stages.restore import Restorer, restore_threshold
from .baseline import BaselineConfig, classical_restore
from .chunked import chunked
from .data import corpus_dir, split_corpus, validation_set
from .loop import model_state
from .mapping import quality
from .metrics import tone_oracle
from .pairs import stack_triples
from .run_files import atomic_write_json, save_grid, update_meta

TARGETS = {"gain_over_degraded_db": 5.0, "gain_over_baseline_db": 2.0, "ssim_y": 0.85}


@dataclass(frozen=True)
class EvalConfig:
    n: int = 48  # validation crops
    size: int = 256  # crop edge (a multiple of 4)
    seed: int = 4321  # crop and degradation seed (fixed: every evaluation sees the same pairs)
    corpus: str = ""  # folder of clean photos; "" -> data.corpus_dir()
    split_seed: int = 0  # must match training: validation photos are never trained on
    val_fraction: float = 0.15  # likewise
    vae1: str = WEIGHT_NAMES["vae1"]  # registry names (default: the pipeline's)
    mapping: str = WEIGHT_NAMES["mapping"]  # T
    vae2: str = WEIGHT_NAMES["vae2"]  # G_Y
    refiner: str = WEIGHT_NAMES["refiner"]  # registry name of the image-space refiner run after G_Y, as the
    #                                          pipeline ("": none)
    detector: str = WEIGHT_NAMES["detector"]  # "" or not registered -> the ground-truth mask is used (and said so)
    blend: str = WEIGHT_NAMES["blend"]  # scan-blend gate as the pipeline ("", not registered, or no detector: none)
    mask_dilate: int = 1  # grow the detector's mask like the pipeline's default (RestoreConfig.mask_dilate)
    detect_scales: int = RestoreConfig().scales  # the detector run as the pipeline runs it when restoring
    batch: int = 8  # tiles per forward pass
    threads: int = 2  # torch threads
    cost_tile: int = 256  # speed measurement: tile edge ...
    cost_batch: int = 8  # ... and tiles per forward pass
    out: str = "runs/eval_restore"  # results.json and a sample grid
    record: bool = False  # also store the results in the mapping's (refiner's, gate's) MANIFEST.json entry: only
    #                       for the standard set

    def __post_init__(self) -> None:
        if self.detect_scales not in DETECT_SCALES:
            raise ValueError(f"detect_scales must be one of {DETECT_SCALES}, got {self.detect_scales!r}")
        if self.record and self.detect_scales != RestoreConfig().scales:
            raise ValueError("record stores the numbers of the pipeline's default detection: with detect_scales "
                             f"{self.detect_scales} set record to false")
        if self.record:
            self._check_standard_set()

    def _check_standard_set(self) -> None:
        """ValueError when a field that defines the evaluation set (or how masks are made) is not its default:
        a recorded evaluation replaces the held-out numbers of the weights, so it must be on the same set."""
        changed = [f"{k}={getattr(self, k)!r}" for k in STANDARD_SET if getattr(self, k) != STANDARD_SET[k]]
        if self.corpus and Path(self.corpus).expanduser().resolve() == corpus_dir().resolve():
            changed = [c for c in changed if not c.startswith("corpus=")]
        if changed:
            raise ValueError(f"record=true replaces the weights' recorded held-out evaluation, so it needs the "
                             f"standard set: {', '.join(changed)} differ from the defaults; set record to false")


STANDARD_SET = {k: getattr(EvalConfig, k) for k in ("n", "size", "seed", "corpus", "split_seed", "val_fraction",
                                                    "mask_dilate")}  # the recorded evaluations' set


def cost(restorer: Restorer, tile: int = 256, batch: int = 8, threads: int = 2, repeats: int = 3,
         defect_share: float = 0.05) -> dict:
    """Speed and size of the restore stage (E_RX + T + G_Y, no detector) on random tiles with a scratch-like mask.

    Returns parameters per network, GMAC per megapixel (torch's FLOP counter / 2: convolutions and matmuls,
    attention included) and megapixels per second (best of `repeats`, wall time and process CPU time).
    """
    from torch.utils.flop_counter import FlopCounterMode

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(batch, 3, tile, tile, generator=gen)
        mask = torch.zeros(batch, 1, tile, tile)
        rows = round(defect_share * tile)
        mask[:, :, tile // 3: tile // 3 + rows // 2] = 1  # a horizontal band and a vertical scratch
        mask[:, :, :, tile // 2: tile // 2 + rows - rows // 2] = 1
        with FlopCounterMode(display=False) as counter:
            restorer(x, mask)
        megapixels = batch * tile * tile / 1e6
        walls, cpus = [], []
        restorer(x, mask)  # warm-up (oneDNN primitive creation)
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            restorer(x, mask)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    finally:
        torch.set_num_threads(before)
    nets = {"encoder": restorer.encoder, "mapping": restorer.mapping, "decoder": restorer.decoder}
    if restorer.refiner is not None:
        nets["refiner"] = restorer.refiner
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    return {"params": params, "params_total": sum(params.values()),
            "gmac_per_megapixel": round(counter.get_total_flops() / 2 / 1e9 / megapixels, 2),
            "megapixel_per_s_wall": round(megapixels / min(walls), 3),
            "cpu_seconds_per_megapixel": round(min(cpus) / megapixels, 3),
            "tile": tile, "batch": batch, "threads": threads,
            "mask_coverage_percent": round(100 * float(mask.mean()), 1)}


def evaluate(cfg: EvalConfig, log: Callable[[str], None]) -> dict:
    """Run every variant on the fixed held-out crops; returns {variant: metrics, ...} plus gains and targets."""
    x, y, m_gt, val_paths, restorer, detector, prob = _setup(cfg, need_detector=False)
    log(f"restore eval: {cfg.n} crops of {cfg.size} px from {len(val_paths)} validation photos")
    # a jointly tuned G_Y (oldphoto train joint) no longer pairs with the E_Y it was exported beside: the ceiling
    # is the clean-photo VAE as trained, the entry it was tuned from
    ceiling_vae = registry.get(cfg.vae2).meta.get("pretrained_as", {}).get("name", cfg.vae2)
    vae2 = registry.load(ceiling_vae)
    if detector is not None:
        threshold = restore_threshold(restorer, detector)  # as the pipeline
        mask = _restorer_mask(detector, prob, threshold, cfg)
        scales = f", two scales, half pass weighted {detector.half_weight}" if cfg.detect_scales == 2 else ""
        mask_source = f"detector {cfg.detector} (threshold {threshold}, dilate {cfg.mask_dilate}{scales})"
    else:
        mask = m_gt
        mask_source = "ground truth (no detector registered)"
    log(f"mask: {mask_source}")

    results: dict = {"degraded": quality(x, y)}
    base_cfg = BaselineConfig()
    t0 = time.perf_counter()
    results["baseline"] = quality(chunked(lambda t: classical_restore(t, base_cfg)[0], cfg.batch, x), y)
    baseline_seconds = time.perf_counter() - t0
    no_stretch = BaselineConfig(stretch=False)
    results["baseline_no_stretch"] = quality(chunked(lambda t: classical_restore(t, no_stretch)[0], cfg.batch, x), y)
    with torch.no_grad():
        results["vae2_ceiling"] = quality(chunked(lambda t: vae2(t)[0], cfg.batch, y), y)
    t0 = time.perf_counter()
    full = chunked(restorer, cfg.batch, x, mask)
    restore_seconds = time.perf_counter() - t0
    # the pipeline's default (--tone photo, --scan-blend auto) takes a crop as a whole photo: one tile, evened by its
    # own curve, blended by its own strengths
    gate = None
    if cfg.blend in registry.entries() and detector is not None:
        gate = ScanBlend.from_registry(cfg.blend, fitted_chain(restorer, detector))
    strengths: list = []
    full_photo = even_tone_crops(full, x, mask, blend_stage=gate, strengths=strengths)
    results["full"] = quality(full_photo, y)
    if gate is not None:
        results["full_no_blend"] = quality(even_tone_crops(full, x, mask), y)
    results["full_tone_tile"] = quality(full, y)
    results["full_tone_scan"] = quality(even_tone_crops(full, x, mask, strength=0.0), y)  # --tone scan
    results["scope_defects"] = quality(even_tone_crops(full, x, mask, strength=0.0, defects_only=True), y)
    results["full_gt_mask"] = quality(chunked(restorer, cfg.batch, x, m_gt), y)
    # how much of the remaining error is tone: the full output with each crop's channel gains and offsets fitted to
    # the clean target (needs y, so a diagnostic, not a variant the pipeline could run)
    results["full_tone_oracle"] = quality(tone_oracle(full_photo, y), y)
    restorer.mapping.use_global = False
    try:
        results["no_global"] = quality(chunked(restorer, cfg.batch, x, mask), y)
    finally:
        restorer.mapping.use_global = True
    results["no_mask"] = quality(chunked(restorer, cfg.batch, x, torch.zeros_like(mask)), y)
    if restorer.refiner is not None:
        refiner, restorer.refiner = restorer.refiner, None
        try:
            results["no_refiner"] = quality(chunked(restorer, cfg.batch, x, mask), y)
        finally:
            restorer.refiner = refiner

    best_baseline = max(results["baseline"]["psnr_y"], results["baseline_no_stretch"]["psnr_y"])
    gains = {"gain_over_degraded_db": results["full"]["psnr_y"] - results["degraded"]["psnr_y"],
             "gain_over_baseline_db": results["full"]["psnr_y"] - best_baseline}
    met = {"gain_over_degraded_db": gains["gain_over_degraded_db"] >= TARGETS["gain_over_degraded_db"],
           "gain_over_baseline_db": gains["gain_over_baseline_db"] >= TARGETS["gain_over_baseline_db"],
           "ssim_y": results["full"]["ssim_y"] >= TARGETS["ssim_y"]}
    megapixels = cfg.n * cfg.size * cfg.size / 1e6
    summary = {
        "variants": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in results.items()},
        "gains": {k: round(v, 3) for k, v in gains.items()}, "targets": TARGETS, "targets_met": met,
        "ceiling_vae": ceiling_vae, "mask": mask_source,
        "scan_blend": None if gate is None else {
            "gate": cfg.blend, "crops_blended": sum(1 for v in strengths if min(v) < 1),
            "mean_strengths": [round(float(np.mean([v[k] for v in strengths])), 4) for k in (0, 1)]},
        "mask_coverage_percent": round(100 * float(mask.mean()), 2),
        "gt_mask_coverage_percent": round(100 * float(m_gt.mean()), 2),
        "data": {"crops": cfg.n, "size": cfg.size, "seed": cfg.seed, "split_seed": cfg.split_seed,
                 "validation_photos": sorted(p.name for p in val_paths),
                 "degradation": "oldphoto.train.degrade.degrade, DegradeConfig() defaults"},
        "metrics": "PSNR/SSIM (oldphoto.train.metrics; SSIM Gaussian 11x11 sigma 1.5) on Rec. 601 luma; PSNR on RGB",
        "ablations": "no_global and no_mask reuse the trained weights (switched off at inference, not retrained); "
                     "they, full_gt_mask and no_refiner are the restorer's output as is, like full_tone_tile "
                     "(full adds the pipeline's default --tone photo pass, passes.even_tone at strength "
                     f"{TONE_STRENGTH}, and --scan-blend auto, passes.scan_blend; full_no_blend the tone pass "
                     "alone; full_tone_scan the --tone scan pass, scope_defects that and the scan's pixels outside "
                     "the mask); full_tone_oracle is full with each crop's channel gains and "
                     "offsets fitted to the clean target (train.metrics.tone_oracle): the error no gain and offset "
                     "per channel removes",
        "baseline_config": asdict(base_cfg),
        "seconds": {"restore": round(restore_seconds, 2), "baseline": round(baseline_seconds, 2),
                    "restore_megapixel_per_s": round(megapixels / restore_seconds, 3), "threads": cfg.threads,
                    "note": "wall time on a shared machine"},
        "cost": cost(restorer, cfg.cost_tile, cfg.cost_batch, cfg.threads),
        "weights": {e.name: e.sha256 for e in restorer.entries},
        "config": asdict(cfg),
    }
    out = Path(cfg.out)
    atomic_write_json(out / "results.json", summary)
    save_grid(out / "samples.png", [x[:6], mask[:6].expand(-1, 3, -1, -1),
                                    chunked(lambda t: classical_restore(t, base_cfg)[0], cfg.batch, x[:6]),
                                    full[:6], y[:6]])
    if cfg.record:
        update_meta(cfg.mapping, "evaluation", summary)
        if cfg.refiner:
            update_meta(cfg.refiner, "evaluation", summary)
        if gate is not None:
            update_meta(cfg.blend, "evaluation", summary)
    for k, v in results.items():
        log(f"{k:20s} PSNR luma {v['psnr_y']:6.2f} dB  SSIM luma {v['ssim_y']:.3f}  PSNR RGB {v['psnr_rgb']:6.2f} dB")
    log(f"gains: {summary['gains']}; targets met: {met}")
    return summary


def even_tone_crops(restored: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                    strength: float = TONE_STRENGTH, defects_only: bool = False, blend_stage=None,
                    strengths: list | None = None) -> torch.Tensor:
    """What `--tone photo` (passes.even_tone) makes of each crop taken as a whole photo: restored, x (B, 3, H, W)
    in [0, 1], mask (B, 1, H, W) {0, 1} -> (B, 3, H, W) in [0, 1], through 16-bit pixels as in the pipeline.
    strength: `--tone-strength` (0: `--tone scan`); defects_only: then the scan's pixels back outside the mask (`--scope
    defects`); blend_stage: then passes.scan_blend with that stages.blend.ScanBlend (`--scan-blend auto`), its strengths
    appended to `strengths` when given."""
    out = []
    for r, s, m in zip(restored, x, mask):
        pixels = from_float(s.permute(1, 2, 0).numpy(), np.uint16)
        evened = from_float(r.permute(1, 2, 0).numpy(), np.uint16)
        defects = (m[0].numpy() > 0.5).astype(np.uint8)
        even_tone(evened, pixels, defects, 1, strength=strength)
        if blend_stage is not None:
            used = scan_blend(evened, pixels, defects, blend_stage)
            if strengths is not None and used is not None:
                strengths.append(used)
        if defects_only:
            keep_intact(evened, pixels, defects)
        out.append(torch.from_numpy(to_float(evened)).permute(2, 0, 1))
    return torch.stack(out)


def _setup(cfg: EvalConfig, need_detector: bool = True) -> tuple:
    """The held-out crops (x, y, ground-truth mask), the validation photos, the registered restorer and detector
    and the detector's probabilities for x. Without need_detector, an unregistered detector gives None, None."""
    torch.set_num_threads(cfg.threads)
    corpus = Path(cfg.corpus).expanduser() if cfg.corpus else corpus_dir()
    _, val_paths = split_corpus(corpus, cfg.val_fraction, cfg.split_seed)
    x, y, m_gt = stack_triples(validation_set(val_paths, cfg.n, cfg.size, cfg.seed))
    restorer = Restorer.from_registry(cfg.vae1, cfg.mapping, cfg.vae2, refiner=cfg.refiner or None)
    if not need_detector and not (cfg.detector and cfg.detector in registry.entries()):
        return x, y, m_gt, val_paths, restorer, None, None
    detector = Detector.from_registry(cfg.detector)
    if cfg.detect_scales == 2:
        detector = TwoScaleDetector(detector)
    return x, y, m_gt, val_paths, restorer, detector, chunked(detector, cfg.batch, x)


def _restorer_mask(detector: Detector, prob: torch.Tensor, threshold: float, cfg: EvalConfig) -> torch.Tensor:
    """The mask the pipeline hands the restorer: probabilities above `threshold`, grown by cfg.mask_dilate."""
    return dilate(detector.binarize(prob, threshold), cfg.mask_dilate)


def compare_mappings(candidates: dict[str, Path], cfg: EvalConfig = EvalConfig(seed=999),
                     log: Callable[[str], None] = lambda s: None) -> dict:
    """Pick among mapping checkpoints on crops of another seed than the evaluation's (default 999 vs 4321), so the
    choice does not tune to the reported numbers. candidates: {label: a run's best.pt or ckpt.pt, or a weights
    file}; each is run with the registered VAEs and detector. Returns {label: {"gt_mask": metrics, "detector_mask":
    metrics}} and the crops' setup under "data"."""
    x, y, m_gt, _, restorer, detector, prob = _setup(cfg)
    threshold = restore_threshold(restorer, detector)  # as the pipeline
    m_det = _restorer_mask(detector, prob, threshold, cfg)
    out: dict = {"data": {"crops": cfg.n, "size": cfg.size, "seed": cfg.seed, "detector": cfg.detector,
                          "threshold": threshold, "degraded": quality(x, y)}}
    for label, path in candidates.items():
        restorer.mapping.load_state_dict(model_state(path))
        out[label] = {"gt_mask": quality(chunked(restorer, cfg.batch, x, m_gt), y),
                      "detector_mask": quality(chunked(restorer, cfg.batch, x, m_det), y)}
        log(f"{label}: PSNR luma {out[label]['gt_mask']['psnr_y']:.2f} dB (ground-truth mask), "
            f"{out[label]['detector_mask']['psnr_y']:.2f} dB (detector mask)")
    return out


def select_mapping_and_threshold(candidates: dict[str, Path], thresholds: list[float],
                                 cfg: EvalConfig = EvalConfig(seed=999, detect_scales=1, record=False),
                                 log: Callable[[str], None] = lambda s: None) -> dict:
    """Full-pipeline quality of every (mapping checkpoint, detector threshold) pair on crops of another seed than
    the evaluation's, for choosing both together when the detector or the mapping changed: {label: {threshold:
    metrics + mask coverage %}}, the crops' setup under "data" and the best pair (PSNR luma) under "chosen".
    The threshold is one pass's (the mapping's meta["mask_threshold"]): cfg.detect_scales must be 1."""
    _one_pass(cfg)
    if {"data", "chosen"} & set(candidates):
        raise ValueError(f"candidate labels 'data' and 'chosen' are reserved, got {sorted(candidates)}")
    x, y, _, _, restorer, detector, prob = _setup(cfg)
    out: dict = {"data": {"crops": cfg.n, "size": cfg.size, "seed": cfg.seed, "detector": cfg.detector,
                          "degraded": quality(x, y)}}
    best = None
    for label, path in candidates.items():
        restorer.mapping.load_state_dict(model_state(path))
        out[label] = _threshold_table(restorer, x, y, detector, prob, thresholds, cfg, lambda s: log(f"{label}: {s}"))
        for t, q in out[label].items():
            if best is None or q["psnr_y"] > best["psnr_y"]:
                best = {"candidate": label, "threshold": t, "psnr_y": q["psnr_y"]}
    out["chosen"] = best
    return out


def _one_pass(cfg: EvalConfig) -> None:
    if cfg.detect_scales != 1:
        raise ValueError(f"the mapping's mask_threshold is for one detector pass: need detect_scales 1, "
                         f"got {cfg.detect_scales}")


def _threshold_table(restorer: Restorer, x: torch.Tensor, y: torch.Tensor, detector: Detector, prob: torch.Tensor,
                     thresholds: list[float], cfg: EvalConfig, log: Callable[[str], None]) -> dict:
    """{threshold: quality of `restorer` with the detector's mask at it, + mask coverage %} on crops x vs y."""
    out = {}
    for t in thresholds:
        mask = _restorer_mask(detector, prob, t, cfg)
        q = {**quality(chunked(restorer, cfg.batch, x, mask), y),
             "mask_coverage_percent": round(100 * float(mask.mean()), 2)}
        out[float(t)] = q
        log(f"threshold {t}: PSNR luma {q['psnr_y']:.2f} dB, SSIM {q['ssim_y']:.3f}, "
            f"coverage {q['mask_coverage_percent']}%")
    return out


def sweep_mask_threshold(thresholds: list[float], cfg: EvalConfig = EvalConfig(seed=999, detect_scales=1, record=False),
                         log: Callable[[str], None] = lambda s: None) -> dict:
    """Full-pipeline quality of the registered restorer for each detector threshold, on crops of another seed than
    the evaluation's: {threshold: metrics (+ mask coverage %)}; the best goes into the mapping's meta as
    "mask_threshold" by hand, with this table (one pass's threshold: cfg.detect_scales must be 1)."""
    _one_pass(cfg)
    x, y, _, _, restorer, detector, prob = _setup(cfg)
    return _threshold_table(restorer, x, y, detector, prob, thresholds, cfg, log)
