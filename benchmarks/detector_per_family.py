"""Where does the detector fall short? Precision, recall and F1 (1 px tolerance) at the detector's own threshold on
validation crops damaged by one kind of defect at a time, and the share of pixels it flags on crops with no damage.

Each kind is scored twice: alone on a clean crop, and inside the full recipe (every unstructured step of the
default recipe with its usual probability: fading, blur, noise, grain, JPEG, ...), where it must be told from
what those steps do to the content.

    python benchmarks/detector_per_family.py                          # the pipeline's detector
    python benchmarks/detector_per_family.py --detector detector-v5 --run runs/det18
    python benchmarks/detector_per_family.py --only crazing foxing flaking          # some kinds only
    python benchmarks/detector_per_family.py --json runs/detector_per_family.json

Results are in weights/README.md ("Where the detector loses").
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from oldphoto import registry
from oldphoto.pipeline import WEIGHT_NAMES
from oldphoto.train.data import corpus_dir, split_corpus, validation_set
from oldphoto.train.degrade import DegradeConfig, family_recipe
from oldphoto.train.detector import ARCH, _to_tensor, predict
from oldphoto.train.loop import load_run_best
from oldphoto.train.mask_metrics import scores_at

# each kind of damage by the DegradeConfig switches that make it (p_structured is set for all)
KINDS = {"scratch": ("p_scratch",), "dust": ("p_dust",), "hair": ("p_hair",), "crease": ("p_crease",),
         "tear": ("p_tear",), "blotch": ("p_blotch",), "texture": ("p_texture",),
         # the ageing kinds (off in the default recipe; detectors trained with p_ageing > 0 have seen them)
         "crazing": ("p_crazing",), "foxing": ("p_foxing",), "flaking": ("p_flaking",)}
_ALL = tuple(p for ps in KINDS.values() for p in ps)


def recipes() -> dict[str, DegradeConfig]:
    """name -> recipe: each kind alone, each kind within the full recipe, and the full recipe without damage."""
    out = {}
    for kind, switches in KINDS.items():
        only = {p: (1.0 if p in switches else 0.0) for p in _ALL}
        out[f"{kind} alone"] = replace(family_recipe(), p_structured=1.0, **only)
        out[f"{kind} in the full recipe"] = replace(DegradeConfig(), p_structured=1.0, **only)
    out["no damage (full recipe)"] = replace(DegradeConfig(), p_structured=0.0)
    return out


def load(ref: str) -> tuple[torch.nn.Module, float]:
    """A registered detector (its tuned threshold) or a detector run folder (its best.pt and that threshold)."""
    if Path(ref).is_dir():
        model, ck = load_run_best(ref, ARCH)
        return model, float(ck["val"]["threshold"])
    entry = registry.get(ref)  # raises WeightsError naming the known models
    return registry.load_entry(entry, "cpu").eval(), float(entry.meta["threshold"])


def score(model: torch.nn.Module, threshold: float, x: torch.Tensor, m: torch.Tensor) -> dict:
    prob = predict(model, x)
    t = scores_at(prob, m, threshold)
    flagged = float((prob > threshold).float().mean())
    return {"precision_tol": round(t["precision_tol"], 3), "recall_tol": round(t["recall_tol"], 3),
            "f1_tol": round(t["f1_tol"], 3), "defect_share": round(float(m.mean()), 4),
            "flagged_share": round(flagged, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=WEIGHT_NAMES["detector"], help="registered detector")
    ap.add_argument("--run", action="append", default=[], help="also score this detector run folder (best.pt)")
    ap.add_argument("--crops", type=int, default=48)
    ap.add_argument("--seed", type=int, default=55)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", default=[], choices=sorted(KINDS), help="score these kinds only")
    ap.add_argument("--json", default="", help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {ref: load(ref) for ref in [args.detector, *args.run]}
    _, val = split_corpus(corpus_dir(), 0.15, 0)
    table: dict[str, dict] = {}
    for name, recipe in recipes().items():
        if args.only and not any(name.startswith(f"{k} ") for k in args.only):
            continue
        items = validation_set(val, args.crops, 256, args.seed, recipe)
        x = torch.stack([_to_tensor(a) for a, _, _ in items])
        m = torch.stack([_to_tensor(b) for _, _, b in items])
        table[name] = {ref: score(model, thr, x, m) for ref, (model, thr) in models.items()}
        cells = "  ".join(f"{ref}: F1 {r['f1_tol']:.3f} P {r['precision_tol']:.3f} R {r['recall_tol']:.3f} "
                          f"flags {100 * r['flagged_share']:.2f}% (true {100 * r['defect_share']:.2f}%)"
                          for ref, r in table[name].items())
        print(f"{name:32s} {cells}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"crops": args.crops, "seed": args.seed, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
