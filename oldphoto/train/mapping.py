"""Training of the latent mapping T on synthetic pairs (x, y, m) with both VAEs frozen.

Loss: lambda_latent · L1(T(z_x, m), z_y) + w_image · L1(G_Y(T(z_x, m)), y) + w_gan · LSGAN + lambda_fm · feature
matching, with z_x = E_RX(x) and z_y = E_Y(y) (posterior means) and a latent discriminator telling T(z_x) from
z_y. The image term (through the frozen decoder G_Y) is our addition to the paper's loss: it weighs latent errors
by what they do to pixels. The VAEs are copied into the run's checkpoint when it starts, so T always matches the
exact encoder and decoder it was trained with; export publishes all three together. Pairs are synthesised on
the fly and kept encoded in a rotating buffer (PairBuffer); `init_from` warm-starts a new run (e.g. one that
adds the context module) from another run's best weights.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import registry
from ..archs import build
from ..errors import SettingsError
from ..ops.color import luma
from ..ops.masks import dilate
from ..stages.detect import Detector
from . import EXPORT_NAME_COUNTS
from .chunked import chunked
from .data import PhotoPool, corpus_dir, split_corpus, validation_set
from .loop import StepBook, check_bf16, model_state, read_run_info
from .losses import feature_matching, lsgan_d_loss, lsgan_g_loss
from .metrics import psnr, ssim
from .pairs import pair_batch, stack_triples
from .run_files import (JsonlLog, atomic_torch_save, atomic_write_json, check_publishable, cli_equivalent,
                        export_weights, rng_state, save_grid, set_rng_state, start_run_dir, update_meta)
from .vae import Config as VAEConfig
from .vae import data_recipe


@dataclass(frozen=True)
class Config:
    out: str = "runs/mapping"  # run folder
    vae1: str = "runs/vae1"  # VAE1: a vae run folder (its best.pt) or a registry name; copied at the start
    vae2: str = "runs/vae2"  # VAE2: likewise
    corpus: str = ""  # folder of clean photos; "" -> data.corpus_dir()
    split_seed: int = 0  # data.split_corpus seed (keep the VAEs' split: validation photos are never trained on)
    val_fraction: float = 0.15  # share of corpus photos held out for validation
    seed: int = 0  # crops, degradations and initialisation
    steps: int = 1_000_000  # upper bound on optimisation steps
    minutes: float = 0.0  # wall-clock budget over all resumes (0: until `steps` or stopped; lr stays constant)
    crop: int = 128  # training crop edge (multiple of 8)
    batch: int = 8  # pairs per step
    buffer: int = 256  # encoded pairs kept and reused (0: a fresh batch every step); not checkpointed (about
    #                    200 MB): a resumed run refills it from its restored random stream, so it continues
    #                    the run statistically, not step for step as with buffer 0
    fresh: int = 2  # new pairs entering the buffer per step
    detector: str = ""  # registry name of a defect detector whose masks replace the ground truth for a share of
    #                     the samples, as at inference; "" -> ground-truth masks only
    detector_share: float = 0.5  # share of samples trained with the detector's mask
    detector_dilate: int = 1  # grow the detector's mask like the pipeline's default (RestoreConfig.mask_dilate)
    detector_threshold: float = 0.0  # binarisation threshold for the detector's masks (0: the detector's own); set
    #                                  it to the restorer's mask_threshold so training sees the inference masks
    lr: float = 2e-4  # Adam lr (paper), betas (0.5, 0.999)
    lr_final: float = 0.1  # with a minutes budget: final lr as a fraction of lr (cosine decay)
    lambda_latent: float = 60.0  # λ1: latent L1 weight (paper)
    w_image: float = 60.0  # image L1 through the frozen G_Y (0 = the paper's loss)
    w_gan: float = 1.0  # latent LSGAN weight for T
    lambda_fm: float = 10.0  # λ2: feature matching weight (paper)
    gan_start: int = 500  # steps before the GAN and feature-matching terms start
    mask_dilate_max: int = 2  # the training mask is grown by 0..this many pixels (detector masks are fatter)
    width: int = 64  # mapping channels
    blocks_pre: int = 2  # residual blocks before the global branch
    blocks_post: int = 2  # residual blocks after the fusion
    context: bool = True  # tile-wide feature statistics modulate the features (global tone: fading, casts)
    init_from: str = ""  # a mapping run folder (its best.pt) or weights file that starts a new run (the modules it
    #                      lacks start fresh)
    disc_width: int = 64  # latent discriminator width
    val_n: int = 12  # validation pairs (fixed; from validation photos)
    val_size: int = 256  # validation crop edge
    val_seed: int = 1234  # validation crop and degradation seed
    val_every: int = 200  # steps between validations
    log_every: int = 20  # steps between log.jsonl records
    ckpt_minutes: float = 3.0  # minutes between checkpoints
    threads: int = 1  # torch threads (the machine is shared)
    bf16: bool = False  # bfloat16 autocast for the forward passes of T, G_Y and the discriminator (losses, weights
    #                    and validation stay float32); only where the CPU has native bf16 (AVX512-BF16 / AMX)

    def __post_init__(self) -> None:
        if self.crop % 8 or self.val_size % 8:
            raise ValueError(f"crop and val_size must be multiples of 8, got {self.crop} and {self.val_size}")
        if self.batch < 1 or self.steps < 0 or self.minutes < 0 or self.mask_dilate_max < 0:
            raise ValueError(f"batch >= 1 and steps, minutes, mask_dilate_max >= 0 required, got {self}")


def load_vae(ref: str) -> tuple[torch.nn.Module, dict]:
    """A VAE from a run folder (its best.pt) or a registry name -> (model in eval mode, {arch_kwargs, source})."""
    run = Path(ref).expanduser()
    if (run / "best.pt").is_file():
        cfg = json.loads((run / "config.json").read_text())["config"]
        best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
        kwargs = {k: cfg[k] for k in ("latent", "width", "half_width", "blocks")}
        model = build("vae", **kwargs)
        model.load_state_dict(best["state_dict"])
        source = {"run": str(run), "step": int(best["step"]), "metrics": best["metrics"]}
    else:
        entry = registry.get(ref)  # raises WeightsError naming the known models
        model, kwargs = registry.load_entry(entry), entry.arch_kwargs
        source = {"registry": ref, "sha256": entry.sha256}
    return model.eval(), {"arch_kwargs": dict(kwargs), "source": source}


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@torch.no_grad()
def restore_batch(vae1, mapping, vae2, x: torch.Tensor, m: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """G_Y(T(E_RX(x), m)) for (N, 3, H, W) [0, 1] images and (N, 1, H, W) masks, in chunks."""
    return chunked(lambda xs, ms: vae2.decoder(mapping(vae1.encoder(xs)[0], ms)), chunk, x, m)


def quality(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """Means over the batch: PSNR on RGB, PSNR and SSIM on Rec. 601 luma (all (N, 3, H, W) [0, 1])."""
    lp, lt = luma(pred.clamp(0, 1)), luma(target)
    return {"psnr_rgb": float(psnr(pred.clamp(0, 1), target).mean()), "psnr_y": float(psnr(lp, lt).mean()),
            "ssim_y": float(ssim(lp, lt).mean())}


@torch.no_grad()
def encode_pairs(vae1, vae2, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, detect=None
                 ) -> tuple[torch.Tensor, ...]:
    """(x, y, m) -> (z_x = E_RX(x), z_y = E_Y(y), y, m, m_detected): the frozen encoders' posterior means, and
    the mask `detect(x)` gives ((B, 1, H, W) {0, 1}; the ground truth again when detect is None)."""
    return vae1.encoder(x)[0], vae2.encoder(y)[0], y, m, (m if detect is None else detect(x))


class PairBuffer:
    """A rotating store of encoded pairs (z_x, z_y, y, m): each step replaces `fresh` random entries with new
    pairs and samples a batch from all of them. On 2 shared CPU cores the degradation synthesis and the two
    frozen encoders would otherwise cost as much as the training step itself; each pair is now used about
    capacity * batch / (fresh * capacity) = batch / fresh times, while the store keeps turning over.
    """

    def __init__(self, capacity: int, make: Callable[[int], tuple], rng: np.random.Generator, chunk: int = 8):
        self.capacity, self.make, self.rng, self.chunk = capacity, make, rng, chunk
        self.items: list[torch.Tensor] = []

    def _fill(self) -> None:
        parts = [self.make(min(self.chunk, self.capacity - i)) for i in range(0, self.capacity, self.chunk)]
        self.items = [torch.cat(t) for t in zip(*parts)]

    def refresh(self, fresh: int) -> None:
        if not self.items:
            self._fill()
            return
        if fresh > 0:
            slots = torch.from_numpy(self.rng.choice(self.capacity, min(fresh, self.capacity), replace=False))
            for store, new in zip(self.items, self.make(len(slots))):
                store[slots] = new

    def sample(self, batch: int) -> tuple[torch.Tensor, ...]:
        idx = torch.from_numpy(self.rng.choice(self.capacity, min(batch, self.capacity), replace=False))
        return tuple(store[idx] for store in self.items)


def train_step(cfg: Config, mapping, disc, decoder, opt_g, opt_d, z_x: torch.Tensor, z_y: torch.Tensor,
               y: torch.Tensor, m: torch.Tensor, use_gan: bool) -> dict[str, float]:
    """One step on a batch: latents z_x = E_RX(x), z_y = E_Y(y) (B, latent, S/4, S/4), clean y (B, 3, S, S) [0, 1],
    mask m (B, 1, S, S) {0, 1}; updates T, then the latent discriminator. The decoder G_Y is frozen (gradients
    only flow through it into T). Returns each loss term as a float."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        z_hat = mapping(z_x, m)
        image = decoder(z_hat) if cfg.w_image > 0 else None
        if use_gan:
            fake_feats = [f.float() for f in disc.features(z_hat)]
            with torch.no_grad():
                real_feats = [f.float() for f in disc.features(z_y)]
    z_hat = z_hat.float()
    parts = {"latent_l1": F.l1_loss(z_hat, z_y)}
    loss = cfg.lambda_latent * parts["latent_l1"]
    if image is not None:
        parts["image_l1"] = F.l1_loss(image.float(), y)
        loss = loss + cfg.w_image * parts["image_l1"]
    if use_gan:
        parts["g_gan"] = lsgan_g_loss(fake_feats[-1])
        parts["fm"] = feature_matching(real_feats, fake_feats)
        loss = loss + cfg.w_gan * parts["g_gan"] + cfg.lambda_fm * parts["fm"]
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    if use_gan:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            real_score, fake_score = disc(z_y), disc(z_hat.detach())
        parts["d_gan"] = lsgan_d_loss(real_score.float(), fake_score.float())
        opt_d.zero_grad(set_to_none=True)
        parts["d_gan"].backward()
        opt_d.step()
    return {k: float(v.detach()) for k, v in parts.items()}


