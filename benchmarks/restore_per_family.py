"""Where does the restorer fall short? PSNR luma of the scan and of the restoration on validation crops degraded by
one family of the recipe at a time (that family's probabilities set to 1, every other step off).

    python benchmarks/restore_per_family.py                      # the registered restorer, with its refiner
    python benchmarks/restore_per_family.py --refiner ""         # without the refiner
    python benchmarks/restore_per_family.py --json runs/per_family.json

Results of 2026-12-02 are in weights/README.md ("Where the restorer loses").
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from oldphoto.stages.restore import Restorer
from oldphoto.train.data import corpus_dir, split_corpus, validation_set
from oldphoto.train.mapping import quality
from oldphoto.train.pairs import stack_triples
from oldphoto.train.refine import mild_recipe

FAMILIES = {
    "fade": ["p_fade"], "cast+desat": ["p_color_cast", "p_desaturate"], "toned": ["p_toned"], "stain": ["p_stain"],
    "exposure": ["p_exposure"], "grain": ["p_grain"], "blur": ["p_blur"], "noise": ["p_noise"],
    "resample": ["p_resample"], "jpeg": ["p_jpeg"], "scratch": ["p_structured", "p_scratch"],
    "dust": ["p_structured", "p_dust"], "blotch+tear+crease": ["p_structured", "p_blotch", "p_tear", "p_crease"],
    "texture": ["p_structured", "p_texture"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refiner", default="refine-v1", help='registered refiner ("" for none)')
    ap.add_argument("--crops", type=int, default=24)
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="", help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    restorer = Restorer.from_registry("vae1-v1", "mapping-v1", "vae2-v1", refiner=args.refiner or None)
    _, val = split_corpus(corpus_dir(), 0.15, 0)
    off = mild_recipe(0.0)  # every step off; the choices within a step stay
    table = {}
    for name, on in {"none (clean crop)": [], **FAMILIES}.items():
        x, y, m = stack_triples(validation_set(val, args.crops, 256, args.seed,
                                               dataclasses.replace(off, **{p: 1.0 for p in on})))
        out = torch.cat([restorer(x[i:i + 8], m[i:i + 8]) for i in range(0, len(x), 8)])
        scan = None if not on else round(quality(x, y)["psnr_y"], 2)
        table[name] = {"scan": scan, "restored": round(quality(out, y)["psnr_y"], 2)}
        print(f"{name:20s} scan {'clean' if scan is None else f'{scan:6.2f}'}  restored {table[name]['restored']:6.2f} dB",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
