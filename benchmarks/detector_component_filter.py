"""Can a second look at each flagged component remove the detector's false alarms? An oracle bound and a fitted filter.

The detector's output at a threshold is split into 8-connected components (`train.components`). A component is
*true* when at least half its pixels lie within 1 px of a real defect. Two filters are scored by F1 (1 px
tolerance) on the validation crops of a selection seed:

- oracle: keep exactly the true components (what a perfect per-component judge could reach);
- fitted: a logistic regression (or, with --hidden N, a one-layer MLP) from the components' features (area,
  probabilities, shape, luma and colour contrast with their surroundings, how much of the crop is flagged) to
  each component's share of true pixels, weighted by area, fitted on crops of the *training* photos only (their
  own seeds), cut at each value listed.

    python benchmarks/detector_component_filter.py                 # the pipeline's detector at 0.8, seed 777
    python benchmarks/detector_component_filter.py --detector detector-v9 --threshold 0.7 --hidden 16

Results (detector-v9) are in weights/README.md ("Twenty-first and twenty-second sessions").
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from oldphoto import registry
from oldphoto.ops.masks import dilate
from oldphoto.pipeline import WEIGHT_NAMES
from oldphoto.train.components import FEATURES, component_features, keep_components
from oldphoto.train.detector import Config, EvalConfig, load_validation, predict, training_recipe
from oldphoto.train.mask_metrics import scores_at


def components(model: torch.nn.Module, seed: int, count: int, threshold: float, training_photos: bool) -> list:
    """Crops of one seed -> [(labels, ids, features, true share, area) per batch of 16 crops], truth masks."""
    x, m = load_validation("", 0, count, 256, seed, training_recipe(Config()), training_photos=training_photos)
    prob = predict(model, x, 8)
    parts = []
    for i in range(0, len(x), 16):
        lab, ids, feats = component_features((prob[i:i + 16] > threshold).float(), prob[i:i + 16], x[i:i + 16])
        on = lab > 0
        inv = torch.searchsorted(ids, lab[on])
        near_truth = dilate(m[i:i + 16], 1)[on]  # the metric's 1 px tolerance
        area = torch.zeros(ids.numel()).index_add_(0, inv, torch.ones_like(near_truth))
        share = torch.zeros(ids.numel()).index_add_(0, inv, near_truth) / area.clamp(min=1)
        parts.append((lab, ids, feats, share, area))
    return parts, m


def f1(parts: list, truth: torch.Tensor, keeps: list[torch.Tensor]) -> dict:
    pred = torch.cat([keep_components(lab, ids, k) for (lab, ids, *_), k in zip(parts, keeps)]).float()
    s = scores_at(pred, truth, 0.5)
    return {k: round(s[k], 4) for k in ("f1_tol", "precision_tol", "recall_tol")}


def fit(x: torch.Tensor, share: torch.Tensor, area: torch.Tensor, hidden: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = (torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
           if hidden else torch.nn.Linear(x.shape[1], 1))
    opt = torch.optim.LBFGS(net.parameters(), max_iter=500, line_search_fn="strong_wolfe")
    weight = area / area.mean()  # pixel F1 is what counts: a big component matters more than a speck

    def closure():
        opt.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(net(x)[:, 0], share, reduction="none") * weight).mean()
        loss = loss + 1e-3 * sum((p ** 2).sum() for p in net.parameters())
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=WEIGHT_NAMES["detector"])
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=777, help="selection seed of the validation crops")
    ap.add_argument("--fit-seeds", type=int, nargs="+", default=[778, 779, 780], help="seeds of training-photo crops")
    ap.add_argument("--count", type=int, default=160)
    ap.add_argument("--hidden", type=int, default=0, help="0: logistic regression; N: MLP with N hidden units")
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.seed == EvalConfig().seed:
        ap.error(f"seed {args.seed} is the held-out evaluation set: select on another seed")
    torch.set_num_threads(args.threads)
    model = registry.load_entry(registry.get(args.detector), "cpu").eval()
    train = [c for s in args.fit_seeds for c in components(model, s, args.count, args.threshold, True)[0]]
    val, truth = components(model, args.seed, args.count, args.threshold, False)
    feats = torch.cat([c[2] for c in train])
    mu, sd = feats.mean(0), feats.std(0).clamp(min=1e-6)
    net = fit((feats - mu) / sd, torch.cat([c[3] for c in train]), torch.cat([c[4] for c in train]), args.hidden)
    head = {"detector": args.detector, "threshold": args.threshold, "seed": args.seed, "crops": args.count,
            "fit_components": len(feats)}
    everything = [torch.ones_like(c[3], dtype=torch.bool) for c in val]
    print(json.dumps({**head, "filter": "none", **f1(val, truth, everything)}))
    print(json.dumps({**head, "filter": "oracle", **f1(val, truth, [c[3] >= 0.5 for c in val])}))
    with torch.no_grad():
        scores = [torch.sigmoid(net((c[2] - mu) / sd)[:, 0]) for c in val]
    for cut in args.cuts:
        print(json.dumps({**head, "filter": f"fitted (hidden {args.hidden}), cut {cut}",
                          **f1(val, truth, [s >= cut for s in scores])}))
    if not args.hidden:
        weights = sorted(zip(FEATURES, net.weight[0].tolist()), key=lambda t: -abs(t[1]))
        print(json.dumps({"standardised_coefficients": {k: round(v, 3) for k, v in weights}}))


if __name__ == "__main__":
    main()
