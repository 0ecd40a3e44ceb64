"""Training-only discriminators: inputs of the wrong shape are refused with that shape in the message."""

from __future__ import annotations

import re

import pytest
import torch

from oldphoto.archs import build


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (1, 3, 28, 32), (3, 32, 32)])
def test_patch_discriminator_names_the_shape_it_got(shape):
    model = build("patch_discriminator", width=4, layers=3)
    with pytest.raises(ValueError, match=re.escape(f"expected (B, 3, H, W) with H, W multiples of 8, got {shape}")):
        model(torch.rand(*shape))


def test_patch_discriminator_takes_its_own_channel_count():
    model = build("patch_discriminator", in_channels=1, width=4, layers=2)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 1, 4, 4)


@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (1, 8, 7, 8)])
def test_latent_discriminator_names_the_shape_it_got(shape):
    model = build("latent_discriminator", latent=8, width=4)
    with pytest.raises(ValueError, match=re.escape(f"got {shape}")):
        model(torch.randn(*shape))
