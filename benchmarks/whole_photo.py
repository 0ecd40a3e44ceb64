"""Whole photos through the real pipeline: the crop-level evaluations score one 256-px tile at a time, but a scan
is many tiles, merged, and a print fades as a whole. This degrades each validation photo whole (longest side
--side px) with the training recipe and with the second generator (`oldphoto.train.degrade_second`, never
trained on), runs `pipeline.process_file` on it (the shipped models, detector masks, tile 256, overlap 32) once
per --tone mode (and with `--scope defects`: "defects"; tone photo with `--scan-blend off`: "noblend"), and
scores PSNR / SSIM on luma against the clean photo; with --masks also the detector's `--only-mask` output
(undilated) against the generator's defect mask: F1 with 1 px tolerance, pooled over the photos.

    python benchmarks/whole_photo.py                  # 13 photos x 2 generators x every mode
    python benchmarks/whole_photo.py --side 768 --json runs/whole_photo.json
    python benchmarks/whole_photo.py --masks --tone photo
    python benchmarks/whole_photo.py --tone photo noblend        # the scan blend's effect
    python benchmarks/whole_photo.py --tone photo --tone-strength 1 0.5 0 --seed-offset 500   # other draws

Photos: the validation split (never trained on); degradation seeds 5000 + i (training recipe) and 7000 + i
(second generator), plus --seed-offset. Results are in weights/README.md ("Whole photos").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from oldphoto.config import TONE_MODES, RestoreConfig
from oldphoto.pipeline import load_models, new_batcher, process_file
from oldphoto.train.data import corpus_dir, load_photo, split_corpus
from oldphoto.train.degrade import degrade
from oldphoto.train.degrade_second import degrade_second
from oldphoto.train.mapping import quality
from oldphoto.train.mask_metrics import ThresholdSweep

# "defects": --scope defects (the scan's own pixels outside the mask); "noblend": tone photo with --scan-blend off
MODES = (*TONE_MODES, "defects", "noblend")
GENERATORS = {"training recipe": (degrade, 5000), "second generator": (degrade_second, 7000)}


def scores(clean: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM on Rec. 601 luma of `other` against `clean`, both (H, W, 3) uint8."""
    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].double() / 255

    q = quality(as_tensor(other), as_tensor(clean))
    return q["psnr_y"], q["ssim_y"]


def run(side: int, tones: list[str], workdir: Path, masks: bool = False, strengths: tuple[float, ...] = (),
        seed_offset: int = 0) -> dict:
    """strengths: --tone photo at each of these --tone-strength values too (keys "photo S")."""
    _, val = split_corpus(corpus_dir())
    special = {"defects": RestoreConfig(scope="defects", device="cpu"),
               "noblend": RestoreConfig(tone="photo", scan_blend="off", device="cpu")}
    cfgs = {t: special.get(t) or RestoreConfig(tone=t, device="cpu") for t in tones}
    cfgs.update({f"photo {s:g}": RestoreConfig(tone="photo", tone_strength=s, device="cpu") for s in strengths})
    mask_cfg = RestoreConfig(only_mask=True, mask_dilate=0, device="cpu")
    first = RestoreConfig(device="cpu")  # the defaults load every model a mode here uses
    models = load_models(first, "cpu")
    batcher = new_batcher(first, models)
    results: dict = {}
    for name, (generator, seed) in GENERATORS.items():
        rows = []
        sweep = ThresholdSweep([0.5], tolerance=1)
        seed += seed_offset
        for i, path in enumerate(val):
            clean = load_photo(path, side)
            degraded = generator(clean.astype(np.float32) / 255, np.random.default_rng(seed + i))
            scan = np.rint(degraded.image * 255).astype(np.uint8)
            src = workdir / f"{seed + i}.png"
            Image.fromarray(scan).save(src)
            # the scan's own scores go under "input": "scan" is a tone mode
            row = {"file": path.name, "size": list(clean.shape[:2]), "input": scores(clean, scan)}
            for tone, cfg in cfgs.items():
                start = time.perf_counter()
                out = process_file(src, workdir / f"{seed + i}_{tone}", cfg, models, batcher=batcher)
                restored = np.asarray(Image.open(out.outputs[0]).convert("RGB"))
                row[tone] = scores(clean, restored)
                row[f"{tone}_seconds"] = round(time.perf_counter() - start, 2)
            if masks:
                out = process_file(src, workdir / f"{seed + i}_mask", mask_cfg, models, batcher=batcher)
                flagged = np.asarray(Image.open(out.outputs[0]), np.float32) / 255
                truth = torch.from_numpy(degraded.mask)[None, None]
                sweep.add(torch.from_numpy(flagged)[None, None], truth)
                row["defect_percent"] = round(100 * float(degraded.mask.mean()), 2)
                row["flagged_percent"] = round(100 * float((flagged > 0.5).mean()), 2)
            rows.append(row)
        mean = {k: [float(np.mean([r[k][j] for r in rows])) for j in (0, 1)] for k in ["input", *cfgs]}
        results[name] = {"photos": rows, "mean": mean}
        if masks:
            at = sweep.at(0.5)
            results[name]["detector"] = {k: round(at[k], 3) for k in ("f1_tol", "precision_tol", "recall_tol", "f1")}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=1024, help="longest side of each photo, px")
    p.add_argument("--tone", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--tone-strength", type=float, nargs="*", default=[],
                   help="also run --tone photo at each of these strengths")
    p.add_argument("--seed-offset", type=int, default=0, help="added to every degradation seed (other draws)")
    p.add_argument("--masks", action="store_true", help="also score the detector's --only-mask output")
    p.add_argument("--json", help="also write the per-photo results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.side, args.tone, Path(tmp), args.masks, tuple(args.tone_strength), args.seed_offset)
    tones = list(next(iter(results.values()))["mean"])[1:]  # run's keys after "input", in its order
    special = {"defects": "scope defects", "noblend": "tone photo, scan blend off"}
    labels = [special.get(t, f"tone {t}") for t in tones]
    print(f"| generator | input scan | {' | '.join(labels)} |")
    print("|---|---|" + "---|" * len(tones))
    for name, r in results.items():
        cells = [f"{r['mean'][k][0]:.2f} dB / {r['mean'][k][1]:.3f}" for k in ["input", *tones]]
        print(f"| {name} | {' | '.join(cells)} |")
    for name, r in results.items():
        if "detector" in r:
            print(f"detector on whole photos, {name}: {r['detector']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"side": args.side, "seed_offset": args.seed_offset,
                                               "results": results}, indent=1))


if __name__ == "__main__":
    main()
