"""Training of the two VAEs: VAE1 (E_RX, G_RX) on degraded photos X (and real old photos R when given),
VAE2 (E_Y, G_Y) on clean photos Y.

Loss per batch: w_l1 · L1(G(z), input) + beta_kl · KL(q(z|input) || N(0, I)) + w_gan · LSGAN(patch discriminator)
after gan_start steps; VAE1 with real old photos adds w_latent_adv · LSGAN of a latent discriminator that tells
Z_R from Z_X (the encoder learns to fool it, pulling the two domains together). Without `real_old` the latent
discriminator is not built at all and X is the only domain (synthetic, from degrade()).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..archs import build
from ..ops.color import luma
from .chunked import chunked
from .data import PhotoPool, corpus_dir, list_photos, split_corpus, to_gray, validation_set
from .degrade import DegradeConfig
from .loop import StepBook, read_run_info
from .losses import kl_normal, lsgan_d_loss, lsgan_g_loss
from .metrics import psnr, ssim
from .pairs import crop_batch, pair_batch, stack_triples, to_batch
from .run_files import (JsonlLog, atomic_torch_save, cli_equivalent, export_weights, rng_state, save_grid,
                        set_rng_state, start_run_dir)

WHICH = ("vae1", "vae2")


@dataclass(frozen=True)
class Config:
    which: str = "vae2"  # "vae1": degraded photos X (+ real old photos R); "vae2": clean photos Y
    out: str = ""  # run folder; "" -> runs/<which>
    corpus: str = ""  # folder of clean photos; "" -> data.corpus_dir()
    real_old: str = ""  # folder of real old photos for VAE1's latent discriminator; "" -> none (skipped)
    split_seed: int = 0  # data.split_corpus seed: validation photos are never trained on
    val_fraction: float = 0.15  # share of corpus photos held out for validation
    seed: int = 0  # crops, degradations and initialisation
    steps: int = 100_000  # upper bound on optimisation steps
    minutes: float = 35.0  # wall-clock budget over all resumes; the lr decays over it (0: steps only, constant lr)
    crop: int = 128  # training crop edge (multiple of 8)
    batch: int = 8  # crops per step
    gray_share: float = 0.45  # VAE2: share of gray crops (the degradation makes p_bw + p_toned = 0.45 gray)
    lr: float = 5e-4  # Adam learning rate at the start
    lr_final: float = 0.05  # lr at the end of the budget, as a fraction of lr (cosine decay)
    beta_kl: float = 1e-3  # KL weight; small so that reconstructions stay sharp
    w_l1: float = 10.0  # reconstruction L1 weight (α of the paper)
    w_gan: float = 0.05  # image LSGAN weight for the decoder
    gan_start: int = 800  # steps of pure reconstruction before the image GAN starts
    w_latent_adv: float = 0.1  # VAE1 + real_old only: latent domain-confusion weight
    latent: int = 64  # latent channels at 1/4 resolution
    width: int = 64  # channels at 1/4 resolution
    half_width: int = 32  # channels at 1/2 resolution
    blocks: int = 2  # residual blocks at 1/4 resolution in the encoder and in the decoder
    disc_width: int = 32  # patch discriminator base width
    val_n: int = 12  # validation crops (fixed; from validation photos)
    val_size: int = 256  # validation crop edge
    val_seed: int = 1234  # validation crop and degradation seed
    val_every: int = 200  # steps between validations
    log_every: int = 20  # steps between log.jsonl records
    ckpt_minutes: float = 3.0  # minutes between checkpoints
    threads: int = 1  # torch threads (the machine is shared)

    def __post_init__(self) -> None:
        if self.which not in WHICH:
            raise ValueError(f"which must be one of {WHICH}, got {self.which!r}")
        if self.crop % 8 or self.val_size % 8:
            raise ValueError(f"crop and val_size must be multiples of 8, got {self.crop} and {self.val_size}")
        if self.batch < 1 or self.steps < 0 or self.minutes < 0:
            raise ValueError(f"batch >= 1, steps >= 0, minutes >= 0 required, "
                             f"got {self.batch}, {self.steps}, {self.minutes}")

    @property
    def arch_kwargs(self) -> dict:
        return {"latent": self.latent, "width": self.width, "half_width": self.half_width, "blocks": self.blocks}

    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.which}")


def _images_for(cfg: Config, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x if cfg.which == "vae1" else y


@torch.no_grad()
def validate(model: torch.nn.Module, images: torch.Tensor, chunk: int = 4) -> tuple[dict, torch.Tensor]:
    """Reconstruction quality on (N, 3, H, W) [0, 1] images: PSNR (RGB and luma) and SSIM (luma), means."""
    recon = chunked(lambda t: model(t)[0], chunk, images, model=model)
    ly, lr_ = luma(images), luma(recon)
    metrics = {"psnr_rgb": float(psnr(recon, images).mean()), "psnr_y": float(psnr(lr_, ly).mean()),
               "ssim_y": float(ssim(lr_, ly).mean())}
    return metrics, recon


def train_step(cfg: Config, model, disc, ldisc, opt_g, opt_d, images: torch.Tensor, real: torch.Tensor | None,
               use_gan: bool) -> dict[str, float]:
    """One optimisation step on images (B, 3, S, S) [0, 1] (real old photos, if any, appended at the end and also
    given as `real`); updates the VAE, then the discriminators. Returns each loss term as a float."""
    recon, mu, logvar = model(images)
    parts = {"l1": F.l1_loss(recon, images), "kl": kl_normal(mu, logvar)}
    loss = cfg.w_l1 * parts["l1"] + cfg.beta_kl * parts["kl"]
    if use_gan:
        parts["g_gan"] = lsgan_g_loss(disc(recon))
        loss = loss + cfg.w_gan * parts["g_gan"]
    if ldisc is not None and real is not None:
        n_x = len(images) - len(real)
        z_x, z_r = mu[:n_x], mu[n_x:]
        # the encoder is rewarded for swapping the discriminator's labels: Z_X and Z_R become indistinguishable
        parts["g_latent"] = 0.5 * (lsgan_g_loss(ldisc(z_x)) + ldisc(z_r).pow(2).mean())
        loss = loss + cfg.w_latent_adv * parts["g_latent"]
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    if use_gan or (ldisc is not None and real is not None):
        d_loss = torch.zeros(())
        if use_gan:
            parts["d_gan"] = lsgan_d_loss(disc(images), disc(recon.detach()))
            d_loss = d_loss + parts["d_gan"]
        if ldisc is not None and real is not None:
            parts["d_latent"] = lsgan_d_loss(ldisc(z_r.detach()), ldisc(z_x.detach()))
            d_loss = d_loss + parts["d_latent"]
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
    return {k: float(v.detach()) for k, v in parts.items()}


def run(cfg: Config, log: Callable[[str], None]) -> dict:
    """Train (or resume) the VAE in cfg.run_dir(); returns the last validation metrics and counters."""
    torch.set_num_threads(cfg.threads)
    out = cfg.run_dir()
    start_run_dir(out, asdict(cfg), ("which", "latent", "width", "half_width", "blocks", "disc_width"))
    corpus = Path(cfg.corpus).expanduser() if cfg.corpus else corpus_dir()
    train_paths, val_paths = split_corpus(corpus, cfg.val_fraction, cfg.split_seed)
    pool = PhotoPool(train_paths)
    real_pool = None
    if cfg.which == "vae1" and cfg.real_old:
        real_pool = PhotoPool(list_photos(Path(cfg.real_old).expanduser()))
    if cfg.real_old and cfg.which != "vae1":
        log(f"real_old={cfg.real_old} ignored: only VAE1 sees real old photos")
    x_val, y_val, _ = stack_triples(validation_set(val_paths, cfg.val_n, cfg.val_size, cfg.val_seed))
    val_images = _images_for(cfg, x_val, y_val)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build("vae", **cfg.arch_kwargs)
    disc = build("patch_discriminator", width=cfg.disc_width)
    ldisc = build("latent_discriminator", latent=cfg.latent) if real_pool is not None else None
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    d_params = list(disc.parameters()) + (list(ldisc.parameters()) if ldisc is not None else [])
    opt_d = torch.optim.Adam(d_params, lr=cfg.lr, betas=(0.5, 0.999))
    step, elapsed, best = 0, 0.0, -math.inf
    ckpt_path = out / "ckpt.pt"
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.is_file() else None
    if ck is not None:
        model.load_state_dict(ck["model"])
        disc.load_state_dict(ck["disc"])
        if ldisc is not None and ck.get("ldisc") is not None:
            ldisc.load_state_dict(ck["ldisc"])
        opt_g.load_state_dict(ck["opt_g"])
        if len(ck["opt_d"]["param_groups"][0]["params"]) == len(d_params):
            opt_d.load_state_dict(ck["opt_d"])
        else:  # real_old was switched on or off: the latent discriminator joins or leaves, its optimiser restarts
            log("discriminator set changed since the checkpoint: discriminator optimiser state restarted")
        set_rng_state(rng, ck["rng"])
        step, elapsed, best = ck["step"], ck["elapsed"], ck["best"]
        log(f"resumed {out} at step {step} ({elapsed / 60:.1f} min trained)")
    logf = JsonlLog(out / "log.jsonl")

    def checkpoint() -> None:
        atomic_torch_save({"model": model.state_dict(), "disc": disc.state_dict(),
                           "ldisc": ldisc.state_dict() if ldisc is not None else None,
                           "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": rng_state(rng),
                           "step": step, "elapsed": elapsed, "best": best, "book": book.state()}, ckpt_path)

    def validation() -> dict:
        nonlocal best
        metrics, recon = validate(model, val_images)
        save_grid(out / "samples" / f"step{step:06d}.png", [val_images[:4], recon[:4]])
        if metrics["psnr_rgb"] > best:
            best = metrics["psnr_rgb"]
            atomic_torch_save({"state_dict": model.state_dict(), "step": step, "elapsed": elapsed,
                               "metrics": metrics}, out / "best.pt")
        logf.write({"step": step, "val": metrics})
        log(f"{cfg.which} step {step}: val PSNR {metrics['psnr_rgb']:.2f} dB (luma {metrics['psnr_y']:.2f}, "
            f"SSIM {metrics['ssim_y']:.3f})")
        return metrics

    model.train()
    book = StepBook(out, cfg, logf, validation, checkpoint)
    if ck is not None:
        book.resume(step, ck.get("book"))

    def one_step() -> None:
        nonlocal step, elapsed
        t0 = time.monotonic()
        lr = book.set_lr(elapsed, opt_g, opt_d)
        if cfg.which == "vae1":
            images = pair_batch(pool, rng, cfg.batch, cfg.crop)[0]
        else:
            crops = [pool.random_crop(rng, cfg.crop) for _ in range(cfg.batch)]
            crops = [to_gray(c) if rng.random() < cfg.gray_share else c for c in crops]
            images = to_batch(crops)
        real = crop_batch(real_pool, rng, max(cfg.batch // 2, 1), cfg.crop) if real_pool is not None else None
        if real is not None:
            images = torch.cat([images, real])
        use_gan = cfg.w_gan > 0 and step >= cfg.gan_start
        values = train_step(cfg, model, disc, ldisc, opt_g, opt_d, images, real, use_gan)
        StepBook.check(out, step, values)
        step += 1
        elapsed += time.monotonic() - t0
        book.after(step, elapsed, lr, values)

    metrics = book.drive(one_step, lambda: book.go_on(step, elapsed), lambda: step, log)
    return {"step": step, "elapsed_min": round(elapsed / 60, 1), "val": metrics, "best_psnr_rgb": best}


def data_recipe(cfg_dict: dict) -> dict:
    """The data description stored with exported weights (corpus, split, degradation, real photos)."""
    corpus = Path(cfg_dict["corpus"]).expanduser() if cfg_dict.get("corpus") else corpus_dir()
    train, val = split_corpus(corpus, cfg_dict["val_fraction"], cfg_dict["split_seed"])
    return {
        "corpus": str(corpus), "train_photos": len(train), "validation_photos": sorted(p.name for p in val),
        "split_seed": cfg_dict["split_seed"], "val_fraction": cfg_dict["val_fraction"],
        "degradation": "oldphoto.train.degrade.degrade with DegradeConfig() defaults",
        "degrade_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(DegradeConfig()).items()},
        "real_old": cfg_dict.get("real_old") or "none: no real old photos were available; X is synthetic from "
                                                "degrade() only and the latent discriminator was not used",
    }


def export(run_dir: str | Path, name: str, weights: Path | None = None) -> Path:
    """Publish the best validated VAE of run_dir as weights/<name>.pt (+ MANIFEST.json entry); safe while training.

    Arch "vae" (encoder + decoder; discriminators are not exported). Meta: command, config, data recipe, seed,
    steps, wall time, validation metrics on the fixed held-out crops.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, "vae", needs=("which", "latent", "half_width"))
    cfg = info["config"]
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    ckpt_log = JsonlLog(run_dir / "log.jsonl").read()
    total_steps = max((r["step"] for r in ckpt_log), default=best["step"])
    meta = {
        "role": "VAE1 (E_RX, G_RX): degraded/old photos" if cfg["which"] == "vae1" else "VAE2 (E_Y, G_Y): clean photos",
        "command": info["command"], "cli_equivalent": cli_equivalent(cfg["which"], cfg, _defaults()), "config": cfg,
        "data": data_recipe(cfg), "seed": cfg["seed"],
        "steps": int(best["step"]), "steps_run_total": int(total_steps), "wall_minutes": round(best["elapsed"] / 60, 1),
        "validation": {"crops": cfg["val_n"], "size": cfg["val_size"], "seed": cfg["val_seed"],
                       "images": "degraded x" if cfg["which"] == "vae1" else "clean y", **best["metrics"]},
    }
    arch_kwargs = {k: cfg[k] for k in ("latent", "width", "half_width", "blocks")}
    return export_weights(best["state_dict"], name, "vae", arch_kwargs, meta, weights)


def _defaults() -> dict:
    return {f.name: f.default for f in fields(Config)}