def warm_start(mapping: torch.nn.Module, source: Path, log: Callable[[str], None]) -> None:
    """Load a mapping run's best weights (source = run folder) or a weights file (e.g. weights/mapping-v1.pt)
    into `mapping`. Only whole modules the source lacks may stay fresh: the context module, and residual blocks
    beyond the source's (a deeper mapping), which start as the identity (their last conv at zero) so the deeper
    mapping computes exactly what the source did."""
    result = mapping.load_state_dict(model_state(source), strict=False)
    new_blocks = sorted({k.rsplit(".", 2)[0] for k in result.missing_keys if k.startswith(("pre.", "post."))})
    if result.unexpected_keys or any(not k.startswith(("context.", "pre.", "post.")) for k in result.missing_keys) \
            or any(f"{b}.conv1.weight" not in result.missing_keys for b in new_blocks):
        raise ValueError(f"{source} does not fit this mapping: missing {result.missing_keys}, "
                         f"unexpected {result.unexpected_keys}")
    with torch.no_grad():
        for b in new_blocks:
            block = mapping.get_submodule(b)
            block.conv2.weight.zero_(), block.conv2.bias.zero_()
    log(f"started from {source}" + (f" (fresh: {', '.join(result.missing_keys)})" if result.missing_keys else ""))


