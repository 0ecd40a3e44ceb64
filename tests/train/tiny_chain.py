"""A registry folder of tiny random restorer networks (VAEs, mapping, detector, optionally a refiner) for the
refiner and joint-tuning tests: the shapes are real, the weights are not trained."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.train.run_files import export_weights

SMALL_VAE = dict(latent=8, width=16, half_width=8, blocks=1)
SMALL_MAP = dict(latent=8, width=16, blocks_pre=1, blocks_post=1)
DET = {"channels": (4, 8, 8), "blocks": 1}
REF = {"width": 4, "bands": True}


def write_tiny_chain(folder: Path, refiner: bool = False) -> Path:
    """Entries v1-t, v2-t (VAEs), map-t (mask_threshold 0.6), det-t (threshold 0.5) and, with `refiner`, ref-t
    recording the three restorer networks' sha256 as Restorer.from_registry checks. Returns the folder."""
    folder.mkdir(parents=True)
    (folder / "MANIFEST.json").write_text(json.dumps({"models": {}}))
    torch.manual_seed(0)
    for name in ("v1-t", "v2-t"):
        export_weights(build("vae", **SMALL_VAE).state_dict(), name, "vae", SMALL_VAE, {"role": name}, folder)
    export_weights(build("mapping", **SMALL_MAP).state_dict(), "map-t", "mapping", SMALL_MAP,
                   {"mask_threshold": 0.6}, folder)
    export_weights(build("unet_detector", **DET).state_dict(), "det-t", "unet_detector", DET, {"threshold": 0.5},
                   folder)
    if refiner:
        models = json.loads((folder / "MANIFEST.json").read_text())["models"]
        shas = {key: {"name": name, "sha256": models[name]["sha256"]}
                for key, name in (("vae1", "v1-t"), ("mapping", "map-t"), ("vae2", "v2-t"))}
        export_weights(build("refiner", **REF).state_dict(), "ref-t", "refiner", REF, {**shas, "role": "fusion"},
                       folder)
    registry.entries.cache_clear()
    return folder
