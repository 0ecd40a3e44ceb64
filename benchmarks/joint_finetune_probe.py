"""Probe (seventeenth session): fine-tune the shipped restorer chain jointly on its final output, refiner included.

    python benchmarks/joint_finetune_probe.py --mode all --out runs/jp_all --steps 5000 --lr 1e-4 --seed 41

--mode tr: mapping T + refiner trainable, both VAEs frozen (gradients pass through G_Y);
--mode all: E_RX, T, G_Y and the refiner all trainable (our addition to the method's frozen-VAE recipe).
Pairs as refine-v2's (heavy recipe 50 %, one family 35 %, mild 15 %; detector-v9 masks at the restorer's threshold,
dilated 1 px, for half the samples, ground truth for the rest), batch 4 at 256 px, loss L1 RGB + 0.25 (1 - SSIM luma),
Adam with a cosine decay to 5 %, bf16 autocast, one thread. Writes OUT/state.pt (the trained modules' state dicts)
and OUT/log.jsonl; score with benchmarks/joint_finetune_score.py. A probe, not a resumable training command: what
it found is in weights/README.md, and publishing it needs `oldphoto train` support first.
"""
import argparse, json, time, math
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from oldphoto.stages.restore import Restorer
from oldphoto.stages.detect import Detector
from oldphoto.train.data import PhotoPool, corpus_dir, split_corpus
from oldphoto.train import degrade
from oldphoto.train.pairs import pair_batch
from oldphoto.train.refine import restorer_masks
from oldphoto.train.metrics import ssim
from oldphoto.ops.color import luma

ap = argparse.ArgumentParser()
ap.add_argument("--mode", default="tr"); ap.add_argument("--out", required=True)
ap.add_argument("--steps", type=int, default=4000); ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--init", default="", help="an earlier probe's state.pt to start from");
ap.add_argument("--seed", type=int, default=1); ap.add_argument("--minutes", type=float, default=70)
a = ap.parse_args()
torch.set_num_threads(1); torch.manual_seed(a.seed); rng = np.random.default_rng(a.seed)
out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
R = Restorer.from_registry("vae1-v1", "mapping-v1", "vae2-v1", refiner="refine-v2")
D = Detector.from_registry("detector-v9")
nets = {"encoder": R.encoder, "mapping": R.mapping, "decoder": R.decoder, "refiner": R.refiner}
train_keys = ["mapping", "refiner"] if a.mode == "tr" else list(nets)
if a.init:
    start = torch.load(a.init, weights_only=True)
    for k in nets:
        if k in start:
            nets[k].load_state_dict(start[k])
for k, n in nets.items():
    n.requires_grad_(k in train_keys); n.train(k in train_keys)
params = [p for k in train_keys for p in nets[k].parameters()]
opt = torch.optim.Adam(params, lr=a.lr)
train_paths, _ = split_corpus(corpus_dir(), 0.15, 0)
pool = PhotoPool(train_paths)
heavy, mild = degrade.DegradeConfig(), degrade.scaled_recipe(0.3)
fams = [degrade.family_recipe()] + [degrade.family_recipe(f) for f in degrade.FAMILIES]
cl = torch.channels_last
def forward(x, m):
    if "encoder" in train_keys:
        mu, _ = R.encoder(x.contiguous(memory_format=cl))
    else:
        with torch.no_grad():
            mu, _ = R.encoder(x.contiguous(memory_format=cl))
    r = R.decoder(R.mapping(mu, m)).float().clamp(0, 1)
    return R.refiner(x.contiguous(memory_format=cl), r.contiguous(memory_format=cl),
                     m.contiguous(memory_format=cl)).float()
t_start = time.monotonic(); logf = open(out / "log.jsonl", "a")
for step in range(1, a.steps + 1):
    t0 = time.monotonic()
    u = rng.random()
    recipe = mild if u < 0.15 else (fams[rng.integers(len(fams))] if u < 0.5 else heavy)
    x, y, m_gt = pair_batch(pool, rng, 4, 256, recipe)
    m = restorer_masks(R, D, x, m_gt, torch.from_numpy(rng.random(4) < 0.5), 1)
    td = time.monotonic() - t0
    frac = step / a.steps
    lr = a.lr * min(1.0, step / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
    for g in opt.param_groups: g["lr"] = lr
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = forward(x, m)
    l1 = F.l1_loss(pred, y)
    s = ssim(luma(pred.clamp(0, 1)), luma(y), dtype=torch.float32).mean()
    loss = l1 + 0.25 * (1 - s)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    if step % 20 == 0:
        logf.write(json.dumps({"step": step, "l1": round(float(l1.detach()), 5), "ssim": round(float(s.detach()), 4),
                               "lr": lr, "sec": round(time.monotonic() - t0, 3), "sec_data": round(td, 3)}) + "\n")
        logf.flush()
    done = (time.monotonic() - t_start) / 60 > a.minutes
    if step % 250 == 0 or step == a.steps or done:
        torch.save({k: nets[k].state_dict() for k in train_keys} | {"step": step, "mode": a.mode}, out / "state.pt.tmp")
        (out / "state.pt.tmp").replace(out / "state.pt")
    if done:
        break
