"""Score mapping candidates inside the full restorer on sets that neither training nor the held-out evaluation
(seed 4321) uses.

    python benchmarks/select_mapping.py mapping-v1 runs/map19 runs/map19/ckpt.pt

A candidate is a registered mapping, a mapping run folder (its best.pt) or a checkpoint file (a run's ckpt.pt: its
last state). Every candidate runs between vae1-v1's encoder and vae2-v1's decoder (the VAEs every mapping run
so far was trained with) and is scored with and without refine-v2 (trained on mapping-v1's outputs: for another
mapping a lower bound of what a refiner retrained on it would give). Sets, from the validation photos:
  heavy     48 crops of seed 999, the full recipe, detector masks as in the pipeline (restore threshold 0.9, 1 px);
  families  12 crops of seed 77 for each single family of the recipe and clean crops (ground-truth masks).
Prints one JSON line per candidate: PSNR / SSIM luma.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.ops.masks import dilate
from oldphoto.stages.detect import Detector
from oldphoto.stages.restore import Restorer
from oldphoto.train.chunked import chunked
from oldphoto.train.data import corpus_dir, split_corpus, validation_set
from oldphoto.train.degrade import FAMILIES, DegradeConfig, family_recipe
from oldphoto.train.loop import model_state
from oldphoto.train.mapping import quality
from oldphoto.train.pairs import stack_triples

VAE1, VAE2, REFINER, DETECTOR, THRESHOLD = "vae1-v1", "vae2-v1", "refine-v2", "detector-v6", 0.9


def _sets(detector: Detector) -> dict:
    """{set name: (x, m, y)}: scan, mask, clean; all (B, C, 256, 256)."""
    _, val = split_corpus(corpus_dir(), 0.15, 0)
    sets = {}
    x, y, m = stack_triples(validation_set(val, 48, 256, 999, DegradeConfig()))
    with torch.no_grad():
        m = dilate(detector.binarize(detector(x), THRESHOLD), 1)  # as the pipeline: restore threshold, 1 px wider
    sets["heavy"] = (x, m, y)
    for name, recipe in {"none": family_recipe(), **{f: family_recipe(f) for f in FAMILIES}}.items():
        x, y, m = stack_triples(validation_set(val, 12, 256, 77, recipe))
        sets[name] = (x, m, y)
    return sets


def _mapping(candidate: str) -> torch.nn.Module:
    path = Path(candidate)
    if not path.exists():
        return registry.load_entry(registry.get(candidate), "cpu")
    run = path if path.is_dir() else path.parent
    cfg = json.loads((run / "config.json").read_text())["config"]
    kwargs = {k: cfg[k] for k in ("width", "blocks_pre", "blocks_post", "context")}
    net = build("mapping", latent=registry.get(VAE1).arch_kwargs["latent"], **kwargs)
    net.load_state_dict(model_state(path))
    return net


def score(mapping: torch.nn.Module, sets: dict) -> dict:
    e1, e2 = registry.load_entry(registry.get(VAE1)), registry.load_entry(registry.get(VAE2))
    refiner = registry.load_entry(registry.get(REFINER))
    out = {}
    for label, ref in (("refined", refiner), ("latent only", None)):
        restorer = Restorer(e1.encoder, mapping, e2.decoder, refiner=ref)
        res = {}
        with torch.inference_mode():
            for name, (x, m, y) in sets.items():
                r = chunked(restorer, 8, x, m)
                q = quality(r, y)
                res[name] = (round(q["psnr_y"], 2), round(q["ssim_y"], 3))
        fam = [v for k, v in res.items() if k != "heavy"]
        out[label] = {"heavy": res["heavy"], "family_mean": (round(sum(p for p, _ in fam) / len(fam), 2),
                                                             round(sum(s for _, s in fam) / len(fam), 3))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = _sets(Detector.from_registry(DETECTOR))
    for cand in args.candidates:
        print(json.dumps({"candidate": cand, **score(_mapping(cand), sets)}), flush=True)


if __name__ == "__main__":
    main()
