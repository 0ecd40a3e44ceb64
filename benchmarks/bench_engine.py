"""Engine benchmark: peak memory and throughput per stage on big 16-bit RGB TIFF scans.

Each case runs in its own Python process (so its peak memory is its own): the parent writes a synthetic
photo-like 16-bit RGB TIFF of the requested size (uncompressed, written band by band), starts a child that
loads the models, records its memory after loading them, runs pipeline.process_file once, and reports
per-stage seconds, megapixels per second, VmHWM (peak resident set, file-backed pages of memory-mapped
buffers included) and the peak of RssAnon sampled every 20 ms (anonymous memory: what really needs RAM).

Mode "engine" swaps the networks for an identity restorer and the classical top-hat detector, to measure
the engine's own memory and speed at full scale (network activations do not grow with the image).
Other modes: models come from weights/ when the registry has them; otherwise the registered architecture is built
with its default arguments and random weights (reported as "random init": speed does not depend on the
weight values, but a random detector's mask density does, which the restorer's cost may depend on).

    nice -n 10 python benchmarks/bench_engine.py --sizes 1 25 --json benchmarks/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MODES = ("restore", "mask", "upscale2", "colorize", "engine")


# ------------------------------------------------------------------------------------------ input


def make_scan(path: Path, megapixels: float, gray: bool = False, seed: int = 0) -> tuple[int, int]:
    """Write a 4:3 16-bit TIFF of about `megapixels` with smooth content, grain and a few bright scratches."""
    import tifffile

    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    shape = (height, width) if gray else (height, width, 3)
    arr = tifffile.memmap(path, shape=shape, dtype=np.uint16, photometric="minisblack" if gray else "rgb")
    rng = np.random.default_rng(seed)
    xs = np.linspace(0, 6 * np.pi, width, dtype=np.float32)
    scratch_cols = rng.integers(0, width, size=max(1, width // 700))
    rows = max(1, (8 << 20) // (width * 6))
    for a in range(0, height, rows):
        b = min(height, a + rows)
        yy = np.linspace(a / height, b / height, b - a, endpoint=False, dtype=np.float32)[:, None]
        base = 0.45 + 0.25 * np.sin(xs[None, :] + 4 * yy) * np.cos(3 * yy)
        band = base[..., None] * np.array([1.0, 0.93, 0.8], dtype=np.float32)
        band = band + rng.normal(0, 0.02, size=band.shape).astype(np.float32)
        band[:, scratch_cols] = 0.97  # vertical scratches, as on old prints
        if gray:
            band = band.mean(axis=2)
        arr[a:b] = np.rint(np.clip(band, 0, 1) * 65535).astype(np.uint16)
    arr.flush()
    del arr
    return height, width


# ------------------------------------------------------------------------------------------ child


def _status() -> dict[str, int]:
    """Memory fields of /proc/self/status in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


class _AnonPeak(threading.Thread):
    def __init__(self, every: float = 0.02):
        super().__init__(daemon=True)
        self.every, self.peak, self._halt = every, 0, threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, _status()["RssAnon"])
            time.sleep(self.every)

    def finish(self) -> int:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, _status()["RssAnon"])
        return self.peak


def _entry_or_none(name: str):
    from oldphoto import registry
    from oldphoto.errors import WeightsError

    try:
        entry = registry.get(name)
    except WeightsError:
        return None
    return entry if entry.path.is_file() else None


class _TimedRandomDetector:
    """An untrained detector marks about half of all pixels, which would make the restorer's cost unlike a real
    run's: run the random network (so its time counts) but hand on a mask of the synthetic scan's scratches
    (pixels brighter than 0.95; a per-pixel rule that costs next to nothing)."""

    def __init__(self, network_stage):
        self.network_stage, self.threshold = network_stage, 0.5

    def __call__(self, tiles):
        self.network_stage(tiles)
        return (tiles.amin(dim=1, keepdim=True) > 0.95).float()


class _ClassicalDetector:
    threshold = 0.5

    def __call__(self, tiles):
        from oldphoto.ops.masks import classical_detect

        return classical_detect(tiles)


def _identity_restorer(tiles, mask):
    return tiles


