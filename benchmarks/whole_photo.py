"""Whole photos through the real pipeline: the crop-level evaluations score one 256-px tile at a time, but a scan
is many tiles, merged, and a print fades as a whole. This degrades each validation photo whole (longest side
--side px) with the training recipe and with the second generator (`oldphoto.train.degrade_second`, never
trained on), runs `pipeline.process_file` on it (the shipped models, detector masks, tile 256, overlap 32) once
per --tone mode (and with `--scope defects`: "defects"; tone photo with `--scan-blend off`: "noblend"; tone photo
with `--detect-scales 1`, one detector pass instead of the default two: "scales1"), and
scores PSNR / SSIM on luma against the clean photo; with --masks also the detector's `--only-mask` output
(undilated; one pass, as its default, and with "scales1" requested also two scales) against the generator's defect
mask: F1 with 1 px tolerance, pooled over the photos.

    python benchmarks/whole_photo.py                  # 13 photos x 2 generators x every mode
    python benchmarks/whole_photo.py --side 768 --json runs/whole_photo.json
    python benchmarks/whole_photo.py --masks --tone photo
    python benchmarks/whole_photo.py --tone photo noblend        # the scan blend's effect
    python benchmarks/whole_photo.py --tone photo --tone-strength 1 0.5 0 --seed-offset 500   # other draws
    python benchmarks/whole_photo.py --tone photo scales1 --enlarge 2 --masks   # as scanned at twice the dpi

--enlarge F enlarges each degraded photo, its clean original and its defect mask F times (bicubic; the mask
bilinear then thresholded at 0.5) after degrading: the same print scanned at F times the resolution.

Photos: the validation split (never trained on); degradation seeds 5000 + i (training recipe) and 7000 + i
(second generator), plus --seed-offset. Results are in weights/README.md ("Whole photos").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from oldphoto.config import TONE_MODES, RestoreConfig
from oldphoto.pipeline import load_models, new_batcher, process_file
from oldphoto.stages.detect import TwoScaleDetector
from oldphoto.train.data import corpus_dir, load_photo, split_corpus
from oldphoto.train.degrade import degrade
from oldphoto.train.degrade_second import degrade_second
from oldphoto.train.detector import enlarge
from oldphoto.train.mapping import quality
from oldphoto.train.mask_metrics import ThresholdSweep

# "defects": --scope defects (the scan's own pixels outside the mask); "noblend": tone photo with --scan-blend off;
# "scales1": tone photo with --detect-scales 1 (one pass; restoring defaults to two scales)
MODES = (*TONE_MODES, "defects", "noblend", "scales1")
GENERATORS = {"training recipe": (degrade, 5000), "second generator": (degrade_second, 7000)}


def scores(clean: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM on Rec. 601 luma of `other` against `clean`, both (H, W, 3) uint8."""
    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].double() / 255

    q = quality(as_tensor(other), as_tensor(clean))
    return q["psnr_y"], q["ssim_y"]


