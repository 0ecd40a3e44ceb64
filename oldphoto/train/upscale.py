"""Super-resolution training, evaluation and export (one `upscaler` model with x2 and x4 heads).

Training pairs: a clean crop of a corpus photo is the target; the input is that crop shrunk by the scale with
Pillow's bicubic filter (the "known kernel"), after a light scan-like degradation part of the time: optical blur
at the high resolution before shrinking, then sensor noise and JPEG on the small image, the way a scan or a
camera copy of a print is made. So the network learns to sharpen real scans, not only to undo clean bicubic.
run(cfg, log): resumable from `cfg.out/ckpt.pt`; the best validation state goes to `cfg.out/best.pt`.
evaluate(cfg, log): PSNR / SSIM on luma (Rec. 601 Y') of held-out photos against Pillow bicubic and Lanczos, for
clean and degraded small inputs at x2 and x4, plus the CPU throughput of the x2 model.
export(run_dir, name): best checkpoint -> weights/<name>.pt + MANIFEST.json entry.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import registry
from ..archs import build
from ..archs.upscaler import macs_per_input_pixel
from ..ops.color import luma
from ..stages.upscale import Upscaler
from . import data
from .chunked import chunked
from .degrade_unstructured import gaussian_blur, gaussian_noise, jpeg
from .metrics import psnr, ssim
from .loop import SupervisedRun, check_record, export_best, finish_evaluation, load_run_best
from .pairs import to_batch
from .run_files import save_grid, warmup_linear_lr

ARCH = "upscaler"


@dataclass(frozen=True)
class Degradation:
    """Light scan-like degradation of the small input (each step with its own probability)."""

    p_blur: float = 0.6  # Gaussian blur of the large image before shrinking (lens / scanner optics)
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # px at the large size
    p_noise: float = 0.5  # Gaussian noise on the small image (sensor / grain)
    noise_sigma: tuple[float, float] = (0.003, 0.03)  # std, log-uniform
    p_mono_noise: float = 0.5  # luminance-only noise rather than per-channel
    p_jpeg: float = 0.5  # JPEG round trip of the small image
    jpeg_quality: tuple[int, int] = (55, 95)  # Pillow quality, inclusive


@dataclass(frozen=True)
class Config:
    out: str = "runs/upscale"  # run folder: ckpt.pt, best.pt, log.jsonl, config.json, samples/
    corpus: str = "~/.cache/oldphoto/corpus"  # clean photos; split into train/validation by split_seed
    split_seed: int = 0  # photo-level split (evaluate must use the same)
    seed: int = 1  # training randomness (crops, degradations, init)
    channels: int = 32  # feature width (throughput target: >= 2 output MP/s at x2 on 2 CPU cores)
    layers: int = 4  # body 3x3 convs
    scales: tuple[int, ...] = (2, 4)  # one head per factor, trained together on the same crops
    pool_side: int = 1536  # photos held in memory with this long side (the "full resolution" of the targets)
    scale_min: float = 0.35  # crops come from the photo rescaled by [scale_min, 1]
    hr_crop: int = 128  # target crop edge (a multiple of every scale)
    batch: int = 16  # crops per step
    p_degrade: float = 0.6  # share of inputs that get the scan-like degradation (the rest: clean bicubic)
    lr: float = 1e-3  # Adam peak learning rate
    warmup: int = 100  # linear warm-up steps
    steps: int = 2000  # total steps; the last third decays linearly to lr/20
    val_every: int = 200  # steps between validations (and sample grids)
    val_count: int = 24  # fixed validation crops from held-out photos
    val_crop: int = 192  # their edge
    ckpt_minutes: float = 3.0  # wall minutes between checkpoints
    max_minutes: float = 0.0  # stop after this many wall minutes in this process (0: no limit)
    threads: int = 1  # torch CPU threads (other jobs share the machine)

    def arch_kwargs(self) -> dict:
        return {"channels": self.channels, "layers": self.layers, "scales": list(self.scales)}


@dataclass(frozen=True)
class EvalConfig:
    weights: str = "upscale-v1"  # registry name to evaluate (ignored when `run` is set)
    run: str = ""  # evaluate this run folder's best.pt instead of registered weights
    corpus: str = "~/.cache/oldphoto/corpus"  # clean photos; the same split as training (split_seed)
    split_seed: int = 0  # must match the training split, so the photos were never seen
    size: int = 1024  # held-out photos read with this long side, then centre-cropped to `crop`
    crop: int = 512  # target edge compared (a multiple of 4)
    seed: int = 1234  # fixes the degraded inputs
    speed_tile: int = 128  # throughput test: batch of 8 tiles of this edge at x2
    threads: int = 2  # torch CPU threads
    out: str = ""  # write the result as JSON here ("" : do not write)
    record: bool = False  # also store the result as meta["evaluation"] of the weights' MANIFEST.json entry

    def __post_init__(self) -> None:
        check_record(self)


# ------------------------------------------------------------------ degradation and pairs

def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def shrink(x: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> (H/s, W/s, 3) float32, Pillow bicubic (antialiased), quantised to 8 bits."""
    h, w = x.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"shrink: image {h}x{w} is not a multiple of the scale {scale}")
    small = Image.fromarray(_u8(x)).resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    return np.asarray(small, dtype=np.float32) / 255.0


