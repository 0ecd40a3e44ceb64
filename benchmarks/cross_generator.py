"""Do the models carry over to another degradation generator? The same clean validation crops are degraded twice,
by the training recipe (`oldphoto.train.degrade`) and by a second, separately designed one
(`oldphoto.train.degrade_second`, never trained on), and every model is scored on both:

  detector   F1 / precision / recall (1 px tolerance) at its own stored threshold (as shipped), and the F1 it
             would reach at the best threshold for the set (how much of any loss is calibration); the classical
             top-hat detector tuned on each set
  restore    PSNR / SSIM on luma for the degraded input, the classical baseline (without and with the stretch),
             the restorer (detector masks at the restorer's threshold; the same with ground-truth masks), and
             with the pipeline's passes on each crop: --tone photo, and that with --scan-blend auto

    python benchmarks/cross_generator.py                                   # pipeline models, 96 crops
    python benchmarks/cross_generator.py --detector detector-v7 --json runs/cross_generator.json
    python benchmarks/cross_generator.py --no-restore --per-kind 48          # where the detector's errors are
    python benchmarks/cross_generator.py --restore-steps 32                  # the restorer per ageing / scan step
    python benchmarks/cross_generator.py --restore-threshold 0.7 --restore-dilate 0   # another restorer mask

Results are in weights/README.md ("A second degradation generator"). Photos: the validation split (never trained
on); crop seed 2468, which no selection or evaluation elsewhere uses.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from dataclasses import replace

import numpy as np
import torch

from oldphoto.config import RestoreConfig
from oldphoto.ops.masks import dilate
from oldphoto.pipeline import WEIGHT_NAMES
from oldphoto.stages.detect import Detector
from oldphoto.stages.blend import ScanBlend, fitted_chain
from oldphoto.stages.restore import Restorer, restore_threshold
from oldphoto.train.baseline import BaselineConfig, classical_restore
from oldphoto.train.chunked import chunked
from oldphoto.train.evaluate_restore import even_tone_crops
from oldphoto.train.data import PhotoPool, corpus_dir, split_corpus, to_gray
from oldphoto.train.degrade import degrade
from oldphoto.train.degrade_second import KINDS, STEPS, SecondConfig, degrade_second
from oldphoto.train.detector import ARCH, THRESHOLDS, _to_tensor, score_classical
from oldphoto.train.loop import load_run_best, load_run_last
from oldphoto.train.mapping import quality
from oldphoto.train.mask_metrics import ThresholdSweep, scores_at

GENERATORS = {"training recipe": degrade, "second generator": degrade_second}


def load_detector(ref: str) -> Detector:
    """A registered detector (its stored threshold), a run folder (best.pt) or a run's ckpt.pt (its last state),
    the latter two at the threshold of their latest in-training validation."""
    path = Path(ref)
    if not path.exists():
        return Detector.from_registry(ref)
    model, ck = load_run_best(path, ARCH) if path.is_dir() else load_run_last(path.parent, ARCH)
    return Detector(model, float(ck["val"]["threshold"]))


def clean_crops(n: int, size: int, seed: int) -> list[np.ndarray]:
    """n clean (size, size, 3) crops of the validation photos (never trained on), visited in turn."""
    _, val = split_corpus(corpus_dir(), 0.15, 0)
    pool = PhotoPool(sorted(val))
    rng = np.random.default_rng(seed)
    return [pool.random_crop(rng, size, index=k % len(pool)) for k in range(n)]


def crops(n: int, size: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """{generator: (x, y, m)}: the same n clean validation crops degraded by each generator (x, y (N, 3, S, S),
    m (N, 1, S, S)); each generator draws from its own seeded stream, so adding one changes no other."""
    clean = clean_crops(n, size, seed)
    out = {}
    for g, (name, fn) in enumerate(GENERATORS.items()):
        grng = np.random.default_rng([seed, g])
        xs, ys, ms = [], [], []
        for c in clean:
            d = fn(c, grng)
            xs.append(_to_tensor(d.image))
            ys.append(_to_tensor(to_gray(c) if d.gray else c))
            ms.append(_to_tensor(d.mask))
        out[name] = (torch.stack(xs), torch.stack(ys), torch.stack(ms))
    return out


def score_detector(det: Detector, prob: torch.Tensor, m: torch.Tensor) -> dict:
    t = scores_at(prob, m, det.threshold)
    sweep = ThresholdSweep(THRESHOLDS, tolerance=1)
    sweep.add(prob, m)
    best = sweep.best("f1_tol")
    return {"threshold": det.threshold, "f1_tol": round(t["f1_tol"], 3), "precision_tol": round(t["precision_tol"], 3),
            "recall_tol": round(t["recall_tol"], 3),
            "flagged_share": round(float((prob > det.threshold).float().mean()), 4),
            "best_f1_tol": round(float(best["f1_tol"]), 3), "best_threshold": float(best["threshold"])}


def per_kind(det: Detector, n: int, size: int, seed: int) -> dict[str, dict]:
    """The detector on the second generator one damage kind at a time, alone on the clean crop and inside that
    generator's ageing and scan steps, plus no damage at all: where its errors come from."""
    clean = clean_crops(n, size, seed)
    flags = [f for f, _ in KINDS]
    quiet = {p: 0.0 for p in STEPS}
    recipes = {}
    for f in flags:
        kind = {g: (1.0 if g == f else 0.0) for g in flags}
        recipes[f"{f[2:]} alone"] = replace(SecondConfig(), p_damage=1.0, **kind, **quiet)
        recipes[f"{f[2:]} in the full recipe"] = replace(SecondConfig(), p_damage=1.0, **kind)
    recipes["no damage, clean crop"] = replace(SecondConfig(), p_damage=0.0, **quiet)
    recipes["no damage, full recipe"] = replace(SecondConfig(), p_damage=0.0)
    out = {}
    for name, cfg in recipes.items():
        grng = np.random.default_rng([seed, 1])
        ds = [degrade_second(c, grng, cfg) for c in clean]
        x = torch.stack([_to_tensor(d.image) for d in ds])
        m = torch.stack([_to_tensor(d.mask) for d in ds])
        s = score_detector(det, chunked(det, 8, x), m)
        out[name] = {**s, "defect_share": round(float(m.mean()), 4)}
        print(f"{name:32s} F1 {s['f1_tol']:.3f}  P {s['precision_tol']:.3f}  R {s['recall_tol']:.3f}  "
              f"flags {100 * s['flagged_share']:.2f}% (true {100 * out[name]['defect_share']:.2f}%)", flush=True)
    return out