def run(side: int, tones: list[str], workdir: Path, masks: bool = False, strengths: tuple[float, ...] = (),
        seed_offset: int = 0, factor: int = 1) -> dict:
    """strengths: --tone photo at each of these --tone-strength values too (keys "photo S"); factor: --enlarge."""
    _, val = split_corpus(corpus_dir())
    special = {"defects": RestoreConfig(scope="defects", device="cpu"),
               "noblend": RestoreConfig(tone="photo", scan_blend="off", device="cpu"),
               "scales1": RestoreConfig(tone="photo", detect_scales=1, device="cpu")}
    cfgs = {t: special.get(t) or RestoreConfig(tone=t, device="cpu") for t in tones}
    cfgs.update({f"photo {s:g}": RestoreConfig(tone="photo", tone_strength=s, device="cpu") for s in strengths})
    mask_cfgs = {1: RestoreConfig(only_mask=True, mask_dilate=0, device="cpu")}
    if "scales1" in tones:
        mask_cfgs[2] = replace(mask_cfgs[1], detect_scales=2)
    first = RestoreConfig(device="cpu")  # the defaults load every model a mode here uses
    models = load_models(first, "cpu")
    # the same networks with the detector as one pass and as two scales (the restoring default)
    one = models.detector.detector if isinstance(models.detector, TwoScaleDetector) else models.detector
    loaded = {1: replace(models, detector=one), 2: replace(models, detector=TwoScaleDetector(one))}
    batchers = {k: new_batcher(first, m) for k, m in loaded.items()}
    results: dict = {}
    for name, (generator, seed) in GENERATORS.items():
        rows = []
        sweeps = {k: ThresholdSweep([0.5], tolerance=1) for k in mask_cfgs}
        seed += seed_offset
        for i, path in enumerate(val):
            clean = load_photo(path, side)
            degraded = generator(clean.astype(np.float32) / 255, np.random.default_rng(seed + i))
            image, truth_mask = degraded.image, degraded.mask
            if factor > 1:
                size = (factor * clean.shape[0], factor * clean.shape[1])
                image, truth_mask = enlarge(image, size), enlarge(truth_mask, size, binary=True)
                clean = np.rint(enlarge(clean.astype(np.float32) / 255, size) * 255).astype(np.uint8)
            scan = np.rint(image * 255).astype(np.uint8)
            src = workdir / f"{seed + i}.png"
            Image.fromarray(scan).save(src)
            # the scan's own scores go under "input": "scan" is a tone mode
            row = {"file": path.name, "size": list(clean.shape[:2]), "input": scores(clean, scan)}
            for tone, cfg in cfgs.items():
                start = time.perf_counter()
                k = cfg.scales
                out = process_file(src, workdir / f"{seed + i}_{tone}", cfg, loaded[k], batcher=batchers[k])
                restored = np.asarray(Image.open(out.outputs[0]).convert("RGB"))
                row[tone] = scores(clean, restored)
                row[f"{tone}_seconds"] = round(time.perf_counter() - start, 2)
            if masks:
                truth = torch.from_numpy(np.ascontiguousarray(truth_mask))[None, None]
                row["defect_percent"] = round(100 * float(truth_mask.mean()), 2)
                for k, mcfg in mask_cfgs.items():
                    out = process_file(src, workdir / f"{seed + i}_mask{k}", mcfg, loaded[k], batcher=batchers[k])
                    flagged = np.asarray(Image.open(out.outputs[0]), np.float32) / 255
                    sweeps[k].add(torch.from_numpy(flagged)[None, None], truth)
                    key = "flagged_percent" + ("" if k == 1 else f"_scales{k}")
                    row[key] = round(100 * float((flagged > 0.5).mean()), 2)
            rows.append(row)
        mean = {k: [float(np.mean([r[k][j] for r in rows])) for j in (0, 1)] for k in ["input", *cfgs]}
        results[name] = {"photos": rows, "mean": mean}
        if masks:
            for k, sweep in sweeps.items():
                at = sweep.at(0.5)
                results[name]["detector" + ("" if k == 1 else f" scales{k}")] = {
                    m: round(at[m], 3) for m in ("f1_tol", "precision_tol", "recall_tol", "f1")}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=1024, help="longest side of each photo, px")
    p.add_argument("--tone", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--tone-strength", type=float, nargs="*", default=[],
                   help="also run --tone photo at each of these strengths")
    p.add_argument("--seed-offset", type=int, default=0, help="added to every degradation seed (other draws)")
    p.add_argument("--masks", action="store_true", help="also score the detector's --only-mask output")
    p.add_argument("--enlarge", type=int, default=1, help="enlarge each degraded photo this many times (default 1)")
    p.add_argument("--json", help="also write the per-photo results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.side, args.tone, Path(tmp), args.masks, tuple(args.tone_strength), args.seed_offset,
                      args.enlarge)
    tones = list(next(iter(results.values()))["mean"])[1:]  # run's keys after "input", in its order
    special = {"defects": "scope defects", "noblend": "tone photo, scan blend off",
               "scales1": "tone photo, detect scales 1"}
    labels = [special.get(t, f"tone {t}") for t in tones]
    print(f"| generator | input scan | {' | '.join(labels)} |")
    print("|---|---|" + "---|" * len(tones))
    for name, r in results.items():
        cells = [f"{r['mean'][k][0]:.2f} dB / {r['mean'][k][1]:.3f}" for k in ["input", *tones]]
        print(f"| {name} | {' | '.join(cells)} |")
    for name, r in results.items():
        for key in [k for k in r if k.startswith("detector")]:
            print(f"{key} on whole photos, {name}: {r[key]}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"side": args.side, "seed_offset": args.seed_offset,
                                               "enlarge": args.enlarge,
                                               "results": results}, indent=1))


if __name__ == "__main__":
    main()