def enlarge(x: np.ndarray, scale: int, method: str) -> np.ndarray:
    """Baseline upscaling with Pillow: method "bicubic" or "lanczos"; (h, w, 3) -> (s*h, s*w, 3) float32."""
    filt = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}[method]
    h, w = x.shape[:2]
    return np.asarray(Image.fromarray(_u8(x)).resize((w * scale, h * scale), filt), dtype=np.float32) / 255.0


def make_input(hr: np.ndarray, scale: int, rng: np.random.Generator, deg: Degradation | None) -> np.ndarray:
    """The small input for target `hr` (H, W, 3): shrunk by `scale`, degraded with `deg` unless it is None."""
    if deg is not None and rng.random() < deg.p_blur:
        hr = gaussian_blur(hr, float(rng.uniform(*deg.blur_sigma)))
    lr = shrink(hr, scale)
    if deg is None:
        return lr
    if rng.random() < deg.p_noise:
        sigma = float(np.exp(rng.uniform(np.log(deg.noise_sigma[0]), np.log(deg.noise_sigma[1]))))
        lr = gaussian_noise(lr, rng, sigma, mono=bool(rng.random() < deg.p_mono_noise))
    if rng.random() < deg.p_jpeg:
        lr = jpeg(lr, int(rng.integers(deg.jpeg_quality[0], deg.jpeg_quality[1] + 1)), int(rng.integers(3)))
    return lr.astype(np.float32)