def run(cfg: Config, log: Callable[[str], None]) -> dict:
    """Train (or resume) the mapping in cfg.out; returns the last validation metrics and counters."""
    check_bf16(cfg.bf16)
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    start_run_dir(out, asdict(cfg), ("width", "blocks_pre", "blocks_post", "disc_width", "context"))
    corpus = Path(cfg.corpus).expanduser() if cfg.corpus else corpus_dir()
    train_paths, val_paths = split_corpus(corpus, cfg.val_fraction, cfg.split_seed)
    pool = PhotoPool(train_paths)
    x_val, y_val, m_val = stack_triples(validation_set(val_paths, cfg.val_n, cfg.val_size, cfg.val_seed))

    ckpt_path = out / "ckpt.pt"
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.is_file() else None
    if ck is None:
        vae1, info1 = load_vae(cfg.vae1)
        vae2, info2 = load_vae(cfg.vae2)
    else:  # the frozen VAEs travel with the checkpoint: T stays matched to them whatever happens to the sources
        info1, info2 = ck["vae1_info"], ck["vae2_info"]
        vae1, vae2 = build("vae", **info1["arch_kwargs"]), build("vae", **info2["arch_kwargs"])
        vae1.load_state_dict(ck["vae1"])
        vae2.load_state_dict(ck["vae2"])
    vae1, vae2 = freeze(vae1), freeze(vae2)
    latent = info1["arch_kwargs"]["latent"]
    if info2["arch_kwargs"]["latent"] != latent:
        raise ValueError(f"VAE1 has {latent} latent channels but VAE2 has {info2['arch_kwargs']['latent']}")

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    mapping = build("mapping", latent=latent, width=cfg.width, blocks_pre=cfg.blocks_pre, blocks_post=cfg.blocks_post,
                    context=cfg.context)
    disc = build("latent_discriminator", latent=latent, width=cfg.disc_width)
    opt_g = torch.optim.Adam(mapping.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    step, elapsed, best = 0, 0.0, -math.inf
    if ck is not None:
        mapping.load_state_dict(ck["mapping"])
        disc.load_state_dict(ck["disc"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        set_rng_state(rng, ck["rng"])
        step, elapsed, best = ck["step"], ck["elapsed"], ck["best"]
        log(f"resumed {out} at step {step} ({elapsed / 60:.1f} min trained)")
    elif cfg.init_from:
        warm_start(mapping, Path(cfg.init_from), log)
    logf = JsonlLog(out / "log.jsonl")

    def checkpoint() -> None:
        atomic_torch_save({"mapping": mapping.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                           "opt_d": opt_d.state_dict(), "rng": rng_state(rng), "step": step, "elapsed": elapsed,
                           "best": best, "vae1": vae1.state_dict(), "vae2": vae2.state_dict(),
                           "vae1_info": info1, "vae2_info": info2, "book": book.state()}, ckpt_path)

    def validation() -> dict:
        nonlocal best
        mapping.eval()
        pred = restore_batch(vae1, mapping, vae2, x_val, m_val)
        mapping.train()
        metrics = quality(pred, y_val)
        save_grid(out / "samples" / f"step{step:06d}.png",
                  [x_val[:4], m_val[:4].expand(-1, 3, -1, -1), pred[:4].clamp(0, 1), y_val[:4]])
        if metrics["psnr_y"] > best:
            best = metrics["psnr_y"]
            atomic_torch_save({"state_dict": mapping.state_dict(), "step": step, "elapsed": elapsed,
                               "metrics": metrics, "vae1": vae1.state_dict(), "vae2": vae2.state_dict(),
                               "vae1_info": info1, "vae2_info": info2}, out / "best.pt")
        logf.write({"step": step, "val": metrics})
        log(f"mapping step {step}: val PSNR luma {metrics['psnr_y']:.2f} dB, SSIM {metrics['ssim_y']:.3f}, "
            f"RGB {metrics['psnr_rgb']:.2f} dB")
        return metrics

    detect = None
    if cfg.detector:
        detector = Detector.from_registry(cfg.detector)
        det_t = cfg.detector_threshold or detector.threshold
        detect = lambda x: dilate(detector.binarize(detector(x), det_t), cfg.detector_dilate)  # noqa: E731
        log(f"masks: {cfg.detector} (threshold {det_t}) for {cfg.detector_share:.0%} of the samples")
        if not (out / "detector.json").is_file():  # the detector the run started with, for the weights' meta
            atomic_write_json(out / "detector.json", {"name": cfg.detector, "sha256": detector.entry.sha256,
                                                      "threshold": det_t})
    buffer = PairBuffer(cfg.buffer, lambda k: encode_pairs(vae1, vae2, *pair_batch(pool, rng, k, cfg.crop), detect),
                        rng)
    mapping.train()
    disc.train()
    book = StepBook(out, cfg, logf, validation, checkpoint)
    if ck is None:
        checkpoint()  # pins the VAE copies before the first step
    else:
        book.resume(step, ck.get("book"))

    def one_step() -> None:
        nonlocal step, elapsed
        t0 = time.monotonic()
        lr = book.set_lr(elapsed, opt_g, opt_d)
        if buffer.capacity:
            buffer.refresh(cfg.fresh)
            z_x, z_y, y, m, m_det = buffer.sample(cfg.batch)
        else:
            z_x, z_y, y, m, m_det = encode_pairs(vae1, vae2, *pair_batch(pool, rng, cfg.batch, cfg.crop), detect)
        m = dilate(m, int(rng.integers(cfg.mask_dilate_max + 1)))
        if detect is not None:
            # the detector's masks miss some defects and mark intact detail: T must cope with both
            use_det = torch.from_numpy(rng.random(len(m)) < cfg.detector_share).view(-1, 1, 1, 1)
            m = torch.where(use_det, m_det, m)
        use_gan = step >= cfg.gan_start and (cfg.w_gan > 0 or cfg.lambda_fm > 0)
        values = train_step(cfg, mapping, disc, vae2.decoder, opt_g, opt_d, z_x, z_y, y, m, use_gan)
        StepBook.check(out, step, values)
        step += 1
        elapsed += time.monotonic() - t0
        book.after(step, elapsed, lr, values)

    metrics = book.drive(one_step, lambda: book.go_on(step, elapsed), lambda: step, log)
    return {"step": step, "elapsed_min": round(elapsed / 60, 1), "val": metrics, "best_psnr_y": best}


def export(run_dir: str | Path, name: str = "mapping-v1", vae1_name: str = "vae1-v1", vae2_name: str = "vae2-v1",
           weights: Path | None = None, checkpoint: str = "best") -> Path:
    """Publish the mapping of run_dir as weights/<name>.pt, together with the exact VAEs it was trained with
    (as vae1_name / vae2_name, arch "vae"); safe while training. Returns the mapping's file. `name` may also
    name all three, "MAPPING,VAE1,VAE2" (the CLI's `--as mapping-v9,vae1-v9,vae2-v9`).

    checkpoint "best": best.pt (best validation PSNR so far); "last": the latest ckpt.pt, with the metrics of the
    validation logged at its step (the run's last validation when it ended normally).

    Nothing is written when an entry would replace other weights (e.g. the VAEs of a shipped mapping under the
    default names): SettingsError naming it. The mapping's meta records both VAEs' sha256, which
    Restorer.from_registry checks. A previous evaluation in the meta is kept only when the weights did not change.
    """
    name, vae1_name, vae2_name = _export_names(name, vae1_name, vae2_name)
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, "mapping", needs=("vae1", "vae2", "blocks_pre"))
    cfg = info["config"]
    best = _load_checkpoint(run_dir, checkpoint)
    hint = ": give all three, e.g. --as mapping-v9,vae1-v9,vae2-v9"
    data = {entry: check_publishable(entry, state, weights, hint)  # each serialised once, checked and written
            for entry, state in ((vae1_name, best["vae1"]), (vae2_name, best["vae2"]), (name, best["state_dict"]))}
    vae_paths = {}
    for key, vname in (("vae1", vae1_name), ("vae2", vae2_name)):
        vinfo = best[f"{key}_info"]
        vmeta = {"role": "VAE1 (E_RX, G_RX): degraded/old photos" if key == "vae1" else "VAE2 (E_Y, G_Y): clean photos",
                 "published_with": name, "source": vinfo["source"]}
        src_run = Path(vinfo["source"].get("run", ""))
        if vinfo["source"].get("run") and (src_run / "config.json").is_file():
            vcfg = json.loads((src_run / "config.json").read_text())
            vmeta.update({"command": vcfg["command"], "config": vcfg["config"], "data": data_recipe(vcfg["config"]),
                          "seed": vcfg["config"]["seed"], "steps": vinfo["source"]["step"],
                          "validation": vinfo["source"]["metrics"]})
            vmeta["cli_equivalent"] = cli_equivalent(key, vcfg["config"], _vae_defaults())
        elif vinfo["source"].get("registry"):
            old = registry.get(vinfo["source"]["registry"]).meta
            vmeta = {**old, **vmeta}
        vae_paths[key] = export_weights(best[key], vname, "vae", vinfo["arch_kwargs"], vmeta, weights,
                                        data=data[vname])
    folder = Path(weights) if weights is not None else registry.weights_dir()
    previous = _manifest_entry(folder, name)
    meta = {
        "role": "mapping T: VAE1 latent + defect mask -> VAE2 latent",
        "command": info["command"], "cli_equivalent": cli_equivalent("mapping", cfg, _defaults()), "config": cfg,
        "data": data_recipe(cfg), "seed": cfg["seed"], "steps": int(best["step"]),
        "wall_minutes": round(best["elapsed"] / 60, 1),
        "vae1": {"name": vae1_name, "sha256": registry.sha256_file(vae_paths["vae1"])},
        "vae2": {"name": vae2_name, "sha256": registry.sha256_file(vae_paths["vae2"])},
        "loss": "lambda_latent*L1(T(z_x),z_y) + w_image*L1(G_Y(T(z_x)),y) + w_gan*LSGAN + lambda_fm*FM (latent D)",
        "checkpoint": checkpoint,
        "training_masks": (json.loads((run_dir / "detector.json").read_text()) if (run_dir / "detector.json").is_file()
                           else "ground truth only"),
        "validation": {"pairs": cfg["val_n"], "size": cfg["val_size"], "seed": cfg["val_seed"],
                       "mask": "ground truth", **best["metrics"]},
    }
    if cfg.get("detector") and cfg.get("detector_threshold"):  # trained on these masks: restore with them too
        meta["mask_threshold"] = float(cfg["detector_threshold"])
    arch_kwargs = {"latent": best["vae1_info"]["arch_kwargs"]["latent"], "width": cfg["width"],
                   "blocks_pre": cfg["blocks_pre"], "blocks_post": cfg["blocks_post"],
                   "context": cfg.get("context", False)}
    path = export_weights(best["state_dict"], name, "mapping", arch_kwargs, meta, weights, data=data[name])
    digest = registry.sha256_file(path)
    if previous and previous.get("sha256") == digest and "evaluation" in previous.get("meta", {}):
        update_meta(name, "evaluation", previous["meta"]["evaluation"], weights)
    return path


def _export_names(name: str, vae1_name: str, vae2_name: str) -> tuple[str, str, str]:
    """(mapping, VAE1, VAE2) entry names from `name` ("MAPPING" or "MAPPING,VAE1,VAE2") and the defaults."""
    parts = registry.split_names(name, EXPORT_NAME_COUNTS["mapping"], "names must be MAPPING or MAPPING,VAE1,VAE2")
    if len(parts) == 1:
        parts = [parts[0], vae1_name, vae2_name]
    if len(set(parts)) != 3:  # the default VAE names may be the one given
        raise SettingsError(f"the mapping and its two VAEs need three distinct names, got {', '.join(parts)}")
    return parts[0], parts[1], parts[2]


def _load_checkpoint(run_dir: Path, which: str) -> dict:
    """best.pt as it is, or ckpt.pt reshaped like it (state_dict, step, elapsed, metrics, VAE copies)."""
    if which == "best":
        return torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    if which != "last":
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    ck = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=True)
    logged = [r["val"] for r in JsonlLog(run_dir / "log.jsonl").read() if "val" in r and r["step"] == ck["step"]]
    return {"state_dict": ck["mapping"], "step": ck["step"], "elapsed": ck["elapsed"],
            "metrics": logged[-1] if logged else {}, **{k: ck[k] for k in ("vae1", "vae2", "vae1_info", "vae2_info")}}


def _defaults() -> dict:
    return {f.name: f.default for f in fields(Config)}


def _vae_defaults() -> dict:
    return {f.name: f.default for f in fields(VAEConfig)}


def _manifest_entry(folder: Path, name: str) -> dict | None:
    path = folder / "MANIFEST.json"
    return json.loads(path.read_text()).get("models", {}).get(name) if path.is_file() else None
