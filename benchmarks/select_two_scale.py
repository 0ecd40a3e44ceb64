"""Choose the half-size pass's weight and threshold of `--detect-scales 2` (stages.detect.TwoScaleDetector).

    python benchmarks/select_two_scale.py                       # detector-v10, seed 777: the shipped choice
    python benchmarks/select_two_scale.py --weights 0.6 0.75 1 --thresholds 0.6 0.65 0.7

Both passes run once per crop on three sets of selection crops (never the held-out seed 1234): the recipe's as
they are, the same enlarged twice (a scan at twice the dpi, probabilities area-averaged back) and the second
generator's. Each (w, t) combines them as 1 - (1 - p_full)(1 - w p_half) and scores F1 with the 1 px tolerance
at t; one JSON line each. Rule used for the shipped pair (weights/README.md, twenty-seventh session): among the
pairs whose F1 as scanned is at least one pass's at its own F1-best threshold, the best mean of the enlarged and
second-generator F1.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch
import torch.nn.functional as F

from oldphoto import registry
from oldphoto.pipeline import WEIGHT_NAMES
from oldphoto.train.chunked import chunked
from oldphoto.train.detector import EvalConfig, load_validation, score_learned, scores_at, second_generator_set


def both_passes(model: torch.nn.Module, images: torch.Tensor, factor: int = 1) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1] -> (N, 2, S, S): the full-size and the half-size pass's probabilities, the crops
    first enlarged `factor` times (bicubic) and the probabilities area-averaged back."""

    def fn(t: torch.Tensor) -> torch.Tensor:
        if factor > 1:
            t = F.interpolate(t, scale_factor=factor, mode="bicubic", align_corners=False).clamp(0, 1)
        with torch.inference_mode():
            full = torch.sigmoid(model(t))
            half = F.interpolate(torch.sigmoid(model(F.avg_pool2d(t, 2))), size=t.shape[-2:], mode="bilinear",
                                 align_corners=False)
        both = torch.cat([full, half], 1)
        return F.avg_pool2d(both, factor) if factor > 1 else both

    return chunked(fn, 8, images, model=model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=WEIGHT_NAMES["detector"])
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0])
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.55, 0.6, 0.625, 0.65, 0.675, 0.7, 0.75])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.seed == EvalConfig().seed:
        ap.error(f"seed {args.seed} is the held-out evaluation set: select on another seed")
    torch.set_num_threads(args.threads)
    model = registry.load(args.detector).eval()
    cfg = replace(EvalConfig(), seed=args.seed)
    images, masks = load_validation(cfg.corpus, cfg.split_seed, cfg.count, cfg.size, cfg.seed)
    second = second_generator_set(cfg)
    probs = {"as_scanned": (both_passes(model, images), masks), "enlarged": (both_passes(model, images, 2), masks),
             "second_generator": (both_passes(model, second[0]), second[1])}
    one_pass = score_learned(probs["as_scanned"][0][:, :1], masks)["f1_tol"]  # at its own F1-best threshold
    rows = []
    for w in args.weights:
        for t in args.thresholds:
            row = {"weight": w, "threshold": t}
            for name, (p, m) in probs.items():
                row[name] = round(scores_at(1 - (1 - p[:, :1]) * (1 - w * p[:, 1:]), m, t)["f1_tol"], 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    allowed = [r for r in rows if r["as_scanned"] >= round(one_pass, 4)]
    chosen = max(allowed, key=lambda r: r["enlarged"] + r["second_generator"], default=None)
    print(json.dumps({"detector": args.detector, "seed": args.seed, "one_pass_f1": round(one_pass, 4),
                      "chosen": chosen}))


if __name__ == "__main__":
    main()