def sample_batch(pool: data.PhotoPool, rng: np.random.Generator, cfg: Config
                 ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Targets (B, 3, S, S) in [0, 1] and, per scale s, inputs (B, 3, S/s, S/s) (a share of them degraded)."""
    hrs = [pool.random_crop(rng, cfg.hr_crop, scale_range=(cfg.scale_min, 1.0)) for _ in range(cfg.batch)]
    hrs = [_u8(h).astype(np.float32) / 255.0 for h in hrs]  # targets on the same 8-bit grid as the inputs
    deg = Degradation()
    inputs = {s: to_batch([make_input(h, s, rng, deg if rng.random() < cfg.p_degrade else None) for h in hrs])
              for s in cfg.scales}
    return to_batch(hrs), inputs


def validation_pairs(paths: list[Path], count: int, crop: int, scales: tuple[int, ...], seed: int) -> dict:
    """Fixed held-out set: {"hr": (N, 3, S, S), (variant, s): small inputs (N, 3, S/s, S/s)} for variant in
    ("clean", "degraded"). The same arguments always give the same tensors."""
    pool = data.PhotoPool(sorted(paths))
    rng = np.random.default_rng(seed)
    hrs = [_u8(pool.random_crop(rng, crop, scale_range=(0.35, 1.0), index=k % len(pool))).astype(np.float32) / 255.0
           for k in range(count)]
    out: dict = {"hr": to_batch(hrs)}
    for s in scales:
        out[("clean", s)] = to_batch([make_input(h, s, rng, None) for h in hrs])
        out[("degraded", s)] = to_batch([make_input(h, s, rng, Degradation(p_blur=1.0, p_noise=1.0, p_jpeg=1.0))
                                          for h in hrs])
    return out


# ------------------------------------------------------------------ metrics

def _shave(x: torch.Tensor, n: int) -> torch.Tensor:
    return x[..., n:x.shape[-2] - n, n:x.shape[-1] - n] if n else x


def luma_scores(pred: torch.Tensor, target: torch.Tensor, border: int) -> dict[str, float]:
    """PSNR (dB) and SSIM on Rec. 601 luma of (B, 3, H, W) [0, 1] images, `border` px shaved; batch means."""
    p, t = _shave(luma(pred.clamp(0, 1)), border), _shave(luma(target), border)
    return {"psnr": float(psnr(p, t).mean()), "ssim": float(ssim(p, t).mean())}


def baseline(small: torch.Tensor, scale: int, method: str) -> torch.Tensor:
    """Pillow upscaling of each (3, h, w) image of the batch: (B, 3, s*h, s*w)."""
    return to_batch([enlarge(x.permute(1, 2, 0).numpy(), scale, method) for x in small])


@torch.no_grad()
def upscale_batch(model: torch.nn.Module, small: torch.Tensor, scale: int, batch: int = 8) -> torch.Tensor:
    return chunked(lambda t: model(t, scale).clamp(0, 1), batch, small, model=model)


def validate(model: torch.nn.Module, val: dict, scales: tuple[int, ...]) -> dict:
    """PSNR/SSIM of the model and of Pillow bicubic for each (variant, scale); "gain" = mean PSNR gain in dB."""
    m: dict = {}
    gains = []
    for s in scales:
        for variant in ("clean", "degraded"):
            small = val[(variant, s)]
            ours = luma_scores(upscale_batch(model, small, s), val["hr"], s)
            bic = luma_scores(baseline(small, s, "bicubic"), val["hr"], s)
            key = f"x{s}_{variant}"
            m[key] = {"psnr": ours["psnr"], "ssim": ours["ssim"], "bicubic_psnr": bic["psnr"],
                      "bicubic_ssim": bic["ssim"], "gain_db": ours["psnr"] - bic["psnr"]}
            gains.append(ours["psnr"] - bic["psnr"])
    m["gain"] = float(np.mean(gains))
    return m


# ------------------------------------------------------------------ training

def _lr_at(step: int, cfg: Config) -> float:
    # linear decay to lr/20 over the last third
    return warmup_linear_lr(step, cfg.lr, cfg.warmup, cfg.steps, cfg.steps // 3, 1 / 20)


def run(cfg: Config, log: Callable[[str], None]) -> dict:
    """Train (or resume) the upscaler; returns {"step", "best": validation metrics, "out"}."""
    if cfg.hr_crop % max(cfg.scales) or cfg.val_crop % max(cfg.scales):
        raise ValueError(f"hr_crop {cfg.hr_crop} and val_crop {cfg.val_crop} must be multiples of {max(cfg.scales)}")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build(ARCH, **cfg.arch_kwargs())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    train_paths, val_paths = data.split_corpus(Path(cfg.corpus).expanduser(), seed=cfg.split_seed)
    pool = data.PhotoPool(train_paths, max_side=cfg.pool_side)
    val = validation_pairs(val_paths, cfg.val_count, cfg.val_crop, cfg.scales, seed=1234)

    trainer = SupervisedRun(out, model, opt, rng, cfg, cfg.arch_kwargs(), log)
    trainer.write_config(
        ARCH, data={"corpus": cfg.corpus, "split_seed": cfg.split_seed, "train_photos": len(train_paths),
                    "val_photos": len(val_paths), "pool_side": cfg.pool_side, "kernel": "Pillow bicubic",
                    "p_degrade": cfg.p_degrade, "degradation": asdict(Degradation())},
        loss="L1 in RGB, summed over the scales")

    def step_fn() -> tuple[dict, dict]:
        t0 = time.monotonic()
        hr, inputs = sample_batch(pool, rng, cfg)
        t_data = time.monotonic() - t0
        terms = {f"l1_x{s}": F.l1_loss(model(x, s), hr) for s, x in inputs.items()}
        terms["total"] = sum(terms.values())
        return terms, {"sec_data": round(t_data, 3)}

    def on_validation(step: int, terms: dict) -> dict:
        m = validate(model, val, cfg.scales)
        log(f"step {step} loss {float(terms['total'].detach()):.4f} val gain over bicubic {m['gain']:+.3f} dB ("
            + ", ".join(f"{k} {v['gain_db']:+.2f}" for k, v in m.items() if isinstance(v, dict)) + ")")
        s = max(cfg.scales)
        n = min(4, cfg.val_count)
        small = val[("degraded", s)][:n]
        save_grid(out / "samples" / f"step{step:06d}.png",
                  [baseline(small, s, "bicubic"), upscale_batch(model, small, s), val["hr"][:n]])
        return m

    return trainer.train(lambda step: _lr_at(step, cfg), step_fn, on_validation,
                         lambda m, best: best is None or m["gain"] > best["gain"])


# ------------------------------------------------------------------ evaluation

def throughput(model: torch.nn.Module, scale: int, tile: int = 128, batch: int = 8, repeats: int = 5,
               threads: int = 2) -> float:
    """Output megapixels per second of the Upscaler stage on CPU (no grad), best of `repeats` passes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        stage = Upscaler(model, scale)
        x = torch.rand(batch, 3, tile, tile, generator=torch.Generator().manual_seed(0))
        stage(x)  # warm-up: oneDNN picks its kernels on the first call
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            stage(x)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return batch * (tile * scale) ** 2 / min(times) / 1e6


def _load_model(cfg: EvalConfig) -> tuple[torch.nn.Module, dict]:
    if cfg.run:
        model, ck = load_run_best(cfg.run, ARCH)
        return model.eval(), {"run": str(cfg.run), "step": ck["step"]}
    entry = registry.get(cfg.weights)
    return registry.load_entry(entry), {"weights": cfg.weights, "sha256": entry.sha256}


def _centre(img: np.ndarray, crop: int) -> np.ndarray:
    h, w = img.shape[:2]
    c = min(crop, h - h % 4, w - w % 4)
    y, x = (h - c) // 2, (w - c) // 2
    return img[y:y + c, x:x + c]


def evaluate(cfg: EvalConfig, log: Callable[[str], None]) -> dict:
    """Held-out photos (long side cfg.size, centre crop cfg.crop): luma PSNR/SSIM of the model, Pillow bicubic and
    Pillow Lanczos, for clean and degraded inputs at every scale of the model; plus x2 CPU throughput."""
    torch.set_num_threads(cfg.threads)
    model, source = _load_model(cfg)
    _, val_paths = data.split_corpus(Path(cfg.corpus).expanduser(), seed=cfg.split_seed)
    rng = np.random.default_rng(cfg.seed)
    hrs = [_centre(data.load_photo(p, cfg.size).astype(np.float32) / 255.0, cfg.crop) for p in val_paths]
    table: dict = {}
    t0 = time.monotonic()
    for s in model.scales:
        for variant in ("clean", "degraded"):
            deg = Degradation(p_blur=1.0, p_noise=1.0, p_jpeg=1.0) if variant == "degraded" else None
            acc: dict[str, list[dict]] = {"model": [], "bicubic": [], "lanczos": []}
            for hr in hrs:
                hr = hr[: hr.shape[0] - hr.shape[0] % s, : hr.shape[1] - hr.shape[1] % s]
                target = to_batch([hr])
                small = to_batch([make_input(hr, s, rng, deg)])
                acc["model"].append(luma_scores(upscale_batch(model, small, s), target, s))
                for method in ("bicubic", "lanczos"):
                    acc[method].append(luma_scores(baseline(small, s, method), target, s))
            row = {k: {m: float(np.mean([r[m] for r in v])) for m in ("psnr", "ssim")} for k, v in acc.items()}
            row["gain_over_bicubic_db"] = row["model"]["psnr"] - row["bicubic"]["psnr"]
            row["gain_over_lanczos_db"] = row["model"]["psnr"] - row["lanczos"]["psnr"]
            table[f"x{s}_{variant}"] = row
            log(f"x{s} {variant}: model {row['model']['psnr']:.2f} dB / SSIM {row['model']['ssim']:.4f}; bicubic "
                f"{row['bicubic']['psnr']:.2f} / {row['bicubic']['ssim']:.4f}; lanczos {row['lanczos']['psnr']:.2f} / "
                f"{row['lanczos']['ssim']:.4f}")
    params = sum(p.numel() for p in model.parameters())
    speed = {f"x{s}_mp_per_s": round(throughput(model, s, cfg.speed_tile, threads=cfg.threads), 2)
             for s in model.scales}
    gmac = {f"x{s}_gmac_per_output_mp": round(macs_per_input_pixel(model, s) / s / s / 1e3, 2) for s in model.scales}
    result = {**source, "photos": len(val_paths), "size": cfg.size, "crop": cfg.crop, "scores": table,
              "params": params, "throughput": speed, "gmac": gmac,
              "seconds": round(time.monotonic() - t0, 1)}
    if 2 in model.scales:
        result["target_x2_gain>=0.8dB"] = table["x2_clean"]["gain_over_bicubic_db"] >= 0.8
        result["target_x2_speed>=2MP/s"] = speed["x2_mp_per_s"] >= 2.0
    if 4 in model.scales:
        result["target_x4_gain>=0.5dB"] = table["x4_clean"]["gain_over_bicubic_db"] >= 0.5
    log(f"throughput {speed} output MP/s, {params} parameters, {gmac}")
    return finish_evaluation(cfg, result)


# ------------------------------------------------------------------ export

def export(run_dir: str | Path, name: str = "upscale-v1", weights: Path | None = None) -> Path:
    """Publish the run's best checkpoint as weights/<name>.pt with its MANIFEST.json entry; returns the file."""
    return export_best(run_dir, name, ARCH, lambda best: {
        "scales": best["arch_kwargs"]["scales"],
        "input": "(B, 3, T, T) float in [0, 1] -> (B, 3, sT, sT); forward(x, scale)"}, weights)
