"""Training and evaluation (degradation synthesis, losses, loops). Never imported by inference code.

The CLI imports these lazily by name: each module defines Config + run(cfg, log), and EvalConfig + evaluate(cfg, log).
"""

TRAINERS = {
    "detector": "oldphoto.train.detector",
    "vae1": "oldphoto.train.vae",
    "vae2": "oldphoto.train.vae",
    "mapping": "oldphoto.train.mapping",
    "refine": "oldphoto.train.refine",
    "joint": "oldphoto.train.joint",
    "colorize": "oldphoto.train.colorize",
    "upscale": "oldphoto.train.upscale",
    "blend": "oldphoto.train.blend",
}

EVALUATORS = {
    "detector": "oldphoto.train.detector",
    "restore": "oldphoto.train.evaluate_restore",
    "colorize": "oldphoto.train.colorize",
    "upscale": "oldphoto.train.upscale",
}

# How many comma-separated --as names `oldphoto export TARGET` takes (registry.split_names); one where not listed.
EXPORT_NAME_COUNTS = {"mapping": (1, 3), "joint": (4,)}
