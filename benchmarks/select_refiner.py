"""Score refiner candidates on sets that neither their training nor the held-out evaluation (seed 4321) uses.

    python benchmarks/select_refiner.py refine-v2 runs/ref12 runs/ref12/best.pt

A candidate is a registered refiner, a run folder (its last state, ckpt.pt) or a checkpoint file. Two sets, both
from the validation photos, with detector masks as in the pipeline (at the restorer's threshold, dilated 1 px; still
detector-v5's, so that scores stay comparable with the earlier sessions'):
  heavy     48 crops of seed 999, the full degradation recipe;
  families  12 crops of seed 77 for each single family of the recipe (and clean crops): milder scans.
The latent restorer's outputs do not depend on the refiner, so they are computed once and cached
(--cache, default runs/select_refiner_cache.pt). Prints one JSON line per candidate; the sixth session's
choices (refine-v2) were made this way (weights/README.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.stages.detect import Detector
from oldphoto.stages.restore import Restorer
from oldphoto.train.chunked import chunked
from oldphoto.train.data import corpus_dir, split_corpus, validation_set
from oldphoto.train.degrade import FAMILIES, DegradeConfig, family_recipe
from oldphoto.train.mapping import quality
from oldphoto.train.pairs import stack_triples
from oldphoto.train.refine import ARCH, Config, _arch_kwargs, restorer_masks


def _sets(restorer: Restorer, detector: Detector) -> dict:
    """{set name: (x, r, m, y)}: scan, latent restoration (no refiner), mask, clean; all (B, C, 256, 256)."""
    _, val = split_corpus(corpus_dir(), 0.15, 0)
    specs = {"heavy": (48, 999, DegradeConfig()), "none": (12, 77, family_recipe())}
    specs.update({f: (12, 77, family_recipe(f)) for f in FAMILIES})
    sets = {}
    for name, (n, seed, recipe) in specs.items():
        x, y, m = stack_triples(validation_set(val, n, 256, seed, recipe))
        m = restorer_masks(restorer, detector, x, m, torch.ones(len(x), dtype=torch.bool), 1)
        r = chunked(restorer, 8, x, m)
        sets[name] = (x, r, m, y)
    return sets


def _load(candidate: str) -> torch.nn.Module:
    path = Path(candidate)
    if not path.exists():
        return registry.load_entry(registry.get(candidate), "cpu")
    ck = torch.load(path / "ckpt.pt" if path.is_dir() else path, map_location="cpu", weights_only=True)
    net = build(ARCH, **_arch_kwargs(Config(**ck["config"])))  # the run's own arch arguments, as refine.export
    net.load_state_dict(ck["model"])
    return net


def score(net: torch.nn.Module, sets: dict) -> dict:
    net = net.eval()
    res = {}
    with torch.inference_mode():
        for name, (x, r, m, y) in sets.items():
            out = chunked(net, 8, x, r, m).clamp(0, 1)
            q = quality(out, y)
            res[name] = (round(q["psnr_y"], 2), round(q["ssim_y"], 3))
    fam = [v for k, v in res.items() if k != "heavy"]
    return {"heavy": res["heavy"], "family_mean": (round(sum(p for p, _ in fam) / len(fam), 2),
                                                   round(sum(s for _, s in fam) / len(fam), 3)), "per_set": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--cache", default="runs/select_refiner_cache.pt")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    if cache.is_file():
        sets = torch.load(cache, weights_only=True)
    else:
        sets = _sets(Restorer.from_registry("vae1-v1", "mapping-v1", "vae2-v1"), Detector.from_registry("detector-v5"))
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(sets, cache)
    for cand in args.candidates:
        print(json.dumps({"candidate": cand, **score(_load(cand), sets)}), flush=True)


if __name__ == "__main__":
    main()
