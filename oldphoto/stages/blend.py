"""Scan-blend stage: the strengths (s_lo, s_hi) of ops/blend.py for one photo, from a loaded gate.

The gate is fitted on one restorer chain and detector (their sha256 and the restore threshold are in its meta):
beside other networks its strengths would answer a question about a different restoration, so loading refuses.
"""

from __future__ import annotations

import torch

from .. import registry
from ..errors import WeightsError
from ..ops.blend import BLEND_FEATURES, blend_features
from ..registry import WeightsEntry
from .detect import TwoScaleDetector
from .restore import restore_threshold


def fitted_chain(restorer, detector) -> dict:
    """{registry name: sha256} of the restorer's entries and the detector's, plus "restore_threshold": the
    restoration a gate is fitted beside (train.blend records it in the gate's meta) and must run beside.

    A TwoScaleDetector counts as the one pass it wraps: its restore threshold was chosen to mark, at the
    recipe's scale, what one pass marks at the restorer's threshold (stages.detect), so a gate fitted beside one
    pass runs beside both."""
    if isinstance(detector, TwoScaleDetector):
        detector = detector.detector
    return {**{e.name: e.sha256 for e in [*restorer.entries, detector.entry]},
            "restore_threshold": restore_threshold(restorer, detector)}


class ScanBlend:
    """Wraps a gate `model(features (B, F)) -> (B, 2)` (archs/blend_gate.py). entry: the registry entry or None."""

    def __init__(self, model: torch.nn.Module, entry: WeightsEntry | None = None):
        if getattr(model, "n_features", None) != len(BLEND_FEATURES):
            raise ValueError(f"ScanBlend: the gate takes {getattr(model, 'n_features', None)} features, "
                             f"ops.blend has {len(BLEND_FEATURES)}")
        self.model = model.eval().float().cpu()  # two dozen numbers per block: the CPU is as fast as any
        self.entry = entry

    @classmethod
    def from_registry(cls, name: str, chain: dict) -> "ScanBlend":
        """chain: fitted_chain(restorer, detector) of the restoration it runs beside."""
        entry = registry.get(name, "blend_gate")
        fitted = dict(entry.meta.get("networks", {}))
        if fitted != chain:
            raise WeightsError(f"{name} was fitted beside {sorted(fitted)} at threshold "
                               f"{fitted.get('restore_threshold')}, not {sorted(chain)} at "
                               f"{chain.get('restore_threshold')}: refit it (oldphoto train blend)")
        return cls(registry.load_entry(entry, "cpu"), entry)

    def strengths(self, x: torch.Tensor, o: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Blocks of a photo: x scan, o restoration (B, 3, H, W) [0, 1], m (B, 1, H, W) {0, 1} -> (B, 2) float32,
        the strengths (s_lo, s_hi) in [0, 1] the gate gives each block (passes.scan_blend averages them)."""
        with torch.inference_mode():
            return self.model(blend_features(x, o, m))