def restore_per_step(det: Detector, restorer: Restorer, n: int, size: int, seed: int) -> dict[str, dict]:
    """The full pipeline (detector masks at the restorer's threshold) on undamaged crops of the second generator,
    one ageing or scan step at a time: what the restorer does to each kind of degradation it never saw made this
    way (PSNR / SSIM luma of the scan and of the restoration)."""
    clean = clean_crops(n, size, seed)
    off = {"p_damage": 0.0, **{p: 0.0 for p in STEPS}}
    steps = {"none (clean crop)": {}, "veil 0.1-0.2": dict(p_veil=1, veil=(0.1, 0.2)),
             "veil 0.2-0.3": dict(p_veil=1, veil=(0.2, 0.3)), "veil 0.3-0.45": dict(p_veil=1, veil=(0.3, 0.45)),
             "dye loss + yellowing": dict(p_dye_loss=1, p_yellowing=1), "mono, duotone": dict(p_mono=1, p_duotone=1),
             "light fall-off": dict(p_falloff=1), "blur": dict(p_blur=1), "noise": dict(p_noise=1),
             "row banding": dict(p_banding=1), "jpeg": dict(p_jpeg=1)}
    out = {}
    threshold = restore_threshold(restorer, det)
    for name, on in steps.items():
        cfg = replace(SecondConfig(), **{**off, **on})
        grng = np.random.default_rng([seed, 2])
        ds = [degrade_second(c, grng, cfg) for c in clean]
        x = torch.stack([_to_tensor(d.image) for d in ds])
        y = torch.stack([_to_tensor(to_gray(c) if d.gray else c) for c, d in zip(clean, ds)])
        mask = dilate(det.binarize(chunked(det, 8, x), threshold), 1)
        scan, restored = quality(x, y), quality(chunked(restorer, 8, x, mask), y)
        out[name] = {"scan": {k: round(v, 3) for k, v in scan.items()},
                     "restored": {k: round(v, 3) for k, v in restored.items()}}
        print(f"{name:22s} scan {scan['psnr_y']:6.2f} dB / {scan['ssim_y']:.3f} -> restored "
              f"{restored['psnr_y']:6.2f} dB / {restored['ssim_y']:.3f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", action="append", default=[],
                    help="registered detector, run folder or run ckpt.pt to score (repeatable; default: the "
                         "pipeline's); the first one makes the restorer's masks")
    ap.add_argument("--crops", type=int, default=96)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=2468)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-restore", action="store_true", help="do not score the restorer on the two sets")
    ap.add_argument("--per-kind", type=int, default=0, metavar="N",
                    help="also score the first detector on N crops per damage kind of the second generator")
    ap.add_argument("--restore-steps", type=int, default=0, metavar="N",
                    help="also run the pipeline on N undamaged crops per ageing / scan step of the second generator")
    ap.add_argument("--restore-threshold", type=float, default=None,
                    help="detector threshold for the restorer's mask (default: the one stored with the restorer)")
    ap.add_argument("--restore-dilate", type=int, default=RestoreConfig().dilate_px,
                    help="grow the restorer's mask by this many pixels (default: the pipeline's)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.detector or [WEIGHT_NAMES["detector"]]
    detectors = {n: load_detector(n) for n in names}
    restorer = None if args.no_restore and not args.restore_steps else Restorer.from_registry(
        WEIGHT_NAMES["vae1"], WEIGHT_NAMES["mapping"], WEIGHT_NAMES["vae2"], refiner=WEIGHT_NAMES["refiner"] or None)
    blend = None  # the scan-blend gate, fitted beside the pipeline's chain and detector only
    if restorer is not None and names[0] == WEIGHT_NAMES["detector"]:
        blend = ScanBlend.from_registry(WEIGHT_NAMES["blend"], fitted_chain(restorer, detectors[names[0]]))
    t0 = time.perf_counter()
    sets = crops(args.crops, args.size, args.seed)
    print(f"{args.crops} crops of {args.size} px per generator in {time.perf_counter() - t0:.0f} s", flush=True)
    results: dict = {"crops": args.crops, "size": args.size, "seed": args.seed, "generators": {}}
    for gen, (x, y, m) in sets.items():
        r: dict = {"defect_share": round(float(m.mean()), 4), "detector": {}}
        probs = {}
        for name, det in detectors.items():
            probs[name] = chunked(det, 8, x)
            r["detector"][name] = score_detector(det, probs[name], m)
        c = score_classical(x, m)
        r["detector"]["classical (tuned on this set)"] = {"f1_tol": round(float(c["f1_tol"]), 3),
                                                          "size": c["size"], "threshold": c["threshold"]}
        for name, s in r["detector"].items():
            print(f"{gen:17s} {name:30s} " + "  ".join(f"{k} {v}" for k, v in s.items()), flush=True)
        if not args.no_restore:
            det = detectors[names[0]]
            t = restore_threshold(restorer, det) if args.restore_threshold is None else args.restore_threshold
            mask = dilate(det.binarize(probs[names[0]], t), args.restore_dilate)
            restored = chunked(restorer, 8, x, mask)
            q = {"degraded": quality(x, y),
                 "baseline_no_stretch": quality(chunked(
                     lambda t: classical_restore(t, BaselineConfig(stretch=False))[0], 8, x), y),
                 "baseline": quality(chunked(lambda t: classical_restore(t, BaselineConfig())[0], 8, x), y),
                 "full": quality(restored, y),
                 "full_gt_mask": quality(chunked(restorer, 8, x, m), y),
                 # each crop as a one-tile photo through the pipeline's passes: --tone photo, then --scan-blend
                 "full_tone_photo": quality(even_tone_crops(restored, x, mask), y)}
            if blend is not None and args.restore_threshold is None and args.restore_dilate == 1:
                q["full_pipeline"] = quality(even_tone_crops(restored, x, mask, blend_stage=blend), y)
            r["restore"] = {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in q.items()}
            best_base = max(q["baseline"]["psnr_y"], q["baseline_no_stretch"]["psnr_y"])
            r["restore_gains"] = {"over_degraded_db": round(q["full"]["psnr_y"] - q["degraded"]["psnr_y"], 2),
                                  "over_baseline_db": round(q["full"]["psnr_y"] - best_base, 2)}
            for k, v in r["restore"].items():
                print(f"{gen:17s} {k:20s} PSNR luma {v['psnr_y']:6.2f} dB  SSIM luma {v['ssim_y']:.3f}", flush=True)
        results["generators"][gen] = r
    if args.per_kind:
        results["per_kind"] = {"detector": names[0], "crops": args.per_kind,
                               "table": per_kind(detectors[names[0]], args.per_kind, args.size, args.seed + 1)}
    if args.restore_steps:
        results["restore_per_step"] = {"crops": args.restore_steps, "table": restore_per_step(
            detectors[names[0]], restorer, args.restore_steps, args.size, args.seed + 2)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
