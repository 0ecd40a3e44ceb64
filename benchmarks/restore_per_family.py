"""Where does the restorer fall short? PSNR and SSIM luma of the scan and of the restoration on validation crops
degraded by one family of the recipe at a time (that family's probabilities set to 1, every other step off), and
the restoration's PSNR once each crop's tone is fitted to the clean crop (`train.metrics.tone_oracle`: what is
left when tone is not counted).

    python benchmarks/restore_per_family.py                      # the registered restorer, with its refiner
    python benchmarks/restore_per_family.py --refiner ""         # without the refiner
    python benchmarks/restore_per_family.py --detector detector-v6   # the pipeline's masks, not the ground truth
    python benchmarks/restore_per_family.py --pipeline           # + each crop through --tone photo and --scan-blend
    python benchmarks/restore_per_family.py --json runs/per_family.json

Results in weights/README.md: "Where the restorer loses" (2026-12-02) and the twenty-fourth session's entry (the
vae1-v3 ... refine-v4 chain).
"""

from __future__ import annotations

import argparse
import json

import torch

from oldphoto.pipeline import WEIGHT_NAMES
from oldphoto.stages.blend import ScanBlend, fitted_chain
from oldphoto.stages.detect import Detector
from oldphoto.stages.restore import Restorer
from oldphoto.train.chunked import chunked
from oldphoto.train.data import corpus_dir, split_corpus, validation_set
from oldphoto.train.evaluate_restore import even_tone_crops
from oldphoto.train.degrade import FAMILIES, family_recipe
from oldphoto.train.mapping import quality
from oldphoto.train.metrics import tone_oracle
from oldphoto.train.pairs import stack_triples
from oldphoto.train.refine import restorer_masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refiner", default=WEIGHT_NAMES["refiner"], help='registered refiner ("" for none)')
    ap.add_argument("--detector", default="", help="registered detector whose masks (at the restorer's threshold, "
                    "dilated 1 px, as in the pipeline) the restorer gets; default: the ground-truth masks")
    ap.add_argument("--pipeline", action="store_true", help="the pipeline's detector masks, and a column with each "
                    "crop as a one-tile photo through the pipeline's passes (--tone photo, --scan-blend auto)")
    ap.add_argument("--crops", type=int, default=24)
    ap.add_argument("--seed", type=int, default=77)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="", help="also write the table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    restorer = Restorer.from_registry(WEIGHT_NAMES["vae1"], WEIGHT_NAMES["mapping"], WEIGHT_NAMES["vae2"],
                                      refiner=args.refiner or None)
    if args.pipeline:
        args.detector = WEIGHT_NAMES["detector"]
    detector = Detector.from_registry(args.detector) if args.detector else None
    gate = None
    if args.pipeline and args.refiner == WEIGHT_NAMES["refiner"]:
        gate = ScanBlend.from_registry(WEIGHT_NAMES["blend"], fitted_chain(restorer, detector))
    _, val = split_corpus(corpus_dir(), 0.15, 0)
    table = {}
    for name, family in {"none (clean crop)": (), **{f: (f,) for f in FAMILIES}}.items():
        x, y, m = stack_triples(validation_set(val, args.crops, 256, args.seed, family_recipe(*family)))
        m = restorer_masks(restorer, detector, x, m, torch.ones(len(x), dtype=torch.bool), 1)
        out = chunked(restorer, 8, x, m)
        scan = quality(x, y) if family else None
        restored, oracle = quality(out, y), quality(tone_oracle(out, y), y)
        table[name] = {"scan": None if scan is None else [round(scan["psnr_y"], 2), round(scan["ssim_y"], 4)],
                       "restored": [round(restored["psnr_y"], 2), round(restored["ssim_y"], 4)],
                       "tone_oracle_db": round(oracle["psnr_y"], 2)}
        if args.pipeline:
            toned = quality(even_tone_crops(out, x, m), y)
            passes = quality(even_tone_crops(out, x, m, blend_stage=gate), y) if gate else toned
            table[name]["tone_photo"] = [round(toned["psnr_y"], 2), round(toned["ssim_y"], 4)]
            table[name]["pipeline"] = [round(passes["psnr_y"], 2), round(passes["ssim_y"], 4)]
            print(f"{name:20s} --tone photo {toned['psnr_y']:6.2f} dB / {toned['ssim_y']:.3f}  and --scan-blend "
                  f"{passes['psnr_y']:6.2f} dB / {passes['ssim_y']:.3f}", flush=True)
        shown = "clean" if scan is None else f"{scan['psnr_y']:6.2f} dB / {scan['ssim_y']:.3f}"
        print(f"{name:20s} scan {shown:>16s}  restored {restored['psnr_y']:6.2f} dB / {restored['ssim_y']:.3f}  "
              f"restored, tone fitted to the clean crop {oracle['psnr_y']:6.2f} dB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
