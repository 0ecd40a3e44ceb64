"""The mask rule of degrade_structured.damage: a pixel is marked when the masked damage changed it visibly; the
damage that is never in the mask (crease shading, paper texture) must not decide it, even under a faint defect."""

from dataclasses import replace

import numpy as np

from oldphoto.train import degrade_structured as ds
from oldphoto.train.degrade import DegradeConfig, structured_defects

ONLY_DAMAGE = replace(DegradeConfig(), **{name: 0.0 for name, _ in ds.PAINTERS + ds.AGEING_PAINTERS})
TOL = 1e-4  # float rounding at the visible_delta threshold


def _photo(h=64, w=64):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([0.3 + 0.4 * xx / w, 0.3 + 0.4 * yy / h, np.full_like(xx, 0.5)], 2)


def _check_mask(m, expected_change, cfg):
    assert not (m > 0)[expected_change < cfg.visible_delta - TOL].any()  # nothing marked that the defect left alone
    assert (m > 0)[expected_change > cfg.visible_delta + TOL].all()  # everything marked that it visibly changed


def test_crease_shading_does_not_mark_the_faint_edge_of_its_core(monkeypatch):
    cfg = replace(ONLY_DAMAGE, p_crease=1.0, crease_count=(1, 1))
    seen = []
    real = ds.composite

    def spy(img, alpha, a, color):
        seen.append((img.copy(), a.copy(), np.asarray(color, np.float32)))
        return real(img, alpha, a, color)

    monkeypatch.setattr(ds, "composite", spy)
    x = _photo()
    for s in range(12):
        seen.clear()
        _, m = structured_defects(x, np.random.default_rng(s), cfg)
        (shaded, a, color), = seen  # the core is painted over the already shaded print
        change = np.where(a > cfg.mask_threshold, (a[..., None] * np.abs(color - shaded)).max(axis=2), 0)
        _check_mask(m, change, cfg)


class _PaperBranch:
    """An rng whose first argument-less random() is 0.99: textures() takes its paper-texture branch."""

    def __init__(self, rng):
        self.rng, self.first = rng, True

    def random(self, *args, **kw):
        if self.first and not args and not kw:
            self.first = False
            return 0.99
        return self.rng.random(*args, **kw)

    def __getattr__(self, name):
        return getattr(self.rng, name)


def test_paper_texture_does_not_mark_pixels_under_faint_dust(monkeypatch):
    cfg = replace(ONLY_DAMAGE, p_dust=1.0, p_texture=1.0, dust_count=(60, 80), texture_opacity=(0.3, 0.3))
    events = []
    real_composite, real_blend, real_textures = ds.composite, ds.blend, ds.textures

    def composite(img, alpha, a, color):
        events.append(("paint", a.copy(), np.asarray(color, np.float32)))
        return real_composite(img, alpha, a, color)

    def blend(img, layer, mode, opacity):
        events.append(("paper", layer.copy(), mode, opacity))
        return real_blend(img, layer, mode, opacity)

    def textures(img, alpha, rng, *rest):
        return real_textures(img, alpha, _PaperBranch(rng), *rest)

    monkeypatch.setattr(ds, "composite", composite)
    monkeypatch.setattr(ds, "blend", blend)
    monkeypatch.setattr(ds, "PAINTERS", tuple((n, textures if p is real_textures else p) for n, p in ds.PAINTERS))
    x = _photo()
    for s in range(8):
        events.clear()
        _, m = structured_defects(x, np.random.default_rng(s), cfg)
        # one paper texture (blended once more where the code blends a reference too) and the dust
        events = [e for i, e in enumerate(events) if not (e[0] == "paper" and i and events[i - 1][0] == "paper")]
        assert [e[0] for e in events].count("paper") == 1
        # replay: the paper texture goes on both the damaged print and the reference, the dust on the print only
        img, ref, alpha = x.copy(), x.copy(), np.zeros(x.shape[:2], np.float32)
        for e in events:
            if e[0] == "paper":
                img, ref = real_blend(img, *e[1:]), real_blend(ref, *e[1:])
            else:
                img = img * (1 - e[1][..., None]) + e[1][..., None] * e[2]
                alpha = alpha + e[1] - alpha * e[1]
        change = np.abs(np.clip(img, 0, 1) - ref).max(axis=2)
        _check_mask(m, np.where(alpha > cfg.mask_threshold, change, 0), cfg)