def build_models(mode: str, device, scales: int = 1):
    """Stages for `mode` from the registry, or random-init architectures; returns (Models, {stage: label}).
    scales: the detector's (RestoreConfig.scales; 2 wraps it in stages.detect.TwoScaleDetector)."""
    import torch

    from oldphoto import pipeline, registry
    from oldphoto.archs import build
    from oldphoto.stages.colorize import Colorizer
    from oldphoto.stages.detect import Detector, TwoScaleDetector
    from oldphoto.stages.blend import ScanBlend, fitted_chain
    from oldphoto.stages.restore import Restorer
    from oldphoto.stages.upscale import Upscaler

    names = pipeline.WEIGHT_NAMES
    labels = {}
    torch.manual_seed(0)
    if mode == "engine":
        # The engine alone at full scale: a cheap real detector (classical top-hat) and an identity restorer,
        # so reading, tiling, merging, mask streaming and writing are measured without network cost.
        labels.update(detector="classical top-hat", restorer="identity")
        return pipeline.Models(detector=_ClassicalDetector(), restorer=_identity_restorer), labels

    def load(key: str, arch: str):
        entry = _entry_or_none(names[key])
        if entry is not None:
            labels[key] = f"{entry.name} ({entry.sha256[:12]})"
            return registry.load_entry(entry, device), entry
        labels[key] = f"{arch} random init"
        return build(arch).to(device).eval(), None

    det, det_entry = load("detector", "unet_detector")
    if det_entry is not None:
        detector = Detector(det, float(det_entry.meta.get("threshold", 0.5)), det_entry)
    else:
        detector = _TimedRandomDetector(Detector(det, 0.5))
        labels["detector"] += " (timed; the mask used marks the synthetic scratches)"
    if scales == 2:
        detector = TwoScaleDetector(detector)
        labels["detector"] += ", two scales"
    models = pipeline.Models(detector=detector)
    if mode == "mask":
        return models, labels
    vae1, e1 = load("vae1", "vae")
    mapping, em = load("mapping", "mapping")
    vae2, e2 = load("vae2", "vae")
    refiner, er = load("refiner", "refiner")
    # the restorer's own mask threshold, as Restorer.from_registry sets it (the detector's when untrained)
    models.restorer = Restorer(vae1.encoder, mapping, vae2.decoder, tuple(e for e in (e1, em, e2, er) if e),
                               mask_threshold=em.meta.get("mask_threshold") if em else None, refiner=refiner)
    blend_entry = _entry_or_none(names["blend"])
    if mode == "restore" and blend_entry is not None and None not in (det_entry, e1, em, e2, er):
        models.blend = ScanBlend.from_registry(blend_entry.name, fitted_chain(models.restorer, detector))
        labels["blend"] = f"{blend_entry.name} ({blend_entry.sha256[:12]})"
    if mode == "upscale2":
        up, up_entry = load("upscaler", "upscaler")
        models.upscaler = Upscaler(up, 2, up_entry)
    if mode == "colorize":
        col, col_entry = load("colorizer", "colorizer_unet")
        work = int(col_entry.meta.get("work_size", 512)) if col_entry else 512
        models.colorizer = Colorizer(col, work, col_entry)
    return models, labels


def _modules(stage, depth: int = 2):
    """The nn.Modules a stage object holds (also inside a wrapped stage)."""
    import torch

    for value in vars(stage).values():
        if isinstance(value, torch.nn.Module):
            yield value
        elif depth > 1 and hasattr(value, "__dict__") and not isinstance(value, type):
            yield from _modules(value, depth - 1)


