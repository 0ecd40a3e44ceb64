"""Defect detector cost on the CPU: parameters, weights size, GMAC per megapixel, megapixels per second.

    python benchmarks/detector_speed.py                       # the registered detector-v6 (or the default arch)
    python benchmarks/detector_speed.py --channels 12,24,48,96,128 --blocks 2

Throughput follows the project's rule: a batch of 8 tiles of 256 px, torch.set_num_threads(2), no grad,
median of several passes after a warm-up. Other jobs on the machine slow it down: report the load with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn as nn

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.errors import WeightsError
from oldphoto.pipeline import WEIGHT_NAMES
from oldphoto.stages.detect import Detector


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d / Linear in one forward pass of `x`, counted with forward hooks."""
    total = 0

    def hook(m: nn.Module, inputs, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def throughput(stage, tile: int = 256, batch: int = 8, repeats: int = 7) -> tuple[float, float]:
    """(median, best) megapixels per second of `stage` (tiles -> probabilities) on `batch` RGB tiles of `tile` px."""
    x = torch.rand(batch, 3, tile, tile)
    times = []
    stage(x)  # warm-up: allocator, oneDNN kernel choice
    for _ in range(repeats):
        t = time.perf_counter()
        stage(x)
        times.append(time.perf_counter() - t)
    mp = batch * tile * tile / 1e6
    return mp / statistics.median(times), mp / min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=WEIGHT_NAMES["detector"], help="registered weights to measure")
    ap.add_argument("--channels", default="", help="measure an untrained arch with these widths instead")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.channels:
        model, size_mb, what = build("unet_detector", channels=[int(c) for c in args.channels.split(",")],
                                     blocks=args.blocks).eval(), None, f"unet_detector {args.channels}"
    else:
        try:
            entry = registry.get(args.weights)
        except WeightsError:
            entry = None
        if entry is None:
            model, size_mb, what = build("unet_detector").eval(), None, "unet_detector (defaults, untrained)"
        else:
            model, size_mb, what = registry.load_entry(entry), entry.path.stat().st_size / 1e6, args.weights
    params = sum(p.numel() for p in model.parameters())
    gmac = count_macs(model, torch.rand(1, 3, 256, 256)) / (256 * 256) * 1e6 / 1e9
    med, best = throughput(Detector(model))  # the stage the pipeline runs (no grad, NHWC)
    print(f"{what}: {params / 1e6:.3f} M parameters ({params * 4 / 1e6:.2f} MB float32"
          + (f", file {size_mb:.2f} MB" if size_mb else "") + f"), {gmac:.2f} GMAC/MP")
    print(f"threads {args.threads}: {med:.2f} MP/s median, {best:.2f} MP/s best "
          f"(8 x 256 px tiles, no grad; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
