"""Score detector candidates on validation crops of a chosen seed, to pick a run's state before publishing it.

    python benchmarks/select_detector.py detector-v8 runs/det21d/ckpt.pt runs/det21d --seed 777

A candidate is a registered detector, a run folder (its best.pt: the in-training best) or a checkpoint file (a
run's ckpt.pt: its last state). Each is scored at the threshold that maximises its F1 (1 px tolerance) on these
crops. Choose on a seed other than the held-out one (1234, what `oldphoto eval detector` reports), so the
held-out number stays an honest estimate; seed 777 is the one the weights README uses. One JSON line each.
`--ageing P` adds the ageing damage kinds (crazing, foxing, flaking; off in the default recipe) at P each, for
detectors trained with them. `--photos training` scores crops of the training photos instead (same recipe and
seed): the gap to the validation photos is how much of a detector's score is memorised content. A candidate
"A+B" scores the average of A's and B's weights (fine-tunes of one detector). `--enlarge F` also scores each
candidate, at its threshold from the crops as they are, on the same crops enlarged F times (a scan at F times the
resolution; `train.detector.enlarged`), under "enlarged".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from oldphoto import registry
from oldphoto.train.detector import (ARCH, Config, EvalConfig, enlarged, load_validation, predict, score_learned,
                                     training_recipe)
from oldphoto.train.loop import load_run_best, load_run_last


def load(candidate: str) -> tuple[torch.nn.Module, int | None]:
    """(detector in eval mode, training step or None for registered weights). "A+B+..." is the uniform average
    of the candidates' parameters and BatchNorm statistics (a "soup" of fine-tunes of one detector)."""
    if "+" in candidate:
        parts = [load(c)[0] for c in candidate.split("+")]
        states = [m.state_dict() for m in parts]
        soup = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
                for k, v in states[0].items()}
        parts[0].load_state_dict(soup)
        return parts[0].eval(), None
    path = Path(candidate)
    if not path.exists():
        return registry.load_entry(registry.get(candidate), "cpu").eval(), None
    model, ck = load_run_best(path, ARCH) if path.is_dir() else load_run_last(path.parent, ARCH)
    return model, ck.get("step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--count", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ageing", type=float, default=0.0, help="probability of each ageing damage kind (default 0)")
    ap.add_argument("--photos", choices=("validation", "training"), default="validation",
                    help="crops of the validation photos (default) or of the photos the detectors were trained on")
    ap.add_argument("--enlarge", type=int, default=0, help="also score the crops enlarged this many times (0: skip)")
    args = ap.parse_args()
    held_out = EvalConfig().seed
    if args.seed == held_out:
        ap.error(f"seed {held_out} is the held-out evaluation set: select on another seed")
    torch.set_num_threads(args.threads)
    recipe = training_recipe(Config(p_ageing=args.ageing))
    images, masks = load_validation("", 0, args.count, 256, args.seed, recipe,
                                    training_photos=args.photos == "training")
    for cand in args.candidates:
        model, step = load(cand)
        r = score_learned(predict(model, images, 8), masks)
        row = {"candidate": cand, "step": step, "f1_tol": round(r["f1_tol"], 4), "f1": round(r["f1"], 4),
               "precision_tol": round(r["precision_tol"], 3), "recall_tol": round(r["recall_tol"], 3),
               "threshold": r["threshold"], "seed": args.seed, "ageing": args.ageing, "photos": args.photos}
        if args.enlarge > 1:
            row["enlarged"] = enlarged(model, images, masks, r["threshold"], args.enlarge)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
