"""Score joint fine-tunes of the restorer chain (benchmarks/joint_finetune_probe.py) against the shipped one.

    python benchmarks/joint_finetune_score.py THREADS runs/jp_tr/state.pt runs/jp_all/state.pt
    python benchmarks/joint_finetune_score.py THREADS runs/joint41/ckpt.pt runs/joint41/best.pt   # `train joint` runs

The base is the pipeline's chain (WEIGHT_NAMES; before the twenty-third session it was vae1-v1, mapping-v1, vae2-v1,
refine-v2 with detector-v9 masks). Sets (validation photos, the pipeline detector's masks at the base's threshold,
dilated 1 px): heavy = 48 crops of seed 999, the full recipe; 12 crops of seed 77 per single family (and clean
crops); second = 48 crops of seed 1357 degraded by the second generator (never trained on). PSNR / SSIM on luma,
one JSON line per candidate ("base" = shipped).
The sets are cached in runs/. The held-out evaluation crops (seed 4321) are not used.
"""
import sys, json
from pathlib import Path
import torch
from oldphoto.pipeline import WEIGHT_NAMES
from oldphoto.stages.restore import Restorer, restore_threshold
from oldphoto.stages.detect import Detector
from oldphoto.train.chunked import chunked
from oldphoto.train.data import corpus_dir, split_corpus, validation_set
from oldphoto.train.degrade import FAMILIES, DegradeConfig, family_recipe
from oldphoto.train.mapping import quality
from oldphoto.train.pairs import stack_triples
from oldphoto.train.refine import restorer_masks
torch.set_num_threads(int(sys.argv[1])); cands = sys.argv[2:]
W = WEIGHT_NAMES
R = Restorer.from_registry(W["vae1"], W["mapping"], W["vae2"], refiner=W["refiner"])
# masks depend on the detector and the base's threshold: both name the caches, so a re-selected threshold never
# reuses masks made at the old one
D = Detector.from_registry(W["detector"])
tag = f"{W['detector']}_t{restore_threshold(R, D):g}"
cache = Path(f"runs/joint_score_sets_{tag}.pt")
if cache.is_file():
    sets = torch.load(cache)
else:
    _, val = split_corpus(corpus_dir(), 0.15, 0)
    specs = {"heavy": (48, 999, DegradeConfig()), "none": (12, 77, family_recipe())}
    specs.update({f: (12, 77, family_recipe(f)) for f in FAMILIES})
    sets = {}
    for name, (n, seed, recipe) in specs.items():
        x, y, m = stack_triples(validation_set(val, n, 256, seed, recipe))
        sets[name] = (x, restorer_masks(R, D, x, m, torch.ones(len(x), dtype=torch.bool), 1), y)
    torch.save(sets, cache)
cache2 = Path(f"runs/joint_score_second_{tag}.pt")
if cache2.is_file():
    sets["second"] = torch.load(cache2)
else:
    sys.path.insert(0, "benchmarks")
    from cross_generator import crops
    x, y, m = crops(48, 256, 1357)["second generator"]
    sets["second"] = (x, restorer_masks(R, D, x, m, torch.ones(len(x), dtype=torch.bool), 1), y)
    torch.save(sets["second"], cache2)
base = {k: {n: v.clone() for n, v in net.state_dict().items()} for k, net in
        (("encoder", R.encoder), ("mapping", R.mapping), ("decoder", R.decoder), ("refiner", R.refiner))}
for c in ["base"] + cands:
    for k, sd in base.items():
        getattr(R, k).load_state_dict(sd)
    step = 0
    if c != "base":
        st = torch.load(c, weights_only=True)
        step = st["step"]
        if "model" in st:  # an `oldphoto train joint` checkpoint (ckpt.pt / best.pt): one Chain state dict
            st = {k: {n[len(k) + 1:]: v for n, v in st["model"].items() if n.startswith(k + ".")}
                  for k in ("encoder", "mapping", "decoder", "refiner")}
        for k in ("encoder", "mapping", "decoder", "refiner"):
            if k in st:
                getattr(R, k).load_state_dict(st[k])
    res = {}
    for name, (x, m, y) in sets.items():
        q = quality(chunked(R, 8, x, m), y)
        res[name] = (round(q["psnr_y"], 2), round(q["ssim_y"], 3))
    fam = [v for k, v in res.items() if k not in ("heavy", "second")]
    print(json.dumps({"cand": c, "step": step, "heavy": res["heavy"], "second": res["second"],
                      "family_mean": (round(sum(p for p, _ in fam) / len(fam), 2),
                                      round(sum(s for _, s in fam) / len(fam), 3)),
                      "per_set": res}), flush=True)