def child(args) -> None:
    import torch

    from oldphoto import pipeline
    from oldphoto.config import RestoreConfig, TileConfig
    from oldphoto.stages.base import configure_cpu_threads

    threads = configure_cpu_threads()
    device = pipeline.resolve_device(args.device)
    mem_import = _status()
    cfg = RestoreConfig(device=args.device, tile=TileConfig(size=args.tile, overlap=args.overlap,
                                                            batch_size=args.batch),
                        only_mask=args.mode == "mask", upscale=2 if args.mode == "upscale2" else 1,
                        colorize=args.mode == "colorize", format="tiff", detect_scales=args.detect_scales)
    models, labels = build_models(args.mode, device, cfg.scales)
    params = sum(p.numel() * p.element_size() for stage in vars(models).values() if stage is not None
                 for m in _modules(stage) for p in m.parameters())
    mem_models = _status()
    sampler = _AnonPeak()
    sampler.start()
    t0 = time.perf_counter()
    outcome = pipeline.process_file(Path(args.input), Path(args.out_base), cfg, models)
    wall = time.perf_counter() - t0
    anon_peak = sampler.finish()
    end = _status()
    if device.type == "cuda":
        gpu_peak = torch.cuda.max_memory_allocated(device)
    else:
        gpu_peak = None
    mp = outcome.megapixels
    result = {
        "mode": args.mode, "megapixels": round(mp, 3), "width": outcome.width, "height": outcome.height,
        "device": str(device), "threads": threads, "tile": args.tile, "overlap": args.overlap, "batch": args.batch,
        "models": labels, "model_param_bytes": params,
        "wall_s": round(wall, 2), "mp_per_s": round(mp / wall, 4),
        "seconds": {k: round(v, 2) for k, v in outcome.seconds.items()},
        "stage_mp_per_s": {k: round(mp / v, 3) for k, v in outcome.seconds.items() if v > 0},
        "rss_after_import": mem_import["VmRSS"], "rss_after_models": mem_models["VmRSS"],
        "anon_after_models": mem_models["RssAnon"], "anon_peak": anon_peak,
        "anon_beyond_models": anon_peak - mem_models["RssAnon"], "vm_hwm": end["VmHWM"],
        "gpu_peak_bytes": gpu_peak, "mask_coverage": outcome.mask_coverage, "scan_blend": outcome.scan_blend,
        "notes": outcome.notes,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    for p in outcome.outputs:
        result.setdefault("output_bytes", 0)
        result["output_bytes"] += p.stat().st_size
        p.unlink()
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------ parent


def _fmt_mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def table(results: list[dict]) -> str:
    keys = ("read", "detect", "restore", "upscale", "colorize", "write", "tiling")
    head = ("| mode | MP | wall s | MP/s | " + " | ".join(f"{k} s (MP/s)" for k in keys)
            + " | anon peak MiB | beyond models MiB | VmHWM MiB | load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        cells = []
        for k in keys:
            s = r["seconds"].get(k, 0.0)
            cells.append(f"{s:.1f} ({r['stage_mp_per_s'][k]:.2f})" if s > 0.05 else "-")
        lines.append(f"| {r['mode']} | {r['megapixels']:.1f} | {r['wall_s']:.1f} | {r['mp_per_s']:.3f} | "
                     + " | ".join(cells)
                     + f" | {_fmt_mb(r['anon_peak'])} | {_fmt_mb(r['anon_beyond_models'])} | {_fmt_mb(r['vm_hwm'])}"
                     + f" | {r['loadavg_1m']} |")
    return "\n".join(lines)


def parent(args) -> None:
    results = []
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="oldphoto-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cases = [(mp, mode) for mp in args.sizes for mode in args.modes]
    for mp, mode in cases:
        gray = mode == "colorize"
        src = workdir / f"scan_{mp:g}mp{'_gray' if gray else ''}.tif"
        if not src.exists():
            t0 = time.perf_counter()
            make_scan(src, mp, gray=gray)
            print(f"made {src} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--child", "--input", str(src),
               "--out-base", str(workdir / f"out_{mp:g}_{mode}"), "--mode", mode, "--device", args.device,
               "--tile", str(args.tile), "--overlap", str(args.overlap), "--batch", str(args.batch)]
        if args.detect_scales is not None:
            cmd += ["--detect-scales", str(args.detect_scales)]
        print("running " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"case {mp} MP {mode} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
        r = json.loads(line[len("RESULT "):])
        results.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    if not args.keep_inputs:
        for f in workdir.glob("scan_*.tif"):
            f.unlink()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 25], help="megapixels per case")
    p.add_argument("--modes", nargs="+", choices=MODES, default=["restore"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--detect-scales", type=int, choices=(1, 2), default=None,
                   help="the detector's scales (default: the pipeline's for the mode, 2 when restoring)")
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--workdir", help="where inputs and outputs go (default: a new temp folder)")
    p.add_argument("--keep-inputs", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--out-base", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    child(args) if args.child else parent(args)


if __name__ == "__main__":
    main()
