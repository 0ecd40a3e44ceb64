"""Restorer stage contract: shapes, value range, batch sizes, gray in -> gray out, input validation."""

from __future__ import annotations

import pytest
import torch

from oldphoto.archs import build
from oldphoto.stages.restore import Restorer


@pytest.fixture(scope="module")
def restorer():
    torch.manual_seed(0)
    vae1 = build("vae", latent=8, width=16, half_width=8, blocks=1)
    vae2 = build("vae", latent=8, width=16, half_width=8, blocks=1)
    t = build("mapping", latent=8, width=16, blocks_pre=1, blocks_post=1)
    return Restorer(vae1.encoder, t, vae2.decoder)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [32, 48, 30])
def test_shapes_and_range(restorer, batch, size):
    tiles = torch.rand(batch, 3, size, size)
    mask = (torch.rand(batch, 1, size, size) > 0.9).float()
    out = restorer(tiles, mask)
    assert out.shape == tiles.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_tiles_are_independent_of_their_batch(restorer):
    tiles, mask = torch.rand(3, 3, 32, 32), torch.zeros(3, 1, 32, 32)
    mask[1, :, 10:14] = 1
    together = restorer(tiles, mask)
    alone = torch.cat([restorer(tiles[i:i + 1], mask[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_gray_tiles_come_back_gray_and_colour_stays_colour(restorer):
    gray = torch.rand(2, 1, 32, 32).expand(-1, 3, -1, -1).contiguous()
    colour = torch.rand(1, 3, 32, 32)
    out = restorer(torch.cat([gray, colour]), torch.zeros(3, 1, 32, 32))
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[1, 1], out[1, 2])
    assert (out[2, 0] - out[2, 1]).abs().max() > 0


def test_the_mask_changes_the_result(restorer):
    tiles = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:16, 8:16] = 1
    assert not torch.allclose(restorer(tiles, mask), restorer(tiles, torch.zeros_like(mask)))


@pytest.mark.parametrize("tiles, mask, needle", [
    (torch.rand(2, 1, 32, 32), torch.zeros(2, 1, 32, 32), "(2, 1, 32, 32)"),
    (torch.rand(2, 3, 32, 32), torch.zeros(2, 1, 16, 16), "(2, 1, 16, 16)"),
    (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), torch.zeros(1, 1, 8, 8), "(1, 3, 8, 8)"),
])
def test_bad_inputs_name_the_shape(restorer, tiles, mask, needle):
    with pytest.raises(ValueError) as err:
        restorer(tiles, mask)
    assert needle in str(err.value)


def test_from_registry_refuses_an_entry_of_another_kind_for_a_part(tmp_path, registry_at):
    """A VAE named as the mapping (its meta records no VAEs, so no sha256 check applies) loaded and failed at the
    first tile with a TypeError; a blend gate named as the refiner loaded."""
    from oldphoto.errors import WeightsError
    from oldphoto.train.run_files import export_weights

    torch.manual_seed(0)
    vae = {"latent": 8, "width": 16, "half_width": 8, "blocks": 1}
    mapping = {"latent": 8, "width": 16, "blocks_pre": 1, "blocks_post": 1}
    gate = {"n_features": 23, "hidden": 0}
    for name, arch, kwargs in [("v-r", "vae", vae), ("map-r", "mapping", mapping), ("gate-r", "blend_gate", gate)]:
        export_weights(build(arch, **kwargs).state_dict(), name, arch, kwargs, {}, tmp_path)
    registry_at(tmp_path)
    assert Restorer.from_registry("v-r", "map-r", "v-r").entries[1].name == "map-r"
    with pytest.raises(WeightsError, match="model 'v-r' is a 'vae' network, not the 'mapping'"):
        Restorer.from_registry("v-r", "v-r", "v-r")
    with pytest.raises(WeightsError, match="model 'map-r' is a 'mapping' network, not the 'vae'"):
        Restorer.from_registry("v-r", "map-r", "map-r")
    with pytest.raises(WeightsError, match="model 'gate-r' is a 'blend_gate' network, not the 'refiner'"):
        Restorer.from_registry("v-r", "map-r", "v-r", refiner="gate-r")
