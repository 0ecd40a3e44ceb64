"""Joint fine-tuning of the whole restorer chain on its final output: F(x, G_Y(T(E_RX(x), m)), m) against y.

The method trains T with both VAEs frozen and our refiner F on top of the frozen three; each is then tuned for
its own target (latent L1, image L1 of its input) and none for what the pipeline hands back. Starting from the
published networks, this run trains them together on the final output (L1 in RGB + ssim_weight (1 - SSIM on
luma)), E_RX and G_Y included unless `train_vaes` is off. The seventeenth session's probe measured +0.28 dB /
+0.022 SSIM on our recipe and +0.26 dB / +0.020 on the second generator (weights/README.md).

Pairs as the refiner's: the default recipe, one family alone or a milder recipe; the detector's masks (the
restore threshold, dilated) for `detector_share` of the samples, ground truth for the rest.
run(cfg, log): resumable from cfg.out/ckpt.pt; best validation state in cfg.out/best.pt.
export(run_dir, names): four consistent entries (VAE1 with the tuned E_RX, mapping, VAE2 with the tuned G_Y,
refiner), each recording the sha256 of the others it works with, so Restorer.from_registry refuses mixtures.
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
from ..ops.color import luma
from ..pipeline import WEIGHT_NAMES
from ..stages.restore import Restorer
from . import EXPORT_NAME_COUNTS
from .chunked import chunked
from .data import PhotoPool, corpus_dir, split_corpus, validation_set
from .loop import SupervisedRun, check_bf16, last_as_best, read_run_info
from .mapping import quality
from .metrics import ssim
from .pairs import RecipeMixture, check_mixture, pair_batch, stack_triples
from .refine import load_networks, restorer_masks
from .run_files import cosine_lr, export_weights, save_grid

PARTS = ("vae1", "mapping", "vae2", "refiner")  # registry roles, in the order export names them


@dataclass(frozen=True)
class Config:
    out: str = "runs/joint"  # run folder: ckpt.pt, best.pt, log.jsonl, config.json, samples/
    corpus: str = ""  # folder of clean photos ("": data.corpus_dir()); split into train/validation by split_seed
    split_seed: int = 0  # photo-level split (the same as every other model's)
    val_fraction: float = 0.15  # likewise
    seed: int = 41  # training randomness (crops, degradations, mask choice)
    vae1: str = WEIGHT_NAMES["vae1"]  # the chain to start from (registry names; the pipeline's)
    mapping: str = WEIGHT_NAMES["mapping"]  # T
    vae2: str = WEIGHT_NAMES["vae2"]  # G_Y
    refiner: str = WEIGHT_NAMES["refiner"]  # image-space refiner after G_Y
    detector: str = WEIGHT_NAMES["detector"]  # masks as at inference for detector_share of the samples ("": none)
    train_vaes: bool = True  # also train E_RX and G_Y (the method freezes them; frozen, mild scans lost ~0.6 dB)
    detector_share: float = 0.5  # share of samples restored with the detector's mask
    mask_dilate: int = 1  # grow the detector's mask like the pipeline's default (RestoreConfig.mask_dilate)
    crop: int = 256  # training crop edge (the engine's tile)
    batch: int = 4  # crops per step
    lr: float = 1e-4  # Adam peak learning rate: small, the networks start trained
    warmup: int = 50  # linear warm-up steps
    final_lr: float = 0.05  # cosine decay to lr * final_lr at `steps`
    steps: int = 5000  # total steps
    p_mild: float = 0.15  # share of pairs degraded by the default recipe with every probability times mild_scale
    mild_scale: float = 0.3  # factor on the degradation probabilities for those pairs
    p_family: float = 0.35  # share of pairs with one family of the recipe alone (or none: a clean crop)
    ssim_weight: float = 0.25  # adds ssim_weight * (1 - SSIM on luma) to the L1
    val_n: int = 16  # validation crops (fixed; from validation photos, detector masks as at inference)
    val_size: int = 256  # their edge
    val_seed: int = 1234  # their crop and degradation seed
    val_every: int = 250  # steps between validations (and sample grids)
    ckpt_minutes: float = 5.0  # wall minutes between checkpoints
    max_minutes: float = 0.0  # stop after this many wall minutes in this process (0: no limit)
    threads: int = 1  # torch CPU threads (other jobs share the machine)
    bf16: bool = False  # bfloat16 autocast for the training forward; only with native CPU bf16

    def __post_init__(self) -> None:
        if self.crop % 4 or self.val_size % 4:
            raise ValueError(f"crop and val_size must be multiples of 4, got {self.crop} and {self.val_size}")
        if not (self.vae1 and self.mapping and self.vae2 and self.refiner):
            raise ValueError(f"the chain needs all four networks, got vae1={self.vae1!r}, mapping={self.mapping!r}, "
                             f"vae2={self.vae2!r}, refiner={self.refiner!r}")
        check_mixture(self.p_mild, self.p_family)
        if not 0 <= self.detector_share <= 1 or self.batch < 1 or self.ssim_weight < 0 or not 0 < self.final_lr <= 1:
            raise ValueError(f"need 0 <= detector_share <= 1, batch >= 1, ssim_weight >= 0, 0 < final_lr <= 1, "
                             f"got {self}")


class Chain(torch.nn.Module):
    """E_RX, T, G_Y and the refiner as one module (one state dict, one optimiser, one checkpoint).

    forward(x (B, 3, H, W) [0, 1], m (B, 1, H, W) {0, 1}; H, W multiples of 4) -> (B, 3, H, W), unclamped: the
    refiner's output, as the Restorer computes it before its final clamp. With `frozen_vaes`, E_RX runs without
    gradients (G_Y stays in the graph: T and the refiner learn through it).
    """

    def __init__(self, encoder: torch.nn.Module, mapping: torch.nn.Module, decoder: torch.nn.Module,
                 refiner: torch.nn.Module, frozen_vaes: bool = False):
        super().__init__()
        self.encoder, self.mapping, self.decoder, self.refiner = encoder, mapping, decoder, refiner
        self.frozen_vaes = frozen_vaes
        for part in (encoder, decoder):
            part.requires_grad_(not frozen_vaes)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(m.shape) != (x.shape[0], 1, *x.shape[2:]) or x.shape[-1] % 4 \
                or x.shape[-2] % 4:
            raise ValueError(f"Chain: expected x (B, 3, H, W) and m (B, 1, H, W) with H, W multiples of 4, "
                             f"got {tuple(x.shape)} and {tuple(m.shape)}")
        cl = torch.channels_last
        x, m = x.contiguous(memory_format=cl), m.contiguous(memory_format=cl)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_vaes):
            mu, _ = self.encoder(x)
        r = self.decoder(self.mapping(mu, m)).float().clamp(0, 1)
        return self.refiner(x, r.contiguous(memory_format=cl), m).float()


def _lr_at(step: int, cfg: Config) -> float:
    # linear warm-up, then cosine decay to lr * final_lr at `steps`
    return cosine_lr(cfg.lr, cfg.final_lr, step / cfg.steps) * min(1.0, (step + 1) / cfg.warmup)


def run(cfg: Config, log: Callable[[str], None]) -> dict:
    """Fine-tune (or resume) the chain; returns {"step", "best": validation metrics, "out"}."""
    check_bf16(cfg.bf16)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    info_path = out / "config.json"
    if info_path.is_file():  # a resumed run goes on from the networks it started with
        started = json.loads(info_path.read_text()).get("networks", {})
        for key in PARTS:
            if key in started and started[key]["sha256"] != registry.get(getattr(cfg, key)).sha256:
                raise ValueError(f"{out} was started from {key} {started[key]['name']}, not {getattr(cfg, key)}")
    restorer, detector, nets = load_networks(cfg, refiner=cfg.refiner)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    chain = Chain(restorer.encoder, restorer.mapping, restorer.decoder, restorer.refiner, not cfg.train_vaes)
    opt = torch.optim.Adam(chain.trainable(), lr=cfg.lr)
    trainer = SupervisedRun(out, chain, opt, rng, cfg, {}, log)
    corpus = Path(cfg.corpus).expanduser() if cfg.corpus else corpus_dir()
    train_paths, val_paths = split_corpus(corpus, cfg.val_fraction, cfg.split_seed)
    mixture = RecipeMixture(cfg.p_mild, cfg.mild_scale, cfg.p_family)
    trainer.write_config("chain", networks=nets,
                         data={"corpus": str(corpus), "split_seed": cfg.split_seed, "train_photos": len(train_paths),
                               "validation_photos": [p.name for p in val_paths], "crop": cfg.crop,
                               **mixture.describe()},
                         loss=f"L1(F(x, G_Y(T(E_RX(x), m)), m), y) in RGB + {cfg.ssim_weight} (1 - SSIM on luma); "
                              + ("E_RX, T, G_Y and F trained" if cfg.train_vaes else "T and F trained, VAEs frozen"))
    pool = PhotoPool(train_paths)

    x_val, y_val, m_val_gt = stack_triples(validation_set(val_paths, cfg.val_n, cfg.val_size, cfg.val_seed))
    m_val = restorer_masks(restorer, detector, x_val, m_val_gt, torch.ones(len(x_val), dtype=torch.bool),
                           cfg.mask_dilate)
    start_q = quality(chunked(Restorer.from_registry(cfg.vae1, cfg.mapping, cfg.vae2, refiner=cfg.refiner), 4,
                              x_val, m_val), y_val)
    log(f"joint: validation, the chain it started from: PSNR luma {start_q['psnr_y']:.2f} dB, "
        f"SSIM {start_q['ssim_y']:.3f}")

    def step_fn() -> tuple[dict, dict]:
        t0 = time.monotonic()
        x, y, m_gt = pair_batch(pool, rng, cfg.batch, cfg.crop, mixture.pick(rng))
        m = restorer_masks(restorer, detector, x, m_gt, torch.from_numpy(rng.random(cfg.batch) < cfg.detector_share),
                           cfg.mask_dilate)
        t_data = time.monotonic() - t0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = chain(x, m)
        l1 = F.l1_loss(pred, y)
        s = ssim(luma(pred.clamp(0, 1)), luma(y), dtype=torch.float32).mean()
        return {"l1": l1, "ssim": s, "total": l1 + cfg.ssim_weight * (1 - s)}, {"sec_data": round(t_data, 3)}

    @torch.no_grad()
    def on_validation(step: int, terms: dict) -> dict:
        pred = chunked(chain, 4, x_val, m_val, model=chain).clamp(0, 1)
        metrics = quality(pred, y_val)
        metrics["gain_over_start_db"] = metrics["psnr_y"] - start_q["psnr_y"]
        log(f"step {step} loss {float(terms['total'].detach()):.4f} val PSNR luma {metrics['psnr_y']:.2f} dB "
            f"({metrics['gain_over_start_db']:+.2f} over the start), SSIM {metrics['ssim_y']:.3f}")
        save_grid(out / "samples" / f"step{step:06d}.png", [x_val[:4], pred[:4], y_val[:4]])
        return metrics

    return trainer.train(lambda step: _lr_at(step, cfg), step_fn, on_validation,
                         lambda m, best: best is None or m["psnr_y"] > best["psnr_y"])


def _prefixed(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def export(run_dir: str | Path, names: str, weights: Path | None = None, checkpoint: str = "best") -> Path:
    """Publish the run's best (or, with checkpoint="last", its final) chain as four registry entries named by
    `names`, "VAE1,MAPPING,VAE2,REFINER" (e.g. "vae1-v2,mapping-v2,vae2-v2,refine-v3"); returns the mapping's file.

    VAE1 keeps its G_RX and VAE2 its E_Y from the start (the chain does not use them); each entry's meta records the
    run (command, config, data, loss, validation) and the entries it was tuned from. The mapping records the two
    VAEs and keeps its start's mask_threshold (re-select it: benchmarks/select_restore_threshold.py); the refiner
    records the three networks and the detector, as Restorer.from_registry checks.
    """
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    parts = registry.split_names(names, EXPORT_NAME_COUNTS["joint"],
                                 "names must be four distinct registry names VAE1,MAPPING,VAE2,REFINER")
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, "chain")
    started = info["networks"]
    for key, net in started.items():
        if net["name"] not in parts and registry.get(net["name"]).sha256 != net["sha256"]:
            raise ValueError(f"{run_dir} started from {key} {net['name']} {net['sha256'][:12]}…, which the registry "
                             f"no longer holds")
    sources = {key: registry.get(started[key]["name"]) for key in PARTS}  # read before any is replaced
    best = (last_as_best(run_dir, {}) if checkpoint == "last"
            else torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    state = best["model"]
    ck = run_dir / "ckpt.pt"
    training = {"command": best.get("command", info.get("command", "")), "history": best.get("history", []),
                "config": best["config"], "data": info.get("data", {}), "loss": info.get("loss", ""),
                "seed": best["config"]["seed"], "step": best["step"], "checkpoint": checkpoint,
                "steps_trained": torch.load(ck, map_location="cpu", weights_only=True)["step"] if ck.is_file()
                else best["step"], "wall_seconds": round(best["wall"], 1), "validation": best["val"],
                "tuned_from": started}
    named = dict(zip(PARTS, parts))

    def publish(key: str, weights_state: dict, meta: dict) -> Path:
        src = sources[key]
        # the runs its start came out of, oldest first, so a chain tuned in phases keeps every command and config
        earlier = list(src.meta.get("earlier_phases", []))
        if "jointly_tuned" in src.meta:
            earlier.append(src.meta["jointly_tuned"])
        if earlier:
            meta = {**meta, "earlier_phases": earlier}
        return export_weights(weights_state, named[key], src.arch, src.arch_kwargs,
                              {**meta, "jointly_tuned": training}, weights)

    def shas() -> dict:
        registry.entries.cache_clear()
        return {k: {"name": named[k], "sha256": registry.get(named[k]).sha256} for k in PARTS if k in done}

    done: list[str] = []
    # a chain tuned again (from vae1-v2 ...) traces its VAEs to the ones pretrained alone: their untuned halves
    # and the reconstruction ceiling are those
    pretrained = {k: sources[k].meta.get("pretrained_as", {"name": sources[k].name, "sha256": sources[k].sha256})
                  for k in ("vae1", "vae2")}
    kept_half = {  # the half of each VAE the chain does not use stays as it was: say so, it is not a VAE any more
        "vae1": f"G_RX (decoder) is {pretrained['vae1']['name']}'s, untuned; only E_RX is used by the restorer",
        "vae2": f"E_Y (encoder) is {pretrained['vae2']['name']}'s, untuned, and no longer pairs with the tuned G_Y: "
                f"the reconstruction ceiling is {pretrained['vae2']['name']}'s (oldphoto eval restore takes it from "
                "pretrained_as)"}
    for key, sub, part in (("vae1", "encoder.", "encoder."), ("vae2", "decoder.", "decoder.")):
        full = registry.load_entry(sources[key]).state_dict()
        full.update({part + k: v for k, v in _prefixed(state, sub).items()})
        keep = {k: v for k, v in sources[key].meta.items() if k in ("role", "source", "command", "config", "data")}
        publish(key, full, {**keep, "published_with": named["mapping"], "untuned_half": kept_half[key],
                            "pretrained_as": pretrained[key]})
        done.append(key)
    m_meta = sources["mapping"].meta
    meta = {"role": m_meta.get("role", "mapping T"), **shas()}
    if "mask_threshold" in m_meta:
        meta["mask_threshold"] = m_meta["mask_threshold"]
        meta["mask_threshold_selection"] = {"inherited_from": sources["mapping"].name}  # until re-selected
    path = publish("mapping", _prefixed(state, "mapping."), meta)
    done.append("mapping")
    r_meta = sources["refiner"].meta
    meta = {k: r_meta[k] for k in ("role", "input") if k in r_meta}
    meta.update(shas())
    if "detector" in started:
        meta["detector"] = started["detector"]
    publish("refiner", _prefixed(state, "refiner."), meta)
    registry.entries.cache_clear()
    return path
