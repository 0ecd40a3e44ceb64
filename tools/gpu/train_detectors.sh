#!/bin/bash
# Two detector runs at once on a lent GPU (detector-v9's network and one with wider coarse levels, both from
# detector-v9), sharing the machine's cores for synthesis; packs what comes back into $OUT (two .tgz: the log,
# config, log.jsonl, best.pt, the last state as ckpt.pt without the optimiser, the last sample grid).
# usage, from the repository root, with the pack of tools/gpu/pack_corpus.py in .gpu/corpus:
#   bash tools/gpu/train_detectors.sh cuda 7 8.5 5.5     # DEVICE WORKERS MINUTES DECAY_MINUTES
# EXTRA="--set k=v ..." adds settings (a CPU dry run: EXTRA="--set batch=4 --set val_every=5 --set val_count=8"
# RUNS=/tmp/smoke bash tools/gpu/train_detectors.sh cpu 2 1 0.5).
set -u
dev=$1 workers=$2 minutes=$3 decay=$4
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 OLDPHOTO_CORPUS=$PWD/.gpu/corpus PYTHONUNBUFFERED=1
R=${RUNS:-/tmp/gpuruns}; mkdir -p $R
common="--set device=$dev --set workers=$workers --set bf16=true --set crop=256 --set batch=24 --set max_side=2048
 --set balance=hed_batch --set p_ageing=0.15 --set p_sharp=0.3 --set p_rotate=0.2 --set p_join=0.2 --set p_permute=0.2
 --set lr=6e-4 --set warmup=100 --set steps=1000000 --set max_minutes=$minutes --set decay_minutes=$decay
 --set val_every=500 --set threads=1 --set ckpt_minutes=2 --set chroma=true --set init_from=weights/detector-v9.pt ${EXTRA:-}"
python3 -m oldphoto train detector --set out=$R/gpu_a --set seed=271 --set widths=16,32,64,128,160 $common > $R/gpu_a.log 2>&1 &
python3 -m oldphoto train detector --set out=$R/gpu_b --set seed=272 --set widths=16,32,64,160,224 $common > $R/gpu_b.log 2>&1 &
wait
for r in gpu_a gpu_b; do
  python3 - $R/$r <<'P'
import sys, torch
from pathlib import Path
d = Path(sys.argv[1])
ck = torch.load(d / "ckpt.pt", map_location="cpu", weights_only=True)
ck = {k: v for k, v in ck.items() if k not in ("opt", "rng")}  # what export(checkpoint="last") reads
ck["model"] = {k: v.float() for k, v in ck["model"].items()}
torch.save(ck, d / "ckpt.pt")
P
  grep -E "val F1|limit" $R/$r.log | tail -4; python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if \"sec_data\" in l]; print(len(r), sum(x[\"sec\"] for x in r)/len(r), sum(x[\"sec_data\"] for x in r)/len(r))" $R/$r/log.jsonl
  tar -C $R -czf ${OUT:-$R}/$r.tgz $r.log $r/ckpt.pt $r/best.pt $r/log.jsonl $r/config.json $(cd $R && ls $r/samples/*.png | tail -1)
done
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
ls -la ${OUT:-$R}
