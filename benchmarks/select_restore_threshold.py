"""Choose the detector threshold the restorer acts on (the mapping's meta["mask_threshold"]).

Every marked pixel is refilled from its surroundings, so a false alarm on intact content costs much more than
it does in the detector's F1: on clean crops the restoration loses several dB where the detector marks content.
So the threshold is scored on two sets of selection crops (seed 999, never the held-out 4321):
  damaged    the default recipe (what `oldphoto eval restore` measures)
  undamaged  the same recipe without any damage (p_structured 0): what the restorer does to intact prints
PSNR / SSIM on luma per threshold, and the share of pixels marked (after the mask's growth: the pipeline's 1 px,
or --dilate); on the damaged crops also PSNR luma inside the true defects and on their rim (1-3 px outside them),
where a mask grown too little leaves the soft edges of scratches.

    python benchmarks/select_restore_threshold.py                      # the pipeline's detector and restorer
    python benchmarks/select_restore_threshold.py --detector detector-v9 --thresholds 0.9 0.95 0.97
    python benchmarks/select_restore_threshold.py --chain vae1-v3,mapping-v3,vae2-v3,refine-v4 --record
    python benchmarks/select_restore_threshold.py --detect-scales 2 --thresholds 0.85 0.9 0.95 0.97

Rule used for the shipped value (weights/README.md): the highest PSNR on the damaged crops, and among thresholds
within 0.05 dB of it, the one best on the undamaged crops.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from oldphoto.config import RestoreConfig
from oldphoto.ops.color import luma
from oldphoto.ops.masks import dilate
from oldphoto.pipeline import WEIGHT_NAMES
from oldphoto.stages.detect import Detector, TwoScaleDetector
from oldphoto.stages.restore import Restorer
from oldphoto.train.chunked import chunked
from oldphoto.train.data import corpus_dir, split_corpus, validation_set
from oldphoto.train.degrade import DegradeConfig
from oldphoto.train.evaluate_restore import EvalConfig
from oldphoto.train.mapping import quality
from oldphoto.train.pairs import stack_triples
from oldphoto.train.run_files import command_line, update_meta

TIE_DB = 0.05  # PSNR differences on the damaged crops below this are treated as ties


def region_psnr(out: torch.Tensor, y: torch.Tensor, region: torch.Tensor) -> float:
    """PSNR of luma over the pixels of region (B, 1, H, W) {0, 1}, pooled over the batch; out, y (B, 3, H, W)."""
    err = (luma(out) - luma(y)).square() * region
    return float(10 * torch.log10(region.sum() / err.sum().clamp_min(1e-12)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=WEIGHT_NAMES["detector"])
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--crops", type=int, default=48)
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chain", default=",".join(WEIGHT_NAMES[k] for k in ("vae1", "mapping", "vae2", "refiner")),
                    help="the restorer's entries VAE1,MAPPING,VAE2,REFINER (default: the pipeline's)")
    ap.add_argument("--dilate", type=int, default=RestoreConfig().dilate_px,
                    help="grow each mask by this many pixels (default: the pipeline's, which --record needs)")
    ap.add_argument("--detect-scales", type=int, choices=(1, 2), default=1,
                    help="2: the detector as `--detect-scales 2` runs it (its restore threshold is a constant of "
                         "stages.detect, so not with --record)")
    ap.add_argument("--record", action="store_true",
                    help="store the chosen threshold and the table in the mapping's meta (mask_threshold, "
                         "mask_threshold_selection)")
    args = ap.parse_args()
    if args.seed == EvalConfig().seed:
        ap.error(f"seed {args.seed} is the held-out evaluation set: select on another seed")
    if args.record and args.dilate != RestoreConfig().dilate_px:
        ap.error("--record stores a threshold for the pipeline's mask dilation: leave --dilate at its default")
    if args.record and args.detect_scales != 1:
        ap.error("--record stores the one-pass threshold in the mapping's meta: leave --detect-scales at 1")
    torch.set_num_threads(args.threads)
    det = Detector.from_registry(args.detector)
    if args.detect_scales == 2:
        det = TwoScaleDetector(det)
    chain = args.chain.split(",")
    if len(chain) != 4:
        ap.error(f"--chain needs four names VAE1,MAPPING,VAE2,REFINER, got {args.chain!r}")
    restorer = Restorer.from_registry(*chain[:3], refiner=chain[3] or None)
    _, val = split_corpus(corpus_dir(), 0.15, 0)
    sets = {"damaged": DegradeConfig(), "undamaged": replace(DegradeConfig(), p_structured=0.0)}
    table: dict[str, dict[float, dict]] = {}
    for name, recipe in sets.items():
        x, y, m_true = stack_triples(validation_set(val, args.crops, 256, args.seed, recipe))
        regions = {"defects": m_true, "rim": dilate(m_true, 3) - m_true} if name == "damaged" else {}
        prob = chunked(det, 8, x)
        table[name] = {}
        for t in args.thresholds:
            mask = dilate(det.binarize(prob, t), args.dilate)
            out = chunked(restorer, 8, x, mask)
            q = {k: round(v, 3) for k, v in quality(out, y).items()}
            q.update({f"psnr_y_{r}": round(region_psnr(out, y, reg), 3) for r, reg in regions.items()})
            q["marked_percent"] = round(100 * float(mask.mean()), 2)
            table[name][t] = q
            print(json.dumps({"set": name, "threshold": t, **q}), flush=True)
    best = max(table["damaged"][t]["psnr_y"] for t in args.thresholds)
    ties = [t for t in args.thresholds if table["damaged"][t]["psnr_y"] >= best - TIE_DB]
    chosen = max(ties, key=lambda t: table["undamaged"][t]["psnr_y"])
    print(json.dumps({"detector": args.detector, "detect_scales": args.detect_scales, "chosen": chosen, "ties": ties}))
    if args.record:
        update_meta(chain[1], "mask_threshold", chosen)
        update_meta(chain[1], "mask_threshold_selection", {
            "chosen": chosen, "command": command_line(), "detector": args.detector, "chain": chain,
            "rule": f"highest PSNR luma on {args.crops} damaged selection crops (seed {args.seed}, default recipe); "
                    f"among thresholds within {TIE_DB} dB of it, the best on {args.crops} undamaged crops of the same "
                    "seed (p_structured 0): false alarms are refilled from their surroundings",
            "table": {name: {str(t): q for t, q in rows.items()} for name, rows in table.items()}})


if __name__ == "__main__":
    main()
